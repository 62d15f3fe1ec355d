"""Hyperparameter search: spaces, strategies (through Optuna), cross-validation, resume.

The search layer knows nothing of tensors: it turns a space and a strategy into trials,
trials into members (one per fold), and the engine's per-epoch results into scores,
pruning decisions and study records.
"""

from deepnet.search.results import TrialRow, cv_results, ranked, write_csv
from deepnet.search.runner import SearchOutcome, run_search
from deepnet.search.space import Space, loguniform, randint, uniform
from deepnet.search.spec import SearchSpec
from deepnet.search.strategies import STRATEGIES, Stage

__all__ = [
    "STRATEGIES",
    "SearchOutcome",
    "SearchSpec",
    "Space",
    "Stage",
    "TrialRow",
    "cv_results",
    "loguniform",
    "randint",
    "ranked",
    "run_search",
    "uniform",
    "write_csv",
]
