"""Data: sources of images, conversions, class selection, and cross-validation splits.

Each name is imported from its module on first use, so that importing a light part (say
``deepnet.data.options``, which run folders and the command line read) does not load
scikit-learn, Pillow or the sources with it.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULE_OF = {
    "DATASETS": "deepnet.data.sources",
    "Dataset": "deepnet.data.dataset",
    "LoadOptions": "deepnet.data.options",
    "NamedImages": "deepnet.data.inputs",
    "Preprocessing": "deepnet.data.options",
    "cache_dir": "deepnet.data.sources",
    "detect_source": "deepnet.data.sources",
    "holdout_split": "deepnet.data.folds",
    "load_dataset": "deepnet.data.sources",
    "mnist_cache_state": "deepnet.data.sources",
    "parse_size": "deepnet.data.options",
    "read_images": "deepnet.data.inputs",
    "stratified_folds": "deepnet.data.folds",
}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'deepnet.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULE_OF[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
