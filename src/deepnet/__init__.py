"""deepnet: find the best small convolutional network for an image-classification task.

The public Python API, re-exported here in one place::

    from deepnet import TrainConfig, load_dataset, train
    data = load_dataset("mnist", classes=(2, 7))
    result = train(TrainConfig(optimizer="Nadam", neurons=30), data)
    print(result.metrics.accuracy)
"""

from deepnet.config import PARAMS, TrainConfig
from deepnet.data import Dataset, holdout_split, load_dataset, stratified_folds
from deepnet.engine import EpochResult, Member, SequentialEngine, Status
from deepnet.errors import ConfigError, DataError, DeepNetError, RunExistsError, RunFormatError
from deepnet.evaluate import TestMetrics, evaluate, wilson_interval
from deepnet.runs import SavedRun, load_run
from deepnet.train import TrainResult, train

__version__ = "0.1.0"

__all__ = [
    "PARAMS",
    "ConfigError",
    "DataError",
    "Dataset",
    "DeepNetError",
    "EpochResult",
    "Member",
    "RunExistsError",
    "RunFormatError",
    "SavedRun",
    "SequentialEngine",
    "Status",
    "TestMetrics",
    "TrainConfig",
    "TrainResult",
    "evaluate",
    "holdout_split",
    "load_dataset",
    "load_run",
    "stratified_folds",
    "train",
    "wilson_interval",
]
