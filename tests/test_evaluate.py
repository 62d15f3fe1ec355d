import numpy as np
import pytest
import torch

from deepnet import TrainConfig, evaluate, train, wilson_interval
from deepnet.errors import DataError
from deepnet.evaluate import images_to_tensor


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [
        (5, 10, 0.2366, 0.7634),
        (0, 10, 0.0, 0.2775),
        (10, 10, 0.7225, 1.0),
        (2012, 2060, 0.9692, 0.9824),
    ],
)
def test_wilson_interval_known_values(k, n, low, high):
    lo, hi = wilson_interval(k, n)
    assert (lo, hi) == pytest.approx((low, high), abs=1e-4)


def test_wilson_interval_of_nothing_is_everything():
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_metrics_are_consistent(small27):
    result = train(TrainConfig(epochs=2), small27, validation_split=0)
    m = evaluate(result.model, small27.x_test, small27.y_test)
    confusion = np.array(m.confusion)
    assert confusion.sum() == m.n == len(small27.y_test)
    assert confusion.sum(axis=1).tolist() == np.bincount(small27.y_test).tolist()
    assert np.trace(confusion) == m.correct
    assert m.accuracy == pytest.approx(m.correct / m.n)
    assert m.interval_95[0] < m.accuracy < m.interval_95[1]
    assert m.accuracy > 0.9 and 0 < m.loss < 0.5
    assert m == result.metrics  # train() evaluates the same way, once


def test_images_to_tensor_turns_channels_last_pixels_into_torch_inputs(small27):
    """(n, h, w, c) uint8 -> float32 (n, c, h, w) / 255, channel by channel."""
    grey = small27.x_train[:50].reshape(50, 28, 28)
    rgb = np.stack([grey, grey[:, ::-1], 255 - grey], axis=3)[:, 1:, 2:]  # (50, 27, 26, 3)
    x = images_to_tensor(rgb)
    assert x.shape == (50, 3, 27, 26) and x.dtype == torch.float32 and x.is_contiguous()
    for c in range(3):
        expected = torch.from_numpy(rgb[..., c].astype(np.float32)) / 255
        assert torch.equal(x[:, c], expected)
    assert torch.equal(images_to_tensor(rgb / np.float32(255)), x)  # floats: already scaled
    assert torch.equal(images_to_tensor(grey), images_to_tensor(grey[..., None]))


def test_images_to_tensor_refuses_other_shapes():
    with pytest.raises(DataError, match=r"shape \(4, 784\); expected \(n, height, width"):
        images_to_tensor(np.zeros((4, 784), np.uint8))
