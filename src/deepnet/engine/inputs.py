"""What every engine checks before it trains: images, labels and indices that agree.

The kernels index the images with the members' indices and the loss indexes the classes
with the labels; a length or an index out of step would read past an array (or train on
the wrong images), so engines refuse such data with a DataError before any work starts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from deepnet.config import TrainConfig
from deepnet.engine.augment import Augmentation
from deepnet.engine.member import Member
from deepnet.errors import DataError
from deepnet.evaluate import channels_first, images_to_tensor
from deepnet.nn.architecture import Architecture
from deepnet.nn.network import min_image_side


def check_training_data(
    images: np.ndarray, labels: np.ndarray, n_classes: int, members: Sequence[Member]
) -> None:
    """DataError unless images are (n, H, W, C) numbers, channels last (C >= 1), or grey
    (n, H, W); labels n integers in [0, n_classes); and every member's indices pick some of
    the n images for training. ConfigError if a member's augmentation does not suit the
    images' size."""
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim not in (3, 4):
        raise DataError(
            f"images must be an (n, height, width, channels) or (n, height, width) array, got "
            f"shape {images.shape}"
        )
    if images.ndim == 4 and images.shape[1] < min_image_side() <= images.shape[3]:
        raise DataError(
            f"images must be (n, height, width, channels), channels last; shape "
            f"{images.shape} looks channels-first: pass np.moveaxis(images, 1, -1)"
        )
    if images.dtype.kind not in "uif":
        raise DataError(f"images must be uint8 or float pixels, got dtype {images.dtype}")
    n = len(images)
    if labels.ndim != 1 or len(labels) != n:
        raise DataError(
            f"labels must be one per image: {n} images but labels of shape {labels.shape}; "
            "pass X and y of the same length"
        )
    if not isinstance(n_classes, int | np.integer) or n_classes < 1:
        raise DataError(f"n_classes must be a positive integer, got {n_classes!r}")
    _check_labels(labels, n_classes)
    for member in members:
        _check_indices(member, "training", member.train_idx, n, allow_empty=False)
        _check_indices(member, "validation", member.val_idx, n, allow_empty=True)
        Augmentation.of(member.config).check(*images.shape[1:3])


def check_config_fits(config: TrainConfig, height: int, width: int, channels: int) -> None:
    """DataError or ConfigError, as training would raise it, if ``config``'s stack is too
    deep or its shift too wide for ``height`` x ``width`` images: before anything trains."""
    Architecture.for_config(config, 2, (height, width), channels)
    Augmentation.of(config).check(height, width)


def _check_labels(labels: np.ndarray, n_classes: int) -> None:
    if not len(labels):
        return
    if labels.dtype.kind == "f":
        fractional = labels[np.mod(labels, 1) != 0]  # NaN and infinities included
        if len(fractional):
            raise DataError(
                f"labels must be whole class numbers 0 to {n_classes - 1}, got {fractional[0]}"
            )
    elif labels.dtype.kind not in "iu":
        raise DataError(f"labels must be integer class numbers, got dtype {labels.dtype}")
    low, high = labels.min(), labels.max()
    if low < 0 or high >= n_classes:
        bad = low if low < 0 else high
        raise DataError(
            f"label {bad} is outside the {n_classes} classes (0 to {n_classes - 1}); "
            "encode the classes as 0..n_classes-1"
        )


def _check_indices(member: Member, what: str, index: np.ndarray, n: int, allow_empty: bool) -> None:
    index = np.asarray(index)
    if index.ndim != 1:
        raise DataError(f"member {member.key!r}: {what} indices must be 1-D, got {index.shape}")
    if not len(index):
        if allow_empty:
            return
        raise DataError(f"member {member.key!r} has no training images; give it some indices")
    if not np.issubdtype(index.dtype, np.integer):
        raise DataError(
            f"member {member.key!r}: {what} indices must be integers, got dtype {index.dtype}"
        )
    low, high = index.min(), index.max()
    if low < 0 or high >= n:
        bad = low if low < 0 else high
        raise DataError(
            f"member {member.key!r}: {what} index {bad} is outside the {n} images "
            f"(valid: 0 to {n - 1})"
        )


def training_tensors(images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Checked data as float32 images (n, C, H, W), torch's layout, and int64 labels (n,)."""
    return images_to_tensor(images), label_tensor(labels)


def pixel_tensors(images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Checked data as the population engine holds it: images (n, C, H, W) with uint8 pixels
    as they are (its gather scales them by 1/255: a quarter of the memory of floats, 150 MiB
    rather than 600 for CIFAR-10's training images), other numbers as float32
    (images_to_tensor); int64 labels (n,)."""
    if np.asarray(images).dtype != np.uint8:
        return training_tensors(images, labels)
    return channels_first(images, torch.uint8), label_tensor(labels)


def label_tensor(labels: np.ndarray) -> torch.Tensor:
    """Checked labels as the int64 class indices the loss takes."""
    return torch.from_numpy(np.asarray(labels, dtype=np.int64))
