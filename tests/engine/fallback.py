"""The kernels as on a machine without a C compiler, for tests of the torch path."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from deepnet.engine import kernels


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
