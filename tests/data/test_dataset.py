from dataclasses import replace

import numpy as np
import pytest

from deepnet.data import Dataset, Preprocessing
from deepnet.errors import DataError


def test_two_vs_seven_counts_match_the_seed(mnist27):
    assert (len(mnist27.y_train), len(mnist27.y_test)) == (12223, 2060)
    assert mnist27.class_names == ("2", "7") and mnist27.classes == (2, 7)


def test_labels_follow_the_given_order(mnist_all):
    for order in ((2, 7), (7, 2)):
        data = mnist_all.select(order)
        for new, old in enumerate(order):
            expected = mnist_all.x_train[mnist_all.y_train == old]
            assert np.array_equal(data.x_train[data.y_train == new], expected)


def test_seven_is_label_one_as_in_the_seed(mnist27, mnist_all):
    sevens = mnist_all.x_test[mnist_all.y_test == 7]
    assert np.array_equal(mnist27.x_test[mnist27.y_test == 1], sevens)


def test_all_keeps_ten_classes(mnist_all):
    assert mnist_all.n_classes == 10
    assert (len(mnist_all.y_train), len(mnist_all.y_test)) == (60000, 10000)


@pytest.mark.parametrize("text", ["2,7", " 2 , 7 "])
def test_classes_as_text(mnist_all, text):
    assert mnist_all.select(text).classes == (2, 7)


@pytest.mark.parametrize(
    ("classes", "message"),
    [
        ((2, 11), r"unknown class 11 for mnist: choose from 0, 1, .*9, or 'all'"),
        ("2,x", r"unknown class 'x'"),
        ((2, 2), r"name a class twice"),
        ((3,), r"select 1 class; a classifier needs at least two"),
        ((), r"select 0 class"),
    ],
)
def test_bad_selections(mnist_all, classes, message):
    with pytest.raises(DataError, match=message):
        mnist_all.select(classes)


def test_a_class_without_images_is_an_error(mnist_all):
    keep = mnist_all.y_test != 3
    no_threes = replace(mnist_all, x_test=mnist_all.x_test[keep], y_test=mnist_all.y_test[keep])
    with pytest.raises(DataError, match="class 3 has no images in the train or test split"):
        no_threes.select((3, 5))


def test_a_dataset_holds_one_label_per_image(small27):
    with pytest.raises(DataError, match="has 1199 train images but 1200 train labels"):
        Dataset(
            small27.name,
            small27.x_train[:-1],
            small27.y_train,
            small27.x_test,
            small27.y_test,
            small27.class_names,
            small27.classes,
            small27.source,
        )


def test_a_dataset_refuses_labels_beyond_its_classes(small27):
    with pytest.raises(DataError, match=r"train labels from .* must be integers 0\.\.1"):
        Dataset(
            small27.name,
            small27.x_train,
            small27.y_train + 1,
            small27.x_test,
            small27.y_test,
            small27.class_names,
            small27.classes,
            small27.source,
        )


def test_images_are_channels_last_with_their_preprocessing(small27):
    assert small27.x_train.shape[1:] == (28, 28, 1) and small27.channels == 1
    assert small27.preprocessing == Preprocessing((28, 28), 1)


def test_grey_images_without_a_channel_axis_are_refused(small27):
    with pytest.raises(DataError, match=r"expected uint8 images of shape \(n, height, width, ch"):
        replace(small27, x_train=small27.x_train[..., 0], x_test=small27.x_test[..., 0])


def test_a_preprocessing_that_does_not_describe_the_images(small27):
    with pytest.raises(DataError, match=r"are \(28, 28\) with 1 channels but their preprocessing"):
        replace(small27, preprocessing=Preprocessing((32, 32), 3))


def test_an_int_is_a_label_before_a_name(small27):
    """Folders named "1" and "cat" hold classes (0, 1): the int 1 is "cat", the string "1"
    the folder of that name, as runs record classes as ints."""
    data = replace(small27, class_names=("1", "cat"), classes=(0, 1))
    assert data.select([1, 0]).class_names == ("cat", "1")
    assert data.select(["1", "cat"]).class_names == ("1", "cat")
