"""Engines refuse images, labels and indices that disagree, before any C kernel reads them."""

import numpy as np
import pytest

from deepnet import Member, PopulationEngine, SequentialEngine, TrainConfig
from deepnet.errors import DataError
from tests.engine.images import colour_digits

FAST = TrainConfig(epochs=1, batch_size=64)


@pytest.fixture(params=[SequentialEngine, PopulationEngine], ids=["sequential", "population"])
def engine(request):
    return request.param()


def member(train, val=()):
    return Member("m", FAST, np.asarray(train), np.asarray(val, dtype=np.int64), 0)


def train(engine, images, labels, members, n_classes=2):
    return list(engine.train(images, labels, n_classes, members))


def test_fewer_images_than_labels_is_refused(engine, small27):
    """Bug 1: 300 images and 1200 labels read past the images in the C gather."""
    x, y = small27.x_train, small27.y_train
    with pytest.raises(DataError, match=r"300 images but labels of shape \(1200,\)"):
        train(engine, x[:300], y, [member(np.arange(1000))])


def test_more_images_than_labels_is_refused(engine, small27):
    x, y = small27.x_train, small27.y_train
    with pytest.raises(DataError, match="one per image: 1200 images"):
        train(engine, x, y[:600], [member(np.arange(500))])


@pytest.mark.parametrize(
    ("train_idx", "val_idx", "message"),
    [
        (np.arange(1190, 1201), np.arange(0), "training index 1200 is outside the 1200 images"),
        (np.arange(-3, 100), np.arange(0), "training index -3 is outside"),
        (np.arange(100), np.array([5, 4000]), "validation index 4000 is outside"),
        (np.arange(0), np.arange(10), "no training images"),
        (np.arange(10.0), np.arange(0), "must be integers, got dtype float64"),
    ],
)
def test_member_indices_must_pick_images(engine, small27, train_idx, val_idx, message):
    with pytest.raises(DataError, match=message):
        train(engine, small27.x_train, small27.y_train, [member(train_idx, val_idx)])


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (lambda y: y + 1, "label 2 is outside the 2 classes"),
        (lambda y: y - 1, "label -1 is outside the 2 classes"),
        (lambda y: y + 0.5, "whole class numbers 0 to 1, got 0.5"),
        (lambda y: np.where(y == 1, np.nan, 0.0), "got nan"),
        (lambda y: y.astype(str), "integer class numbers, got dtype <U"),
    ],
)
def test_labels_must_be_class_numbers(engine, small27, labels, message):
    with pytest.raises(DataError, match=message):
        train(engine, small27.x_train, labels(small27.y_train), [member(np.arange(100))])


def test_whole_float_labels_train_as_integers(engine, small27):
    y = small27.y_train.astype(np.float64)
    (result,) = train(engine, small27.x_train, y, [member(np.arange(200), np.arange(200, 400))])
    assert 0 <= result.val_accuracy <= 1


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (lambda x: x[:, None, None], r"got shape \(1200, 1, 1, 28, 28\)"),
        (lambda x: x[:, None], r"\(1200, 1, 28, 28\) looks channels-first: pass np.moveaxis"),
        (lambda x: np.repeat(x[:, None], 3, axis=1), r"\(1200, 3, 28, 28\) looks channels-first"),
        (lambda x: x.reshape(1200, -1), r"got shape \(1200, 784\)"),
        (lambda x: x.astype(str), "uint8 or float pixels"),
        (lambda x: x[:, :5, :5], "5x5 pixels are too small"),
        (lambda x: colour_digits(x)[:, 13:18, 10:25], "5x15 pixels are too small"),
    ],
)
def test_images_must_be_pictures_large_enough_channels_last(engine, small27, images, message):
    grey = small27.x_train.reshape(-1, 28, 28)
    with pytest.raises(DataError, match=message):
        train(engine, images(grey), small27.y_train, [member(np.arange(100))])


def test_grey_images_with_a_channel_axis_train_like_images_without(engine, small27):
    grey, y = small27.x_train.reshape(-1, 28, 28), small27.y_train
    members = [member(np.arange(300), np.arange(300, 500))]
    (plain,) = train(engine, grey, y, members)
    (channel,) = train(engine, grey[..., None], y, members)
    assert channel.val_loss == plain.val_loss


def test_float_colour_images_train_as_their_uint8_pixels(engine, colour27, small27):
    """Float images are taken as already scaled, as the seed's x / 255."""
    members = [member(np.arange(300), np.arange(300, 500))]
    (pixels,) = train(engine, colour27, small27.y_train, members)
    (scaled,) = train(engine, colour27 / np.float32(255), small27.y_train, members)
    assert scaled.val_loss == pixels.val_loss
