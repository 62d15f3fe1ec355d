"""Label new images with a saved run, given to the network exactly as it was trained.

A run records its ``Preprocessing`` (image size, channels, scaling, and whether other sizes
are resized and colour made grey). Images of another size or channel count are converted
when the run was trained with those conversions, and refused otherwise: a network trained on
28x28 grey digits says nothing useful about a 32x32 colour photo.
"""

from __future__ import annotations

import csv
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from deepnet.data.arrays import as_images
from deepnet.data.convert import convert_images, to_uint8
from deepnet.data.options import Preprocessing
from deepnet.errors import ConfigError, DataError
from deepnet.evaluate import images_to_tensor, predict_logits
from deepnet.runs import SavedRun, load_run


@dataclass(frozen=True)
class Guess:
    """One class the network proposes for an image, with its probability."""

    index: int  # 0..k-1, the network's output unit
    name: str
    probability: float


@dataclass(frozen=True, eq=False)
class Predictions:
    """The network's class probabilities for n images, and what they say."""

    probabilities: np.ndarray  # (n, k) float32, each row sums to 1
    class_names: tuple[str, ...]  # what output unit i stands for

    def __len__(self) -> int:
        return len(self.probabilities)

    @property
    def indices(self) -> np.ndarray:
        """The most probable class of each image, as an index 0..k-1."""
        return self.probabilities.argmax(axis=1)

    @property
    def names(self) -> tuple[str, ...]:
        """The most probable class of each image, by name."""
        return tuple(self.class_names[i] for i in self.indices)

    @property
    def confidence(self) -> np.ndarray:
        """The probability of each image's most probable class."""
        return self.probabilities.max(axis=1)

    def top(self, k: int = 1) -> list[tuple[Guess, ...]]:
        """The ``k`` most probable classes of each image, most probable first."""
        k = checked_top(k, len(self.class_names))
        order = np.argsort(-self.probabilities, axis=1, kind="stable")
        return [
            tuple(Guess(int(i), self.class_names[i], float(row[i])) for i in best)
            for row, best in zip(self.probabilities, order[:, :k], strict=True)
        ]


def checked_top(k: object, n_classes: int) -> int:
    """``k`` if it is a whole number of guesses a run of ``n_classes`` classes can make."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k <= n_classes:
        raise ConfigError(
            f"top={k!r} is not allowed: the run tells {n_classes} classes apart, so ask "
            f"for 1 to {n_classes} of them."
        )
    return int(k)


def predict_images(run: SavedRun, images: object) -> Predictions:
    """``run``'s class probabilities for ``images`` (n, h, w, c) or (n, h, w): uint8 pixels,
    or floats already scaled like x / 255. Converted to the run's size and channels when it
    was trained with --resize / --grayscale; otherwise they must already match."""
    prepared = fit_to(as_images(images, "images"), run.data.preprocessing, f"the run {run.path}")
    logits = predict_logits(run.model(), images_to_tensor(prepared))
    return Predictions(torch.softmax(logits, dim=1).numpy(), run.data.class_names)


def fit_to(images: np.ndarray, preprocessing: Preprocessing, taker: str) -> np.ndarray:
    """``images`` (n, h, w, c) as the network described by ``preprocessing`` takes them:
    converted where it records the conversion (as loading converts files; float pixels become
    uint8 first, as the network was trained on), else DataError naming both sizes and the
    fix. ``taker`` names the network in the message."""
    height, width = preprocessing.image_shape
    channels = images.shape[3]
    if channels != preprocessing.channels and not (
        preprocessing.grayscale and preprocessing.channels == 1
    ):
        fix = (
            "grey images, or train again with --grayscale so that colour images are made grey"
            if preprocessing.channels == 1
            else "RGB images (it was trained on colour)"
        )
        raise DataError(
            f"the images have {_channels(channels)} but {taker} takes "
            f"{_channels(preprocessing.channels)}; pass {fix}."
        )
    if images.shape[1:3] != (height, width) and not preprocessing.resize:
        raise DataError(
            f"the images are {images.shape[1]}x{images.shape[2]} pixels but {taker} takes "
            f"{height}x{width}; pass images resized to {height}x{width}, or train again with "
            f"--resize {height}x{width} so that other sizes are resized."
        )
    if images.shape[1:] == (height, width, preprocessing.channels):
        return images
    resize = (height, width) if preprocessing.resize else None
    return convert_images(to_uint8(images, "images"), resize, preprocessing.grayscale)


def _channels(n: int) -> str:
    return {1: "1 channel (grey)", 3: "3 channels (RGB)"}.get(n, f"{n} channels")


@dataclass(frozen=True)
class PredictionRow:
    """What the network says of one input image: where it came from and its best guesses."""

    name: str  # the file, or "data.csv:row 3", "x.npz[3]"
    guesses: tuple[Guess, ...]  # most probable first

    def text(self) -> str:
        """One line: the image, then each guess's class name and probability."""
        return "  ".join([self.name, *(f"{g.name} {g.probability:.4f}" for g in self.guesses)])


@dataclass(frozen=True)
class FilePredictions:
    """Predictions for every image read from files, and the unreadable files skipped."""

    rows: tuple[PredictionRow, ...]
    skipped: tuple[str, ...]


def predict_files(
    run_path: str | Path, paths: Sequence[str | Path], top: int = 1, skip_bad: bool = False
) -> FilePredictions:
    """The ``top`` classes of every image in ``paths`` (image files, folders, CSVs, .npz/.npy
    arrays), read and converted by the run's recorded preprocessing; ``skip_bad`` skips
    unreadable files instead of refusing them. What ``deepnet predict`` prints."""
    from deepnet.data.inputs import read_images  # Pillow: only when files are read

    run = load_run(run_path)
    checked_top(top, len(run.data.class_names))  # before any file is read
    if not paths:
        raise DataError("no images given: pass image files, folders, CSV or array files.")
    read = read_images([Path(p) for p in paths], run.data.preprocessing, skip_bad)
    guesses = run.predict(read.images).top(top)
    rows = tuple(PredictionRow(name, best) for name, best in zip(read.names, guesses, strict=True))
    return FilePredictions(rows, read.skipped)


def write_csv(rows: Sequence[PredictionRow], path: str | Path) -> None:
    """One line per image: file, class, probability, then class_2, probability_2... for
    the next guesses."""
    ranks = max((len(r.guesses) for r in rows), default=1)
    header = ["file", "class", "probability"]
    header += [f"{c}_{r}" for r in range(2, ranks + 1) for c in ("class", "probability")]
    try:
        with Path(path).open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            for row in rows:
                writer.writerow(
                    [row.name, *(v for g in row.guesses for v in (g.name, g.probability))]
                )
    except OSError as exc:
        raise DataError(f"cannot write {path}: {exc}; choose a writable --csv file.") from exc
