"""Stratified, shuffled, seeded splits of a training split (the test split is never split)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from deepnet.errors import ConfigError, DataError

Split = tuple[np.ndarray, np.ndarray]


def stratified_folds(
    labels: np.ndarray,
    n_splits: int = 3,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
) -> list[Split]:
    """``n_splits`` (train indices, validation indices) pairs with class ratios preserved;
    ``class_names`` (label i's name) lets an error name the class that is too small."""
    if isinstance(n_splits, bool) or not isinstance(n_splits, int) or n_splits < 2:
        raise ConfigError(
            f"cv={n_splits!r} is not allowed: cross-validation needs at least 2 folds."
        )
    counts = np.bincount(labels)
    smallest = int(counts.min())
    if n_splits > smallest:
        which = f" ({class_names[int(counts.argmin())]})" if class_names is not None else ""
        raise ConfigError(
            f"cv={n_splits} folds cannot be stratified: the smallest class{which} has only "
            f"{smallest} training images. Use cv={smallest} or fewer, or add images to "
            "that class."
        )
    fold_of = _test_folds(np.asarray(labels), n_splits, seed)
    everything = np.arange(len(labels))
    return [(everything[fold_of != k], everything[fold_of == k]) for k in range(n_splits)]


def _test_folds(labels: np.ndarray, n_splits: int, seed: int) -> np.ndarray:
    """Which fold validates each image: scikit-learn's StratifiedKFold(n_splits,
    shuffle=True, random_state=seed) to the index, without importing scikit-learn (most of a
    second). Classes are numbered in order of first appearance; each class's images are
    dealt round robin over the sorted labels, then its fold numbers shuffled by one
    RandomState(seed), class after class."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    encoded = np.argsort(np.argsort(first))[inverse]
    n_classes = len(first)
    ordered = np.sort(encoded)
    allocation = np.array(
        [np.bincount(ordered[k::n_splits], minlength=n_classes) for k in range(n_splits)]
    )
    rng = np.random.RandomState(seed)
    fold_of = np.empty(len(labels), dtype=np.int32)
    for c in range(n_classes):
        folds = np.arange(n_splits).repeat(allocation[:, c])
        rng.shuffle(folds)
        fold_of[encoded == c] = folds
    return fold_of


def holdout_split(labels: np.ndarray, fraction: float, seed: int = 0) -> Split:
    """Hold out a stratified ``fraction`` of the indices for validation (0: hold out none)."""
    if not 0 <= fraction < 1:
        raise ConfigError(
            f"validation_split={fraction!r} is not allowed: it must be >= 0 and < 1 (0 trains "
            "on the whole training split)."
        )
    everything = np.arange(len(labels))
    if fraction == 0:
        return everything, everything[:0]
    from sklearn.model_selection import train_test_split

    try:
        train, val = train_test_split(
            everything, test_size=fraction, stratify=labels, random_state=seed
        )
    except ValueError as exc:
        raise ConfigError(f"validation_split={fraction} is too small or too large: {exc}") from exc
    return np.sort(train), np.sort(val)


def check_folds(folds: list[Split], n: int) -> None:
    """Refuse folds (from a user's ``cv``) that index outside ``n`` images or hold none: the
    engine gathers images by these indices."""
    for i, fold in enumerate(folds):
        if len(fold) != 2:
            raise DataError(
                f"cv fold {i} has {len(fold)} parts; each fold is (train indices, validation "
                "indices)."
            )
        for part, index in zip(("train", "validation"), map(np.asarray, fold), strict=True):
            if index.dtype.kind not in "iu" or index.ndim != 1 or len(index) == 0:
                raise DataError(
                    f"cv fold {i} has {part} indices of dtype {index.dtype} and shape "
                    f"{index.shape}; each part must be a non-empty 1-D array of integers."
                )
            outside = index[(index < 0) | (index >= n)]
            if len(outside):
                raise DataError(
                    f"cv fold {i} has {part} index {int(outside[0])} but there are {n} images; "
                    f"indices must lie in 0..{n - 1}."
                )
