"""deepnet: find the best small convolutional network for an image-classification task.

The public Python API, re-exported here in one place::

    from deepnet import TrainConfig, load_dataset, train
    data = load_dataset("mnist", classes=(2, 7))
    result = train(TrainConfig(optimizer="Nadam", neurons=30), data)
    print(result.metrics.accuracy)

    from deepnet import DeepNetClassifier, GridSearchCV
    search = GridSearchCV(DeepNetClassifier(), {"optimizer": ["Adam", "Nadam"]}, n_jobs=-1)
"""

from deepnet.config import PARAMS, TrainConfig
from deepnet.data import Dataset, holdout_split, load_dataset, stratified_folds
from deepnet.engine import EpochResult, Member, PopulationEngine, SequentialEngine, Status
from deepnet.errors import (
    ConfigError,
    DataError,
    DeepNetError,
    DivergedError,
    RunExistsError,
    RunFormatError,
    SearchError,
)
from deepnet.estimator import DeepNetClassifier
from deepnet.evaluate import TestMetrics, evaluate, wilson_interval
from deepnet.model_selection import GridSearchCV, RandomizedSearchCV
from deepnet.runs import SavedRun, load_run
from deepnet.search import (
    SearchOutcome,
    SearchSpec,
    Space,
    Stage,
    loguniform,
    randint,
    run_search,
    uniform,
)
from deepnet.train import TrainResult, train
from deepnet.tune import SavedSearch, TuneResult, load_search, tune

__version__ = "0.1.0"

__all__ = [
    "PARAMS",
    "ConfigError",
    "DataError",
    "Dataset",
    "DeepNetClassifier",
    "DeepNetError",
    "DivergedError",
    "EpochResult",
    "GridSearchCV",
    "Member",
    "PopulationEngine",
    "RandomizedSearchCV",
    "RunExistsError",
    "RunFormatError",
    "SavedRun",
    "SavedSearch",
    "SearchError",
    "SearchOutcome",
    "SearchSpec",
    "SequentialEngine",
    "Space",
    "Stage",
    "Status",
    "TestMetrics",
    "TrainConfig",
    "TrainResult",
    "TuneResult",
    "evaluate",
    "holdout_split",
    "load_dataset",
    "load_run",
    "load_search",
    "loguniform",
    "randint",
    "run_search",
    "stratified_folds",
    "train",
    "tune",
    "uniform",
    "wilson_interval",
]
