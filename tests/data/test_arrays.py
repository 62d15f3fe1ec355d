import numpy as np
import pytest

from deepnet.data.arrays import as_images
from deepnet.errors import DataError

GREY = np.arange(2 * 8 * 9, dtype=np.uint8).reshape(2, 8, 9)
RGB = np.arange(2 * 8 * 9 * 3, dtype=np.uint8).reshape(2, 8, 9, 3)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (GREY, GREY[..., None]),
        (GREY[..., None], GREY[..., None]),
        (GREY[:, None], GREY[..., None]),
        (RGB, RGB),
        (np.moveaxis(RGB, 3, 1), RGB),
        (GREY[:, :8, :8].reshape(2, 64), GREY[:, :8, :8, None]),
    ],
    ids=["n,h,w", "n,h,w,1", "n,1,h,w", "n,h,w,3", "n,3,h,w", "square rows"],
)
def test_layouts_become_channels_last(given, expected):
    images = as_images(given)
    assert images.shape == expected.shape and np.array_equal(images, expected)


def test_rgba_loses_alpha_with_a_warning():
    rgba = np.concatenate([RGB, np.zeros((2, 8, 9, 1), np.uint8)], axis=3)
    with pytest.warns(UserWarning, match="X holds RGBA images: the alpha channel is dropped"):
        assert np.array_equal(as_images(rgba), RGB)


def test_floats_stay_floats():
    images = as_images(RGB / 255.0)
    assert images.dtype == np.float32 and images.shape == RGB.shape


@pytest.mark.parametrize("shape", [(2, 8, 9, 2), (2, 5, 8, 9), (2, 8, 9, 3, 1)])
def test_other_shapes_are_refused(shape):
    with pytest.raises(DataError, match=r"expected images \(n, height, width\), .* 1 \(grey\)"):
        as_images(np.zeros(shape, np.uint8))
