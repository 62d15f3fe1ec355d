"""Hyperparameter search: spaces, strategies (through Optuna), cross-validation, resume.

The search layer knows nothing of tensors: it turns a space and a strategy into trials,
trials into members (one per fold), and the engine's per-epoch results into scores,
pruning decisions and study records. ``run_search``, ``SearchOutcome`` and ``Executor``
(which need the training engine) are imported on first use, so reading specs and results
stays light.
"""

import importlib
from typing import Any

from deepnet.search.records import TrialStatus
from deepnet.search.results import TrialRow, cv_results, ranked, write_csv
from deepnet.search.space import Space, loguniform, randint, uniform
from deepnet.search.spec import SearchSpec, Stage, build_spec
from deepnet.search.strategies import STRATEGIES, Strategy

_LAZY = {
    "Executor": "deepnet.search.executor",
    "SearchOutcome": "deepnet.search.runner",
    "run_search": "deepnet.search.runner",
}

__all__ = [
    "STRATEGIES",
    "Executor",
    "SearchOutcome",
    "SearchSpec",
    "Space",
    "Stage",
    "Strategy",
    "TrialRow",
    "TrialStatus",
    "build_spec",
    "cv_results",
    "loguniform",
    "randint",
    "ranked",
    "run_search",
    "uniform",
    "write_csv",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'deepnet.search' has no attribute {name!r}")
