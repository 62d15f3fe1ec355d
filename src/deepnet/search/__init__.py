"""Hyperparameter search: spaces, strategies (through Optuna), cross-validation, resume.

The search layer knows nothing of tensors: it turns a space and a strategy into trials,
trials into members (one per fold), and the engine's per-epoch results into scores,
pruning decisions and study records. Every name is imported on first use, so that a
worker process, which imports the package for its executor, loads neither Optuna nor the
specs' schema.
"""

import importlib
from typing import Any

_LAZY = {
    "Executor": "deepnet.search.executor",
    "SearchOutcome": "deepnet.search.runner",
    "run_search": "deepnet.search.runner",
    "TrialStatus": "deepnet.search.records",
    "TrialRow": "deepnet.search.results",
    "cv_results": "deepnet.search.results",
    "ranked": "deepnet.search.results",
    "write_csv": "deepnet.search.results",
    "Space": "deepnet.search.space",
    "loguniform": "deepnet.search.space",
    "randint": "deepnet.search.space",
    "uniform": "deepnet.search.space",
    "SearchSpec": "deepnet.search.spec",
    "Stage": "deepnet.search.spec",
    "build_spec": "deepnet.search.spec",
    "STRATEGIES": "deepnet.search.strategies",
    "Strategy": "deepnet.search.strategies",
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
