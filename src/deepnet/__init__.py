"""deepnet: find the best small convolutional network for an image-classification task.

The public Python API, re-exported here in one place::

    from deepnet import TrainConfig, load_dataset, train
    data = load_dataset("mnist", classes=(2, 7))
    result = train(TrainConfig(optimizer="Nadam", neurons=30), data)
    print(result.metrics.accuracy)

    from deepnet import DeepNetClassifier, GridSearchCV
    search = GridSearchCV(DeepNetClassifier(), {"optimizer": ["Adam", "Nadam"]}, n_jobs=-1)

Each name is imported from its module on first use, so that ``import deepnet`` (and the
``deepnet`` command, and every worker process it starts) loads torch, Optuna and
scikit-learn only when something needs them. The errors are plain Python: imported at once.
Three modules share their name with the function they hold (``train``, ``evaluate``,
``tune``): ``deepnet.train`` is the function, whichever was imported first.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from typing import Any

# After each parallel operation torch's OpenMP threads spin, by default, waiting for the next;
# the engine's C kernels run on threads of their own right after, and the spinning took their
# cores (one member on two threads: 1.3x one thread spinning, 1.8x with passive waiting; see
# docs/architecture.md). Set before anything loads torch (its OpenMP reads it then), and only
# where nobody chose otherwise; worker processes inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from deepnet.errors import ConfigError as ConfigError
from deepnet.errors import DataError as DataError
from deepnet.errors import DeepNetError as DeepNetError
from deepnet.errors import DeviceMemoryError as DeviceMemoryError
from deepnet.errors import DiskFullError as DiskFullError
from deepnet.errors import DivergedError as DivergedError
from deepnet.errors import RunBusyError as RunBusyError
from deepnet.errors import RunExistsError as RunExistsError
from deepnet.errors import RunFormatError as RunFormatError
from deepnet.errors import SearchError as SearchError

__version__ = "0.1.0"

_MODULE_OF = {
    "PARAMS": "deepnet.config",
    "TrainConfig": "deepnet.config",
    "Dataset": "deepnet.data",
    "LoadOptions": "deepnet.data",
    "Preprocessing": "deepnet.data",
    "holdout_split": "deepnet.data",
    "load_dataset": "deepnet.data",
    "read_images": "deepnet.data",
    "stratified_folds": "deepnet.data",
    "EpochResult": "deepnet.engine",
    "Member": "deepnet.engine",
    "PopulationEngine": "deepnet.engine",
    "SequentialEngine": "deepnet.engine",
    "Status": "deepnet.engine",
    "DeepNetClassifier": "deepnet.estimator",
    "EnsemblePlan": "deepnet.ensemble",
    "fit_ensemble": "deepnet.ensemble",
    "NotFittedError": "deepnet.estimator",
    "TestMetrics": "deepnet.evaluate",
    "ExportFormat": "deepnet.export",
    "export_run": "deepnet.export",
    "evaluate": "deepnet.evaluate",
    "wilson_interval": "deepnet.evaluate",
    "GridSearchCV": "deepnet.model_selection",
    "RandomizedSearchCV": "deepnet.model_selection",
    "Predictions": "deepnet.predict",
    "SavedRun": "deepnet.runs",
    "load_run": "deepnet.runs",
    "Executor": "deepnet.search",
    "SearchOutcome": "deepnet.search",
    "SearchSpec": "deepnet.search",
    "Space": "deepnet.search",
    "Stage": "deepnet.search",
    "loguniform": "deepnet.search",
    "randint": "deepnet.search",
    "run_search": "deepnet.search",
    "uniform": "deepnet.search",
    "EnsembleResult": "deepnet.train",
    "TrainResult": "deepnet.train",
    "train": "deepnet.train",
    "train_ensemble": "deepnet.train",
    "SavedSearch": "deepnet.tune",
    "TuneResult": "deepnet.tune",
    "load_search": "deepnet.tune",
    "tune": "deepnet.tune",
}

__all__ = sorted(
    [
        "ConfigError",
        "DataError",
        "DeepNetError",
        "DeviceMemoryError",
        "DiskFullError",
        "DivergedError",
        "RunBusyError",
        "RunExistsError",
        "RunFormatError",
        "SearchError",
        *_MODULE_OF,
    ]
)


class _Package(types.ModuleType):
    """deepnet's module type: importing the submodule deepnet.train binds the package's name
    ``train`` to the function, as the import system would otherwise bind the module."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and value.__name__ == _MODULE_OF.get(name):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    """Import a public name from its module the first time it is asked for."""
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'deepnet' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # asked once: later reads are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
