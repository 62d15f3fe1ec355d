import numpy as np
import pytest

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
    from dataclasses import replace

    no_threes = replace(mnist_all, x_test=mnist_all.x_test[keep], y_test=mnist_all.y_test[keep])
    with pytest.raises(DataError, match="class 3 has no images in the train or test split"):
        no_threes.select((3, 5))
