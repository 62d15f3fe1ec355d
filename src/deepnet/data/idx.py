"""Reader for the IDX format of the MNIST family (gzipped or not), with strict checks."""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from deepnet.errors import DataError

UBYTE = 0x08
GZIP_MAGIC = b"\x1f\x8b"
DEFLATE_MAX_RATIO = 1032  # zlib's bound: deflate expands its input at most 1032-fold
CHUNK = 1 << 20  # bytes decompressed at a time


def read_idx(path: Path, count: int | None = None) -> np.ndarray:
    """Read an unsigned-byte IDX file (images or labels) into a uint8 array; ``count``: how
    many items (its first dimension) it must hold, e.g. one image per label.

    The header is 0x00 0x00 <type> <ndim> followed by ndim big-endian uint32 sizes; the body
    must hold exactly prod(sizes) bytes. Anything else raises DataError naming the file.
    The body is streamed in chunks and never read past the size the header declares, and a
    header declaring more than the file could hold (a gzip expands at most 1032-fold) is
    refused before anything is read, so a hostile file costs at most its declared size.
    """
    try:
        with path.open("rb") as file:
            gzipped = file.read(2) == GZIP_MAGIC
            file.seek(0)
            capacity = path.stat().st_size * (DEFLATE_MAX_RATIO if gzipped else 1)
            stream: BinaryIO = gzip.GzipFile(fileobj=file) if gzipped else file
            return _read(stream, path, capacity, gzipped, count)
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise DataError(
            f"cannot read IDX file {path}: {exc}. Check the file or download it again."
        ) from exc


def _read(
    stream: BinaryIO, path: Path, capacity: int, gzipped: bool, count: int | None
) -> np.ndarray:
    magic = stream.read(4)
    if len(magic) < 4 or magic[:3] != bytes([0, 0, UBYTE]) or not 1 <= magic[3] <= 4:
        raise DataError(
            f"{path} is not an unsigned-byte IDX file: its magic number is "
            f"{magic.hex() or 'empty'}, expected 000008 followed by 01-04 dimensions. "
            "Point --path at the MNIST IDX files."
        )
    sizes = stream.read(4 * magic[3])
    if len(sizes) < 4 * magic[3]:
        raise DataError(f"{path} is truncated inside its header. Download the file again.")
    shape = tuple(int(d) for d in np.frombuffer(sizes, ">u4"))
    if count is not None and shape[0] != count:
        raise DataError(
            f"{path} declares {shape[0]} items but its labels file holds {count} labels; the "
            "two files must come from the same release. Download them again."
        )
    expected = math.prod(shape)
    header = 4 + len(sizes)
    if header + expected > capacity:
        room = (
            f"a gzip file of {capacity // DEFLATE_MAX_RATIO} bytes expands to at most "
            f"{capacity - header}"
            if gzipped
            else f"the file holds {capacity - header}"
        )
        raise DataError(
            f"{path} is truncated: the header declares shape {shape} ({expected} bytes) but "
            f"{room} bytes of data. Download the file again."
        )
    body = np.empty(expected, np.uint8)
    view = memoryview(body)
    filled = 0
    while filled < expected:
        got = stream.readinto(view[filled : filled + CHUNK])
        if not got:
            raise DataError(
                f"{path} is truncated: the header declares shape {shape} ({expected} bytes) "
                f"but the file holds {filled} bytes of data. Download the file again."
            )
        filled += got
    if stream.read(1):
        raise DataError(
            f"{path} is longer than its header says: the header declares shape {shape} "
            f"({expected} bytes) but the file holds more data. Download the file again."
        )
    return body.reshape(shape)


def find_idx(folder: Path, stem: str, ndim: int) -> Path:
    """The file for ``stem`` (e.g. "train-images") in ``folder``, under any usual spelling."""
    names = [f"{stem}{sep}idx{ndim}-ubyte{gz}" for sep in ("-", ".") for gz in ("", ".gz")]
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise DataError(
        f"no {stem} file in {folder}: looked for {', '.join(names)}. A folder given as the "
        "data path must hold the four standard IDX files (train-images, train-labels, "
        "t10k-images, t10k-labels)."
    )
