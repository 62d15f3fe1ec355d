"""Run folders: everything a finished run leaves on disk, and reading it back.

    RUN/run.json            kind, status, format version, times
    RUN/config.json         hyperparameters, seed, validation split, dataset description
    RUN/history.csv|.json   one row per epoch: train/validation loss and accuracy, seconds
    RUN/model.safetensors   the weights (no pickle), absent if training diverged
    RUN/metrics.json        the one test evaluation: loss, accuracy, interval, confusion
    RUN/ensemble.json       an ensemble refit only: its plan, members, the validation
                            decision and both models' test metrics (deepnet.ensemble);
                            each member is a train run folder in RUN/members/KEY
    RUN/lock.json           while a process runs in the folder: who (see deepnet.lock)

Plots and reports read only these files, so they can be rebuilt without retraining.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import os
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from deepnet.config import TrainConfig
from deepnet.data.options import LoadOptions, Preprocessing
from deepnet.engine import EpochResult, Status
from deepnet.ensemble import Choice, EnsembleNet, EnsembleRecord
from deepnet.errors import DataError, DiskFullError, RunExistsError, RunFormatError
from deepnet.evaluate import TestMetrics
from deepnet.nn import SeedNet

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from deepnet.data import Dataset
    from deepnet.predict import Predictions

FORMAT = 1
RUN_FILE, CONFIG_FILE, MODEL_FILE = "run.json", "config.json", "model.safetensors"
HISTORY_CSV, HISTORY_JSON, METRICS_FILE = "history.csv", "history.json", "metrics.json"
LOCK_FILE, ENSEMBLE_FILE, MEMBERS_DIR = "lock.json", "ensemble.json", "members"
MIN_FREE_BYTES = 50 * 10**6  # weights, histories and a study fit in far less
HISTORY_COLUMNS = [f.name for f in fields(EpochResult) if f.name not in ("key", "reason")]


@dataclass(frozen=True)
class DataInfo:
    """Which data a run used and how it was loaded: enough to load the same test split again
    and to give the network new images the way it was trained on them."""

    name: str
    classes: tuple[int, ...]
    class_names: tuple[str, ...]
    source: str
    path: str | None
    options: LoadOptions
    preprocessing: Preprocessing

    @property
    def image_shape(self) -> tuple[int, int]:
        return self.preprocessing.image_shape

    @property
    def channels(self) -> int:
        return self.preprocessing.channels

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "options": self.options.to_dict(),
            "preprocessing": self.preprocessing.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataInfo:
        """Read config.json's "data"; a run written before colour images (no options, no
        preprocessing) trained on grey images of its ``image_shape``, loaded as they were."""
        preprocessing = data.get("preprocessing") or {
            "image_shape": data["image_shape"],
            "channels": 1,
        }
        return cls(
            data["name"],
            tuple(data["classes"]),
            tuple(data["class_names"]),
            data["source"],
            data.get("path"),
            LoadOptions.from_dict(data.get("options") or {}),
            Preprocessing.from_dict(preprocessing),
        )

    def load(self, path: str | Path | None = None) -> Dataset:
        """The run's data again, from ``path`` if it has moved: the same classes, split and
        conversions. DataError if what the path holds now is not what the run trained on."""
        from deepnet.data import load_dataset  # the sources: only when data is asked for

        where = path or self.path
        dataset = load_dataset(self.name, list(self.classes), where, self.options)
        found = (dataset.class_names, dataset.preprocessing)
        if found != (self.class_names, self.preprocessing):
            data = f"the data at {where}" if where else f"the {self.name} data"
            raise DataError(
                f"{data} now holds {_describe(*found)}, but the run trained on "
                f"{_describe(self.class_names, self.preprocessing)}; pass the run's data "
                "(e.g. --path) as it was."
            )
        return dataset


def _describe(class_names: tuple[str, ...], preprocessing: Preprocessing) -> str:
    height, width = preprocessing.image_shape
    return (
        f"classes {', '.join(class_names)} in {height}x{width} images with "
        f"{preprocessing.channels} channel{'s' if preprocessing.channels > 1 else ''}"
    )


def default_run_dir(kind: str, root: Path = Path("runs")) -> Path:
    """runs/KIND-YYYYmmdd-HHMMSS, with a numeric suffix if that is taken."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path, n = root / f"{kind}-{stamp}", 1
    while path.exists():
        n += 1
        path = root / f"{kind}-{stamp}-{n}"
    return path


def start_run(path: Path, kind: str) -> Path:
    """Create the run folder and mark it running, refusing to reuse a non-empty folder.

    Called before any training, so an unwritable or occupied folder costs nothing. The
    lock file of the process claiming the folder does not count.
    """
    if path.exists() and (not path.is_dir() or any(p.name != LOCK_FILE for p in path.iterdir())):
        status = (
            read_json(path / RUN_FILE).get("status", "unknown")
            if (path / RUN_FILE).is_file()
            else "not a deepnet run"
        )
        raise RunExistsError(
            f"run folder {path} already exists ({status}); deepnet never overwrites a run. "
            "Choose another --out, or delete the folder first."
        )
    _check_free_space(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        write_json(
            path / RUN_FILE,
            {
                "format": FORMAT,
                "kind": kind,
                "status": Status.RUNNING.value,
                "started": _now(),
                "finished": None,
                "seconds": None,
            },
        )
    except OSError as exc:
        raise unwritable(path, exc) from exc
    return path


def unwritable(path: Path, exc: OSError) -> RunExistsError:
    return RunExistsError(f"cannot write the run folder {path}: {exc}. Choose a writable --out.")


def _check_free_space(path: Path) -> None:
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    free = shutil.disk_usage(existing).free
    if free < MIN_FREE_BYTES:
        raise RunExistsError(
            f"only {free // 10**6} MB free on the disk of {existing}; a run needs at least "
            f"{MIN_FREE_BYTES // 10**6} MB. Free some space or choose another --out."
        )


def mark_run(path: Path, status: str) -> None:
    """Set the run's status (running again on resume, interrupted, failed)."""
    info = read_json(path / RUN_FILE)
    write_json(path / RUN_FILE, {**info, "status": status})


def finish_run(path: Path, status: str, seconds: float) -> None:
    """Record how the run ended (finished, diverged, interrupted)."""
    info = read_json(path / RUN_FILE)
    write_json(path / RUN_FILE, {**info, "status": status, "finished": _now(), "seconds": seconds})


def stop_run(
    path: Path,
    exc: BaseException,
    seconds: float,
    *,
    kept: str,
    then: str,
    history: list[EpochResult] | None = None,
) -> None:
    """Record that the run stopped on ``exc``: interrupted (Ctrl-C, SIGTERM) or failed, with
    the ``history`` so far. A full disk, behind ``exc`` or met while recording, raises one
    DiskFullError instead, saying what was ``kept`` and what to do ``then``."""
    status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
    try:
        if history is not None:
            save_history(path, history)
        finish_run(path, status, seconds)
        full = is_disk_full(exc)
    except DiskFullError:
        full = True
    if full:
        raise DiskFullError(
            f"the disk holding {path} is full; {kept}. Free some space, then {then}."
        ) from exc


def save_config(path: Path, config: TrainConfig, data: DataInfo, **options: Any) -> None:
    write_json(path / CONFIG_FILE, {"params": config.to_dict(), "data": data.to_dict(), **options})


def save_history(path: Path, history: list[EpochResult]) -> None:
    rows = [{c: getattr(r, c) for c in HISTORY_COLUMNS} for r in history]
    write_json(path / HISTORY_JSON, rows)
    with replacing(path / HISTORY_CSV) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, HISTORY_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def save_model(path: Path, model: SeedNet) -> None:
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with replacing(path / MODEL_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"format": str(FORMAT)})


def save_metrics(path: Path, metrics: TestMetrics) -> None:
    write_json(path / METRICS_FILE, metrics.to_dict())


def save_ensemble(path: Path, record: EnsembleRecord) -> None:
    write_json(path / ENSEMBLE_FILE, record.to_dict())


@dataclass(frozen=True)
class SavedRun:
    """A run folder read back from disk."""

    path: Path
    info: dict[str, Any]
    config: TrainConfig
    data: DataInfo
    options: dict[str, Any]
    history: list[dict[str, Any]]
    metrics: TestMetrics | None

    ensemble: EnsembleRecord | None = None  # an ensemble refit; None for one network

    @property
    def status(self) -> str:
        return self.info["status"]

    def model(self) -> nn.Module:
        """The run's model, rebuilt, loaded and in eval mode: its network, or for an
        ensemble refit the model the validation share chose (the first member alone, or
        every member's averaged probabilities, an EnsembleNet)."""
        if self.ensemble is None:
            return self.network()
        if self.ensemble.choice is Choice.SINGLE or len(self.ensemble.members) < 2:
            return self.network()
        return EnsembleNet([run.network() for run in self.member_runs()]).eval()

    def network(self) -> SeedNet:
        """One network: this run's, or an ensemble's first member (the "single" model)."""
        if self.ensemble is not None:
            return self.first_member().network()
        weights = self.path / MODEL_FILE
        if not weights.is_file():
            raise RunFormatError(
                f"{self.path} has no {MODEL_FILE} (the run is {self.status}); "
                "only a finished run has a model to load."
            )
        model = SeedNet(
            self.config, len(self.data.classes), self.data.image_shape, channels=self.data.channels
        )
        try:
            model.load_state_dict(load_file(str(weights)))
        except (SafetensorError, RuntimeError, OSError) as exc:  # truncated, or not this net's
            raise damaged(weights, exc) from exc
        return model.eval()

    def first_member(self) -> SavedRun:
        """An ensemble's first member (the "single" model), or this run if it is none."""
        if self.ensemble is None:
            return self
        if not self.ensemble.members:
            raise RunFormatError(
                f"every member of the ensemble in {self.path} diverged (see its "
                f"{MEMBERS_DIR}/ folder): it has no model. Search again with a smaller "
                "learn_rate, or weight_constraint=3."
            )
        return load_run(self.path / self.ensemble.members[0])

    def member_runs(self) -> list[SavedRun]:
        """An ensemble's members that finished, each a train run folder, in member order
        (none for a run of one network)."""
        if self.ensemble is None:
            return []
        return [load_run(self.path / member) for member in self.ensemble.members]

    def predict(self, images: np.ndarray) -> Predictions:
        """Class probabilities of ``images`` (n, h, w, c) or (n, h, w), uint8 pixels or
        floats already scaled, given to the network as it was trained (see deepnet.predict)."""
        from deepnet.predict import predict_images

        return predict_images(self, images)


def load_run(path: str | Path) -> SavedRun:
    """Read a run folder; RunFormatError names what is missing or unreadable."""
    path = Path(path)
    if not (path / RUN_FILE).is_file():
        raise RunFormatError(
            f"{path} is not a deepnet run folder: it has no {RUN_FILE}. Pass the folder that "
            "`deepnet train` printed."
        )
    info = read_json(path / RUN_FILE)
    if info.get("format") != FORMAT:
        raise RunFormatError(
            f"{path} was written in run format {info.get('format')!r}; this deepnet reads "
            f"format {FORMAT}. Use the deepnet version that wrote it, or train again."
        )
    if not (path / CONFIG_FILE).is_file():
        if (path / "search.json").is_file():
            raise RunFormatError(
                f"{path} is a search run folder; its model is the refit of the best "
                f"configuration: use {path / 'refit'} (e.g. deepnet evaluate {path / 'refit'})."
            )
        raise RunFormatError(f"{path} has no {CONFIG_FILE}; the run did not get far enough.")
    saved = read_json(path / CONFIG_FILE)
    try:
        data = DataInfo.from_dict(saved.pop("data"))
        config = TrainConfig.from_dict(saved.pop("params"))
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise damaged(path / CONFIG_FILE, exc) from exc
    history = read_json(path / HISTORY_JSON) if (path / HISTORY_JSON).is_file() else []
    metrics = (
        TestMetrics.from_dict(read_json(path / METRICS_FILE))
        if (path / METRICS_FILE).is_file()
        else None
    )
    ensemble = None
    if (path / ENSEMBLE_FILE).is_file():
        try:
            ensemble = EnsembleRecord.from_dict(read_json(path / ENSEMBLE_FILE))
        except (KeyError, TypeError, ValueError) as exc:
            raise damaged(path / ENSEMBLE_FILE, exc) from exc
    return SavedRun(path, info, config, data, saved, history, metrics, ensemble)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def damaged(path: Path, exc: BaseException) -> RunFormatError:
    detail = f"no {exc}" if isinstance(exc, KeyError) else str(exc).splitlines()[0]
    return RunFormatError(
        f"{path} is damaged ({detail}): the run folder {path.parent} cannot be read. Train "
        "(or search) again into another --out."
    )


def write_json(path: Path, obj: Any) -> None:
    with replacing(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary path to write ``path``'s new content to. It replaces ``path`` only once
    complete and is removed if writing fails, so a crash or a full disk never leaves half a
    file, or a .tmp file, behind."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if is_disk_full(exc):
            raise DiskFullError(
                f"no space left to write {path} ({exc}); it keeps its previous content. Free "
                "some space, then run the same command again."
            ) from exc
        raise


_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}  # disk, quota, file size limit


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc``, or an error it was raised from, says that no space is left to write:
    an OSError, SQLite's SQLITE_FULL (through SQLAlchemy and Optuna), or safetensors' I/O."""
    while exc is not None:
        if isinstance(exc, DiskFullError) or (isinstance(exc, OSError) and exc.errno in _NO_SPACE):
            return True
        if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            return True
        if isinstance(exc, SafetensorError) and "No space left" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RunFormatError(f"cannot read {path}: {exc}.") from exc
