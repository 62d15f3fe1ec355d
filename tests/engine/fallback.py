"""The kernels as other machines have them: without a C compiler (the torch path), or
built for another CPU."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from deepnet.engine import kernels

needs_bf16 = pytest.mark.skipif(not kernels.bf16_products(), reason="no AVX512_BF16 here")


@contextmanager
def without_compiler(cache: Path) -> Iterator[None]:
    """Within: the build fails (CC is ``false``, the cache ``cache`` is empty), with its
    warning, so every kernel call takes the torch path; after: the compiled kernels again."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CC", "false")  # a "compiler" that always fails
        patch.setenv("DEEPNET_CACHE", str(cache))
        kernels._library.cache_clear()
        try:
            with pytest.warns(RuntimeWarning, match=r"compiling .*kernels\.c.* failed"):
                assert not kernels.native()
            yield
        finally:
            kernels._library.cache_clear()


@contextmanager
def built_for(march: str, cache: Path) -> Iterator[None]:
    """Within: the kernels compiled anew into ``cache`` for the CPU ``march`` names
    ($DEEPNET_MARCH, e.g. x86-64-v3: AVX2 without AVX-512); after: this CPU's build again."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(kernels.MARCH, march)
        patch.setenv("DEEPNET_CACHE", str(cache))
        kernels._library.cache_clear()
        try:
            assert kernels.native()
            yield
        finally:
            kernels._library.cache_clear()
