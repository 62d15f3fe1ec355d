"""Keep freed memory in the process, so that a training step's buffers are not re-faulted.

Every step allocates and frees the same activation buffers (a few MB to a hundred). glibc
maps blocks above its mmap threshold afresh and returns them to the kernel when freed, so
the next step page-faults on every page it touches: measured here, adding two 2.4 MB tensors
took 1.2 ms instead of 0.09 ms, and a CIFAR-10 block's forward pass that keeps 110 MB of maps
for its backward pass took 1.5x its time. The threshold cannot go above 32 MB, so no block is
mapped on its own: all come from the heap, which is trimmed only past 1 GiB free. The peak
grows a little (64 seed networks as one population: 714 -> 769 MiB, bench_fit.py --memory); a
no-op where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4  # how many blocks glibc may map on their own: 0, none
_TRIM = 1 << 30


@functools.cache
def keep_freed_memory() -> bool:
    """Keep every block in glibc's heap, and freed memory in the process; True if it took
    effect."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM))
