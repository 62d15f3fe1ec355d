import re

import numpy as np
import pytest

from deepnet.data import LoadOptions, load_dataset
from deepnet.errors import DataError
from tests.data.image_files import tinted

TEST = np.r_[0:5, 115:120]  # five 2s and five 7s of the digits fixture
TRAIN = np.r_[5:115]


def test_npz_with_its_own_test_split(tmp_path, digits):
    images, names = digits
    labels = names.astype(int)
    path = tmp_path / "d.npz"
    np.savez(
        path,
        x_train=images[TRAIN, ..., 0],
        y_train=labels[TRAIN],
        x_test=images[TEST],
        y_test=labels[TEST],
    )
    data = load_dataset(path=path)
    assert data.name == "arrays" and data.classes == (2, 7) and data.class_names == ("2", "7")
    assert np.array_equal(data.x_test, images[TEST]) and np.array_equal(data.x_train, images[TRAIN])


def test_npz_of_floats_and_string_labels_is_converted_exactly(tmp_path, digits):
    images, names = digits
    words = np.where(names == "2", "two", "seven")
    path = tmp_path / "xy.npz"
    np.savez(path, x=images / 255.0, y=words)
    data = load_dataset(path=path)
    assert data.class_names == ("seven", "two") and data.classes == (0, 1)
    assert data.counts() == {"seven": (50, 10), "two": (50, 10)}
    loaded = np.concatenate([data.x_train, data.x_test])
    assert {r.tobytes() for r in loaded} == {r.tobytes() for r in images}


def test_rgb_arrays_channels_last_or_first(tmp_path, digits):
    rgb = tinted(digits[0])
    labels = digits[1].astype(int)
    for layout, array in (("last", rgb), ("first", np.moveaxis(rgb, 3, 1))):
        np.savez(tmp_path / f"{layout}.npz", x=array, y=labels)
        data = load_dataset(path=tmp_path / f"{layout}.npz", options=LoadOptions(grayscale=True))
        assert data.channels == 1 and data.image_shape == (28, 28)


def test_npy_pairs(tmp_path, digits):
    images, names = digits
    labels = names.astype(int)
    np.save(tmp_path / "x.npy", images)
    np.save(tmp_path / "y.npy", labels)
    assert load_dataset(path=tmp_path / "x.npy").counts() == {"2": (50, 10), "7": (50, 10)}
    split = tmp_path / "split"
    split.mkdir()
    for key, array in (
        ("x_train", images[TRAIN]),
        ("y_train", labels[TRAIN]),
        ("x_test", images[TEST]),
        ("y_test", labels[TEST]),
    ):
        np.save(split / f"{key}.npy", array)
    data = load_dataset(path=split)  # a folder of .npy files
    assert data.name == "arrays" and np.array_equal(data.x_test, images[TEST])


def test_npy_without_its_labels(tmp_path, digits):
    np.save(tmp_path / "x.npy", digits[0])
    with pytest.raises(DataError, match=r"x\.npy has no labels file beside it: expected y\.npy"):
        load_dataset(path=tmp_path / "x.npy")
    np.save(tmp_path / "images.npy", digits[0])
    with pytest.raises(DataError, match=r"images\.npy is not an images array named x\*\.npy"):
        load_dataset(path=tmp_path / "images.npy")


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (lambda im: im * 1.0, r"holds floats from 0 to 255; float pixels must lie in \[0, 1\]"),
        (lambda im: im.astype(np.int64) * 2, r"holds whole numbers from 0 to 510; pixels"),
        (lambda im: im[..., :2].repeat(14, axis=3)[..., :2], r"has shape \(120, 28, 28, 2\)"),
    ],
    ids=["floats above 1", "ints above 255", "two channels"],
)
def test_bad_pixels(tmp_path, digits, x, message):
    path = tmp_path / "bad.npz"
    np.savez(path, x=x(digits[0]), y=digits[1])
    with pytest.raises(DataError, match=message):
        load_dataset(path=path)


def test_labels_and_images_must_pair(tmp_path, digits):
    path = tmp_path / "bad.npz"
    np.savez(path, x=digits[0], y=digits[1][:-1])
    with pytest.raises(DataError, match=r"has 120 images in x_train but 119 labels in y_train"):
        load_dataset(path=path)
    np.savez(path, x_train=digits[0])
    with pytest.raises(DataError, match=rf"{re.escape(str(path))} lacks the arrays y_train"):
        load_dataset(path=path)


def test_number_labels_written_as_text_in_one_split_are_still_numbers(tmp_path, digits):
    images, names = digits
    path = tmp_path / "mixed.npz"
    np.savez(
        path,
        x_train=images[TRAIN],
        y_train=names[TRAIN].astype(int),
        x_test=images[TEST],
        y_test=names[TEST],
    )
    data = load_dataset(path=path, classes=(7, 2))
    assert data.class_names == ("7", "2") and data.counts() == {"7": (55, 5), "2": (55, 5)}
