"""Images to predict on (``deepnet predict``), made exactly what a run trained on.

Inputs are image files, folders of them (recursively, sorted), Kaggle-layout CSVs (with or
without a label column; a label is ignored) and .npz/.npy arrays. Each is converted per the
run's Preprocessing: resized if the run resized on load, greyed if it greyed; otherwise an
image of another size or channel count is refused, naming the file and both shapes, since a
network reads only the shape it was built for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepnet.data.array_files import load_npy, npz_images
from deepnet.data.arrays import as_images
from deepnet.data.convert import BadImageError, convert_images, decode, to_uint8
from deepnet.data.image_folder import image_files
from deepnet.data.kaggle_csv import CSV_SUFFIX, read_table
from deepnet.data.memory import check_fits
from deepnet.data.options import Preprocessing
from deepnet.errors import DataError


@dataclass(frozen=True)
class NamedImages:
    """uint8 (n, h, w, c) images shaped as a Preprocessing says, and where each came from:
    a file path, "data.csv:row 3" (1-based data rows) or "x.npz[3]" (0-based array index).
    ``skipped``: unreadable files left out (``skip_bad``)."""

    images: np.ndarray
    names: tuple[str, ...]
    skipped: tuple[str, ...] = ()


def read_images(
    paths: Sequence[Path], preprocessing: Preprocessing, skip_bad: bool = False
) -> NamedImages:
    """The images in ``paths``, in order, converted per ``preprocessing``."""
    blocks: list[np.ndarray] = []
    names: list[str] = []
    skipped: list[str] = []
    files = _files(paths)
    height, width = preprocessing.image_shape
    check_fits(
        len(files),
        (height, width, preprocessing.channels),
        "the images to predict",
        "Predict them a part at a time (fewer files per command).",
    )
    for path in files:
        suffix = path.suffix.lower()
        if suffix == CSV_SUFFIX:
            images = read_table(path).images
            labels = [f"{path}:row {i + 1}" for i in range(len(images))]
        elif suffix in (".npz", ".npy"):
            key, array = npz_images(path) if suffix == ".npz" else ("", load_npy(path))
            what = f"{path}[{key}]" if key else str(path)
            images = as_images(to_uint8(array, what), what)
            labels = [f"{path}[{i}]" for i in range(len(images))]
        else:
            try:
                decoded = _decode(path, preprocessing)
            except BadImageError:
                if not skip_bad:
                    raise
                skipped.append(str(path))
                continue
            images, labels = decoded[np.newaxis], [str(path)]
        blocks.append(fit(images, preprocessing, str(path)))
        names += labels
    if not blocks:
        raise DataError(
            f"no readable images in {', '.join(map(str, paths))} ({len(skipped)} skipped); give "
            "image files, folders of them, a CSV or an array file."
        )
    return NamedImages(np.concatenate(blocks), tuple(names), tuple(skipped))


def fit(images: np.ndarray, preprocessing: Preprocessing, what: str) -> np.ndarray:
    """uint8 (n, h, w, c) images converted as ``preprocessing`` allows, then checked."""
    resize = preprocessing.image_shape if preprocessing.resize else None
    images = convert_images(images, resize, preprocessing.grayscale)
    height, width, channels = images.shape[1:]
    want_h, want_w = preprocessing.image_shape
    if (height, width) != (want_h, want_w):
        raise DataError(
            f"{what} holds {height}x{width} images but the run was trained on {want_h}x"
            f"{want_w} ones without --resize; resize the images to {want_h}x{want_w} first, or "
            "train a run with --resize to have inputs resized."
        )
    if channels != preprocessing.channels:
        raise DataError(
            f"{what} holds {_colour(channels)} images but the run was trained on "
            f"{_colour(preprocessing.channels)} ones; convert the images first"
            + (", or train a run with --grayscale to have inputs greyed." if channels == 3 else ".")
        )
    return images


def _decode(path: Path, preprocessing: Preprocessing) -> np.ndarray:
    resize = preprocessing.image_shape if preprocessing.resize else None
    return decode(path, resize, preprocessing.grayscale).pixels


def _files(paths: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files += image_files(path)
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"{path} does not exist; give image files, folders, CSVs or arrays.")
    return files


def _colour(channels: int) -> str:
    return "grey (1 channel)" if channels == 1 else f"RGB ({channels} channels)"
