"""Whether a data set fits in memory, judged before its images are decoded.

A source's size is estimated from its file count and the first image's header (or an array
file's header), so a folder that would exhaust the machine is refused in a second with the
estimate and the fix, not after minutes of decoding and a crash.
"""

from __future__ import annotations

import os
from pathlib import Path

from deepnet.errors import DataError

# the uint8 images, plus the float32 copy (4 bytes a pixel) the network trains on
BYTES_NEEDED_PER_PIXEL = 1 + 4
MEMINFO = Path("/proc/meminfo")


def available_memory() -> int:
    """Bytes the system can give without swapping (Linux MemAvailable, else free pages)."""
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


RESIZE_FIX = (
    "Load them smaller (--resize, e.g. --resize 64x64) or grey (--grayscale), or use fewer images."
)
ARRAY_FIX = "Save fewer (or smaller) images in the file."


def check_fits(n: int, shape: tuple[int, int, int], source: str, fix: str = RESIZE_FIX) -> None:
    """Refuse ``n`` images of ``shape`` (h, w, c) that would not fit in available memory."""
    pixels = n * shape[0] * shape[1] * shape[2]
    needed, free = pixels * BYTES_NEEDED_PER_PIXEL, available_memory()
    if needed > free:
        height, width, channels = shape
        raise DataError(
            f"{source} holds {n} images of {height}x{width}x{channels}: about "
            f"{_gib(pixels)} as uint8 and {_gib(needed)} with the float32 copy training uses, "
            f"but {_gib(free)} of memory is available. {fix}"
        )


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB"
