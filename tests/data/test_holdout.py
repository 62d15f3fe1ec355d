import numpy as np
import pytest

from deepnet.data import LoadOptions
from deepnet.data.holdout import test_split as split
from deepnet.errors import DataError


def test_the_split_is_stratified_sorted_and_seeded(mnist27):
    labels = mnist27.y_train
    train, test = split(labels, LoadOptions(), "mnist")
    assert np.intersect1d(train, test).size == 0 and len(train) + len(test) == len(labels)
    for k in (0, 1):  # a sixth of each class
        assert len(np.intersect1d(test, np.flatnonzero(labels == k))) == round(
            (labels == k).sum() / 6
        )
    assert np.all(np.diff(test) > 0) and np.all(np.diff(train) > 0)
    assert np.array_equal(split(labels, LoadOptions(), "mnist")[1], test)
    assert not np.array_equal(split(labels, LoadOptions(split_seed=1), "mnist")[1], test)


def test_a_class_keeps_its_test_images_whatever_other_classes_there_are():
    labels = np.repeat(np.array(["cat", "dog", "eel"]), 30)
    _, all_three = split(labels, LoadOptions(), "pets")
    _, two = split(labels[30:], LoadOptions(), "pets")
    assert np.array_equal(all_three[all_three >= 30] - 30, two)


def test_every_class_keeps_one_image_on_each_side():
    labels = np.array(["cat", "cat", "dog", "dog", "dog"] + ["eel"] * 20)
    train, test = split(labels, LoadOptions(test_size=0.01), "pets")
    assert sorted(labels[test]) == ["cat", "dog", "eel"]
    train, test = split(labels, LoadOptions(test_size=0.99), "pets")
    assert sorted(labels[train]) == ["cat", "dog", "eel"]


def test_a_class_needs_two_images():
    labels = np.array(["cat"] * 10 + ["dog"])
    with pytest.raises(DataError, match=r"class dog of pets has 1 image; holding out a test"):
        split(labels, LoadOptions(), "pets")


def test_one_class_is_not_a_classifier():
    with pytest.raises(DataError, match=r"pets holds one class \(cat\)"):
        split(np.array(["cat"] * 10), LoadOptions(), "pets")
