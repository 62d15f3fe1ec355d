"""Data: loading sources, class selection, and cross-validation splits."""

from deepnet.data.dataset import Dataset
from deepnet.data.folds import holdout_split, stratified_folds
from deepnet.data.sources import DATASETS, cache_dir, load_dataset, mnist_cache_state

__all__ = [
    "DATASETS",
    "Dataset",
    "cache_dir",
    "holdout_split",
    "load_dataset",
    "mnist_cache_state",
    "stratified_folds",
]
