"""Images with the labels a source gives them, and how they become a Dataset.

Every source reader returns a ``Labelled``: uint8 (n, h, w, c) images already converted per
the LoadOptions, and labels as the source spells them (digits, label strings, folder names).
``to_dataset`` then holds out a test split where the source has none, numbers the classes
and records the preprocessing, the same way for every source.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deepnet.data.dataset import Dataset
from deepnet.data.holdout import test_split
from deepnet.data.options import LoadOptions, Preprocessing
from deepnet.errors import DataError


@dataclass(frozen=True)
class Labelled:
    """A source's images and labels; ``x_test`` None: the source has no test split.

    ``label_names``: the name of each integer label (MNIST's digits, Fashion-MNIST's
    garments); None names classes by their labels. ``skipped``: unreadable files left out.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    source: str
    label_names: tuple[str, ...] | None = None
    skipped: tuple[str, ...] = ()


def to_dataset(key: str, data: Labelled, options: LoadOptions) -> Dataset:
    """The Dataset of every class in ``data``; test split held out if it has none."""
    given = [data.y_train] if data.y_test is None else [data.y_train, data.y_test]
    if any(y.dtype.kind not in "biuf" for y in given):
        given = [y.astype(str) for y in given]  # names, unless every one is a number
    labels = _normalised(np.concatenate(given))
    x_train, y_train = data.x_train, labels[: len(data.y_train)]
    if data.x_test is None:
        train, test = test_split(y_train, options, data.source)
        x_test, y_test = x_train[test], y_train[test]
        x_train, y_train = x_train[train], y_train[train]
    else:
        x_test, y_test = data.x_test, labels[len(data.y_train) :]
    distinct = np.unique(np.concatenate([y_train, y_test]))
    if distinct.dtype.kind == "U":
        names, classes = tuple(str(v) for v in distinct), tuple(range(len(distinct)))
    else:
        classes = tuple(int(v) for v in distinct)
        names = _names(classes, data)
    preprocessing = Preprocessing(
        (x_train.shape[1], x_train.shape[2]),
        x_train.shape[3],
        resize=options.resize is not None,
        grayscale=options.grayscale,
    )
    return Dataset(
        key,
        x_train,
        np.searchsorted(distinct, y_train).astype(np.int64),
        x_test,
        np.searchsorted(distinct, y_test).astype(np.int64),
        names,
        classes,
        data.source,
        preprocessing,
        data.skipped,
        options,
    )


def _normalised(labels: np.ndarray) -> np.ndarray:
    """int64 labels where all are whole numbers (digits, "3", 7.0), so that
    ``classes=(2, 7)`` means the same on every source; other labels as strings (names)."""
    if labels.dtype.kind in "biuf":
        return labels.astype(np.int64)  # whole numbers: the readers refuse fractions
    texts = np.char.strip(labels.astype(str))
    if all(t.lstrip("-").isdigit() for t in np.unique(texts)):
        return texts.astype(np.int64)
    return texts


def _names(classes: tuple[int, ...], data: Labelled) -> tuple[str, ...]:
    if data.label_names is None:
        return tuple(str(c) for c in classes)
    outside = [c for c in classes if not 0 <= c < len(data.label_names)]
    if outside:
        raise DataError(
            f"label {outside[0]} from {data.source} is outside 0..{len(data.label_names) - 1}, "
            "the labels this data set names; fix the labels."
        )
    return tuple(data.label_names[c] for c in classes)
