"""Images and labels given as arrays (the scikit-learn API): converted, then checked.

The C kernels index images by label position and the network needs a minimum image size, so
every length, shape and value is checked here, where arrays enter, as scikit-learn's
``check_X_y`` does; a bad one raises DataError naming it and the fix.
"""

from __future__ import annotations

import warnings

import numpy as np

from deepnet.errors import DataError

NUMERIC_KINDS = "biuf"  # bool, signed and unsigned integers, floats
CHANNELS = (1, 3)  # what the network reads: grey or RGB
INPUT_CHANNELS = (1, 3, 4)  # what it accepts: RGBA too, losing alpha


def check_image_size(shape: tuple[int, int], what: str) -> None:
    """Refuse images smaller than the network takes (smaller ones train zero features)."""
    from deepnet.nn.network import min_image_side  # torch: imported when data is checked

    side = min_image_side()
    height, width = shape
    if height < side or width < side:
        raise DataError(
            f"{what} are {height}x{width} pixels, smaller than the network's minimum of "
            f"{side}x{side} (two 3x3 convolutions and a 2x2 pooling); use or pad images to at "
            f"least {side}x{side}, or load a source resized (--resize, e.g. --resize 28x28)."
        )


def as_images(X: object, name: str = "X") -> np.ndarray:
    """(n, h, w, c) images, channels last (1 grey or 3 RGB), from (n, h, w), (n, h, w, c),
    channels-first (n, c, h, w) or square grey rows (n, h*w); c is 1, 3 or 4 (RGBA: the alpha
    channel is dropped, with a warning, as the network takes no transparency).

    uint8 pixels are kept (the network scales them by 1/255); other numbers become float32,
    used as given, and must be finite.
    """
    x = _array(X, name)
    shape = x.shape
    if x.dtype.kind not in NUMERIC_KINDS:
        raise DataError(
            f"{name} holds {x.dtype} values; pass numeric images (uint8 pixels 0..255, or "
            "floats such as x / 255)."
        )
    if x.ndim == 2:
        side = round(np.sqrt(x.shape[1]))
        if side * side != x.shape[1]:
            raise DataError(
                f"{name} has {x.shape[1]} features per row, which is not a square image; pass "
                "images as (n, height, width) or (n, height, width, channels)."
            )
        x = x.reshape(len(x), side, side)
    if x.ndim == 3:
        x = x[..., np.newaxis]
    elif x.ndim == 4 and x.shape[3] not in INPUT_CHANNELS and x.shape[1] in INPUT_CHANNELS:
        x = np.moveaxis(x, 1, 3)  # channels first, as PyTorch keeps them
    if x.ndim != 4 or x.shape[3] not in INPUT_CHANNELS:
        raise DataError(
            f"{name} has shape {shape}; expected images (n, height, width), (n, height, "
            "width, channels) or (n, channels, height, width) with 1 (grey), 3 (RGB) or 4 "
            "(RGBA) channels, or square grey rows (n, height*width)."
        )
    if x.shape[3] == 4:
        warnings.warn(
            f"{name} holds RGBA images: the alpha channel is dropped (the network reads RGB).",
            stacklevel=2,
        )
        x = x[..., :3]
    if len(x) == 0:
        raise DataError(f"{name} has shape {shape}: it holds no images; pass at least one.")
    check_image_size((x.shape[1], x.shape[2]), f"the images in {name}")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    x = np.ascontiguousarray(x, dtype=np.float32)
    bad = ~np.isfinite(x).reshape(len(x), -1).all(axis=1)
    if bad.any():
        first = int(np.argmax(bad))
        value = x[first][~np.isfinite(x[first])][0]
        raise DataError(
            f"{name}[{first}] holds {value} ({int(bad.sum())} images are not finite as "
            "float32); replace or drop them."
        )
    return x


def as_labels(y: object, name: str = "y") -> np.ndarray:
    """Class labels (n,) from labels (n,) or (n, 1), or a one-hot matrix (n, k).

    Labels may be whole numbers, strings or bools; NaN or fractional labels are refused
    (scikit-learn calls such a target continuous: a regression target, not classes).
    """
    labels = _array(y, name)
    if labels.ndim == 2 and labels.shape[1] > 1:
        labels = _from_one_hot(labels, name)
    elif labels.ndim in (1, 2):
        labels = labels.ravel()
    else:
        raise DataError(
            f"{name} has shape {labels.shape}; expected class labels (n,) or a one-hot matrix "
            "(n, classes)."
        )
    if len(labels) == 0:
        raise DataError(f"{name} holds no labels; pass one label per image.")
    if labels.dtype.kind == "f":
        whole = np.isfinite(labels) & (labels == np.round(labels))
        if not whole.all():
            first = int(np.argmin(whole))
            raise DataError(
                f"{name}[{first}] is {labels[first]}: class labels must be whole numbers or "
                "strings, not NaN or fractions (that is a regression target); fix or drop "
                "those labels."
            )
    elif labels.dtype.kind not in "biuUS" and not (labels.dtype.kind == "O" and _sortable(labels)):
        raise DataError(
            f"{name} holds {labels.dtype} values that are not classes (or numbers mixed with "
            "strings or None); pass whole numbers, strings or bools, all of one kind."
        )
    return labels


def as_images_and_labels(X: object, y: object) -> tuple[np.ndarray, np.ndarray]:
    """Images and their labels, one label per image."""
    images, labels = as_images(X), as_labels(y)
    if len(images) != len(labels):
        raise DataError(
            "Found input variables with inconsistent numbers of samples: X has "
            f"{len(images)} images but y has {len(labels)} labels; pass one label per image "
            "(e.g. X[:n] with y[:n])."
        )
    return images, labels


def _array(value: object, name: str) -> np.ndarray:
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise DataError(f"{name} is not a rectangular array ({exc}); pass a numpy array.") from exc


def _from_one_hot(matrix: np.ndarray, name: str) -> np.ndarray:
    """The column of each row's 1 (the seed passed ``to_categorical`` labels)."""
    ok = np.isin(matrix, (0, 1)).all(axis=1) & (matrix.sum(axis=1) == 1)
    if not ok.all():
        first = int(np.argmin(ok))
        raise DataError(
            f"{name} is a {matrix.shape} matrix but not one-hot: row {first} is "
            f"{matrix[first].tolist()}; pass class labels (n,) or exactly one 1 per row."
        )
    return matrix.argmax(axis=1)


def _sortable(labels: np.ndarray) -> bool:
    try:
        np.unique(labels)
    except TypeError:
        return False
    return True
