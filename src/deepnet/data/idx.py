"""Reader for the IDX format of the MNIST family (gzipped or not), with strict checks."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from deepnet.errors import DataError

UBYTE = 0x08
GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: Path) -> np.ndarray:
    """Read an unsigned-byte IDX file (images or labels) into a uint8 array.

    The header is 0x00 0x00 <type> <ndim> followed by ndim big-endian uint32 sizes; the body
    must hold exactly prod(sizes) bytes. Anything else raises DataError naming the file.
    """
    try:
        raw = path.read_bytes()
        if raw[:2] == GZIP_MAGIC:
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(
            f"cannot read IDX file {path}: {exc}. Check the file or download it again."
        ) from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != UBYTE or not 1 <= raw[3] <= 4:
        raise DataError(
            f"{path} is not an unsigned-byte IDX file: its magic number is "
            f"{raw[:4].hex() or 'empty'}, expected 000008 followed by 01-04 dimensions. "
            "Point --path at the MNIST IDX files."
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated inside its header. Download the file again.")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, offset=4))
    expected = int(np.prod(shape))
    body = len(raw) - header
    if body != expected:
        problem = "truncated" if body < expected else "longer than its header says"
        raise DataError(
            f"{path} is {problem}: the header declares shape {shape} ({expected} bytes) but the "
            f"file holds {body} bytes of data. Download the file again."
        )
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape).copy()


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
