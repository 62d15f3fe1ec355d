"""Exception hierarchy: every error deepnet raises on bad input derives from DeepNetError.

Each also inherits the built-in type a Python or scikit-learn user would catch, so
``except ValueError`` keeps working. Messages name the rule, the bad value and the fix.
"""

from __future__ import annotations


class DeepNetError(Exception):
    """Base class of every error deepnet raises on purpose."""


class ConfigError(DeepNetError, ValueError):
    """A hyperparameter or option is unknown, of the wrong type, or out of range."""


class DataError(DeepNetError, ValueError):
    """A data source is missing, unreadable, corrupt, or selects nothing."""


class RunExistsError(DeepNetError, FileExistsError):
    """A run folder already holds a run and would be overwritten."""


class RunFormatError(DeepNetError, ValueError):
    """A run folder is missing files or was written in a format this version cannot read."""


class SearchError(DeepNetError, RuntimeError):
    """A search cannot start or cannot go on: storage, study mismatch, every trial failed."""


class DivergedError(DeepNetError, FloatingPointError):
    """Training produced a non-finite loss or weights."""


class RunBusyError(RunExistsError):
    """Another process is running in the run folder; one process writes a folder at a time."""


class DiskFullError(DeepNetError, OSError):
    """The disk filled up while a run was being written; what was finished is kept."""


class DeviceMemoryError(DeepNetError, MemoryError):
    """A GPU ran out of memory while a population trained on it."""
