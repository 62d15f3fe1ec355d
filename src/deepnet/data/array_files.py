"""Images and labels in numpy files: .npz archives and .npy arrays.

A .npz holds ``x_train``, ``y_train`` and optionally ``x_test``, ``y_test`` (Keras'
mnist.npz layout), or ``x`` and ``y``; without test arrays LoadOptions' seeded test split is
held out. A .npy holds one array, so images and labels are two files side by side: give the
images, named ``x*.npy`` (``x.npy``, ``x_train.npy``), and their labels are the ``y*.npy``
of the same name (``y.npy``, ``y_train.npy``); beside ``x_train.npy``, ``x_test.npy`` and
``y_test.npy`` are the test split. A folder holding such files may be given instead.

Images are (n, h, w) or (n, h, w, c) (c 1, 3 or 4; channels first is recognised), uint8,
whole numbers 0..255 or floats in [0, 1] (converted exactly: round(x * 255)); labels are
integers or strings (string labels name the classes, in sorted order). Sizes are read from
the arrays' headers and checked against memory before any array is loaded.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import BinaryIO

import numpy as np

from deepnet.data.arrays import as_images, as_labels
from deepnet.data.convert import convert_images, to_uint8
from deepnet.data.labelled import Labelled
from deepnet.data.memory import ARRAY_FIX, check_fits
from deepnet.data.options import LoadOptions
from deepnet.errors import DataError

ARRAY_SUFFIXES = (".npz", ".npy")
SPLIT_KEYS = ("x_train", "y_train", "x_test", "y_test")
PLAIN_KEYS = ("x", "y")


def holds_arrays(folder: Path) -> bool:
    return any((folder / f"{key}.npy").is_file() for key in ("x_train", "x"))


def read_array_files(path: Path, options: LoadOptions) -> Labelled:
    """The images and labels of a .npz, a pair of .npy files, or a folder of .npy files."""
    arrays = _npy_files(path) if path.is_dir() or path.suffix.lower() == ".npy" else None
    if arrays is None:
        arrays = load_npz(path, _npz_keys(path), "")
    if "x" in arrays:
        arrays = {"x_train": arrays["x"], "y_train": arrays["y"]}
    x_train, y_train = _pair(arrays, "x_train", "y_train", path, options)
    if "x_test" not in arrays:
        return Labelled(x_train, y_train, None, None, str(path))
    x_test, y_test = _pair(arrays, "x_test", "y_test", path, options)
    return Labelled(x_train, y_train, x_test, y_test, str(path))


def load_npz(path: Path, keys: tuple[str, ...], hint: str) -> dict[str, np.ndarray]:
    """``keys`` of a .npz, after checking its images fit in memory; ``hint``: a sentence
    that ends every error (e.g. what to do about a corrupt cache)."""
    _check_zip(path, hint)
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in keys if k not in npz.files]
            if missing:
                raise DataError(
                    f"{path} lacks the arrays {', '.join(missing)}; a data .npz must hold "
                    f"{', '.join(keys)}.{hint}"
                )
            with zipfile.ZipFile(path) as archive:
                for key in keys:
                    if key.startswith("x"):
                        with archive.open(f"{key}.npy") as member:
                            _check_declared(member, f"{path}[{key}]")
            return {k: npz[k] for k in keys}
    except MemoryError as exc:  # numpy allocates what an array's header declares
        raise DataError(
            f"cannot read {path}: an array in it declares more data than fits in memory "
            f"({exc}); the file is corrupt or not a data set.{hint}"
        ) from exc
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"cannot read {path}: {exc}.{hint}") from exc


def load_npy(path: Path) -> np.ndarray:
    """One .npy array, after checking it fits in memory."""
    try:
        with path.open("rb") as file:
            _check_declared(file, str(path))
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(
            f"cannot read {path} as a .npy array: {exc}. Save arrays with numpy.save (no "
            "pickled objects)."
        ) from exc


def npz_images(path: Path) -> tuple[str, np.ndarray]:
    """The images array of a .npz to predict on: ``x``, else ``x_test``, else its only array."""
    _check_zip(path, "")
    with np.load(path, allow_pickle=False) as npz:
        names = npz.files
    for key in ("x", "x_test"):
        if key in names:
            return key, load_npz(path, (key,), "")[key]
    if len(names) == 1:
        return names[0], load_npz(path, (names[0],), "")[names[0]]
    raise DataError(
        f"{path} holds the arrays {', '.join(names)}; images to predict are read from an array "
        "named x or x_test (or the archive's only array). Save them under one of those names."
    )


def _npz_keys(path: Path) -> tuple[str, ...]:
    _check_zip(path, "")
    with np.load(path, allow_pickle=False) as npz:
        names = set(npz.files)
    if {"x", "y"} <= names:
        return PLAIN_KEYS
    return SPLIT_KEYS if "x_test" in names or "y_test" in names else SPLIT_KEYS[:2]


def _npy_files(path: Path) -> dict[str, np.ndarray]:
    """x*.npy images and their y*.npy labels (and the test pair beside x_train.npy)."""
    images = (
        path
        if path.is_file()
        else next(
            (path / f"{k}.npy" for k in ("x_train", "x") if (path / f"{k}.npy").is_file()), None
        )
    )
    if images is None or not images.name.startswith("x"):
        raise DataError(
            f"{path} is not an images array named x*.npy (e.g. x.npy or x_train.npy, with its "
            "labels in y.npy or y_train.npy beside it); rename the files, or save images and "
            "labels together with numpy.savez(x=..., y=...)."
        )
    labels = images.with_name("y" + images.name[1:])
    if not labels.is_file():
        raise DataError(
            f"{images} has no labels file beside it: expected {labels.name}, one label per "
            "image; save the labels there."
        )
    stem = images.stem
    key = "x_train" if stem == "x_train" else "x"
    arrays = {key: load_npy(images), "y" + key[1:]: load_npy(labels)}
    test_images, test_labels = images.with_name("x_test.npy"), images.with_name("y_test.npy")
    if key == "x_train" and test_images.is_file():
        if not test_labels.is_file():
            raise DataError(
                f"{test_images} has no labels file beside it: expected {test_labels.name}."
            )
        arrays |= {"x_test": load_npy(test_images), "y_test": load_npy(test_labels)}
    return arrays


def _pair(
    arrays: dict[str, np.ndarray], x_key: str, y_key: str, path: Path, options: LoadOptions
) -> tuple[np.ndarray, np.ndarray]:
    if y_key not in arrays:
        raise DataError(f"{path} has {x_key} but no {y_key}; give one label per image.")
    name = f"{path}[{x_key}]"
    images = as_images(to_uint8(arrays[x_key], name), name)
    labels = as_labels(arrays[y_key], f"{path}[{y_key}]")
    if len(images) != len(labels):
        raise DataError(
            f"{path} has {len(images)} images in {x_key} but {len(labels)} labels in {y_key}; "
            "give one label per image."
        )
    return convert_images(images, options.resize, options.grayscale), labels


def _check_zip(path: Path, hint: str) -> None:
    if not zipfile.is_zipfile(path):  # numpy would guess at a pickle and suggest loading one
        raise DataError(
            f"{path} is not a .npz file (not a zip archive of arrays); save images and labels "
            f"with numpy.savez.{hint}"
        )


def _check_declared(file: BinaryIO, what: str) -> None:
    """Refuse an images array whose header declares more than memory holds."""
    version = np.lib.format.read_magic(file)
    read_header = (
        np.lib.format.read_array_header_1_0
        if version == (1, 0)
        else np.lib.format.read_array_header_2_0
    )
    shape, _, _ = read_header(file)
    if len(shape) >= 3:
        n, height, width, *channels = shape
        check_fits(n, (height, width, int(np.prod(channels))), what, ARRAY_FIX)
