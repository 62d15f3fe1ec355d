"""The Dataset a run trains on: uint8 (n, h, w, c) images, labels 0..k-1, and the classes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from deepnet.data.arrays import CHANNELS, check_image_size
from deepnet.data.options import DEFAULT_OPTIONS, LoadOptions, Preprocessing
from deepnet.errors import DataError

Classes = Sequence[int | str] | str


@dataclass(frozen=True)
class Dataset:
    """Train and test splits of one image-classification task.

    Images are uint8 (n, height, width, channels), channels last (1 grey, 3 RGB); labels are
    int64 in 0..k-1, where label i stands for ``class_names[i]`` (original label
    ``classes[i]`` of the source). ``source`` says where the pixels came from.
    ``preprocessing`` says what the network takes (None: these images' size and channels,
    unconverted); ``skipped`` names the unreadable files left out (``LoadOptions.skip_bad``);
    ``options``: how the source was read, so that a run can read it again the same way.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    classes: tuple[int, ...]
    source: str
    preprocessing: Preprocessing = None  # type: ignore[assignment]  # None: from the images
    skipped: tuple[str, ...] = ()
    options: LoadOptions = DEFAULT_OPTIONS

    def __post_init__(self) -> None:
        """Hold what the engine relies on, as it gathers images by label position: one uint8
        (n, height, width, channels) image per label, labels 0..k-1, images the network can
        take, described by ``preprocessing``."""
        self._check_split("train", self.x_train, self.y_train)
        self._check_split("test", self.x_test, self.y_test)
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DataError(
                f"train images are {self.x_train.shape[1:]} but test images "
                f"{self.x_test.shape[1:]} in {self.source}; give both splits one size and "
                "channel count (or load with resize / grayscale)."
            )
        check_image_size(self.image_shape, f"images from {self.source}")
        if self.preprocessing is None:
            object.__setattr__(
                self, "preprocessing", Preprocessing(self.image_shape, self.channels)
            )
        elif (self.preprocessing.image_shape, self.preprocessing.channels) != (
            self.image_shape,
            self.channels,
        ):
            raise DataError(
                f"images from {self.source} are {self.image_shape} with {self.channels} "
                f"channels but their preprocessing says {self.preprocessing.image_shape} with "
                f"{self.preprocessing.channels}; describe the images as they are."
            )

    def _check_split(self, split: str, x: np.ndarray, y: np.ndarray) -> None:
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[3] not in CHANNELS:
            raise DataError(
                f"{split} images from {self.source} are {x.dtype} with shape {x.shape}; "
                "expected uint8 images of shape (n, height, width, channels), channels 1 or 3 "
                "(deepnet.data.arrays.as_images makes them)."
            )
        if len(x) != len(y):
            raise DataError(
                f"{self.source} has {len(x)} {split} images but {len(y)} {split} labels; the "
                "two files must come from the same release."
            )
        if y.dtype.kind not in "iu" or y.ndim != 1 or not np.all((y >= 0) & (y < self.n_classes)):
            raise DataError(
                f"{split} labels from {self.source} must be integers 0..{self.n_classes - 1} "
                f"(one per class name) of shape (n,); they are {y.dtype} with shape {y.shape}."
            )

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int]:
        return self.x_train.shape[1], self.x_train.shape[2]

    @property
    def channels(self) -> int:
        return self.x_train.shape[3]

    def counts(self) -> dict[str, tuple[int, int]]:
        """Training and test images per class name."""
        train = np.bincount(self.y_train, minlength=self.n_classes)
        test = np.bincount(self.y_test, minlength=self.n_classes)
        return {n: (int(a), int(b)) for n, a, b in zip(self.class_names, train, test, strict=True)}

    def select(self, classes: Classes) -> Dataset:
        """Keep the given classes, relabelled 0..k-1 in the order given ("all": keep all).

        ``select((2, 7))`` on MNIST maps 2 -> 0 and 7 -> 1, as the seed did. Classes may be
        given by original label or by name: an int is a label, a string a name (or, failing
        that, a label written out), so folders named "1" and "cat" stay unambiguous.
        """
        wanted = self._resolve(classes)
        # every class in the source's order: the arrays as they are, not a copy
        selected = self if wanted == self.classes else self._relabelled(wanted)
        empty = [n for n, (a, b) in selected.counts().items() if a == 0 or b == 0]
        if empty:
            raise DataError(
                f"class {', '.join(empty)} has no images in the train or test split of "
                f"{self.source}; choose other classes."
            )
        return selected

    def _relabelled(self, wanted: tuple[int, ...]) -> Dataset:
        mapping = np.full(max(self.classes) + 1, -1, dtype=np.int64)
        for new, old in enumerate(wanted):
            mapping[old] = new
        original = np.asarray(self.classes)
        x_train, y_train = _relabel(self.x_train, original[self.y_train], mapping)
        x_test, y_test = _relabel(self.x_test, original[self.y_test], mapping)
        names = tuple(self.class_names[self.classes.index(c)] for c in wanted)
        return replace(
            self,
            x_train=x_train,
            y_train=y_train,
            x_test=x_test,
            y_test=y_test,
            class_names=names,
            classes=wanted,
        )

    def _resolve(self, classes: Classes) -> tuple[int, ...]:
        if isinstance(classes, str):
            if classes.strip().lower() == "all":
                return self.classes
            classes = [c.strip() for c in classes.split(",") if c.strip()]
        allowed = ", ".join(
            f"{c} ({n})" if str(c) != n else n
            for c, n in zip(self.classes, self.class_names, strict=True)
        )
        by_name = {n.lower(): c for c, n in zip(self.classes, self.class_names, strict=True)}
        resolved = []
        for item in classes:
            key = str(item).strip().lower()
            if isinstance(item, int | np.integer) and int(item) in self.classes:
                resolved.append(int(item))  # a label (as runs record classes), before names
            elif key in by_name:
                resolved.append(by_name[key])
            elif key.lstrip("-").isdigit() and int(key) in self.classes:
                resolved.append(int(key))
            else:
                raise DataError(
                    f"unknown class {item!r} for {self.name}: choose from {allowed}, or 'all'."
                )
        if len(set(resolved)) != len(resolved):
            raise DataError(f"classes {list(classes)} name a class twice; list each class once.")
        if len(resolved) < 2:
            raise DataError(
                f"classes {list(classes)} select {len(resolved)} class; a classifier needs at "
                "least two, e.g. --classes 2,7 or --classes all."
            )
        return tuple(resolved)


def _relabel(
    x: np.ndarray, original: np.ndarray, mapping: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    new = mapping[original]
    keep = new >= 0
    return x[keep], new[keep]
