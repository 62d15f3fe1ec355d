"""The test split held out of a source that has none (an image folder without test/, a CSV,
arrays without x_test): stratified and seeded, so that the same images are test images in
every later command that loads the source with the same LoadOptions.

Each class is split on its own, by a generator seeded from ``split_seed`` and the class's
label, so an image's side does not depend on which other classes are there: choosing fewer
classes later, or adding a class folder, leaves every other class's test images as they were.
"""

from __future__ import annotations

import zlib

import numpy as np

from deepnet.data.options import LoadOptions
from deepnet.errors import DataError

Split = tuple[np.ndarray, np.ndarray]


def test_split(labels: np.ndarray, options: LoadOptions, source: str) -> Split:
    """(train indices, test indices), sorted: round(test_size * n) of each class's n images
    (at least one, and at least one left to train on) held out for testing."""
    names = np.unique(labels)
    if len(names) < 2:
        raise DataError(
            f"{source} holds one class ({names[0] if len(names) else 'none'}); a classifier "
            "needs images of at least two classes."
        )
    test = []
    for name in names:
        members = np.flatnonzero(labels == name)
        if len(members) < 2:
            raise DataError(
                f"class {name} of {source} has {len(members)} image; holding out a test split "
                "needs at least 2 images per class (one to train on, one to test). Add images "
                "to it or leave the class out (classes=...)."
            )
        n_test = min(max(round(options.test_size * len(members)), 1), len(members) - 1)
        rng = np.random.default_rng([options.split_seed, zlib.crc32(str(name).encode())])
        test.append(rng.choice(members, n_test, replace=False))
    chosen = np.sort(np.concatenate(test))
    return np.setdiff1d(np.arange(len(labels)), chosen), chosen
