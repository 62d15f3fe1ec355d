"""Run folders: everything a finished run leaves on disk, and reading it back.

    RUN/run.json            kind, status, format version, times
    RUN/config.json         hyperparameters, seed, validation split, dataset description
    RUN/history.csv|.json   one row per epoch: train/validation loss and accuracy, seconds
    RUN/model.safetensors   the weights (no pickle), absent if training diverged
    RUN/metrics.json        the one test evaluation: loss, accuracy, interval, confusion

Plots and reports read only these files, so they can be rebuilt without retraining.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from deepnet.config import TrainConfig
from deepnet.engine import EpochResult, Status
from deepnet.errors import RunExistsError, RunFormatError
from deepnet.evaluate import TestMetrics
from deepnet.nn import SeedNet

FORMAT = 1
RUN_FILE, CONFIG_FILE, MODEL_FILE = "run.json", "config.json", "model.safetensors"
HISTORY_CSV, HISTORY_JSON, METRICS_FILE = "history.csv", "history.json", "metrics.json"
MIN_FREE_BYTES = 50 * 10**6  # weights, histories and a study fit in far less
HISTORY_COLUMNS = [f.name for f in fields(EpochResult) if f.name not in ("key", "reason")]


@dataclass(frozen=True)
class DataInfo:
    """Which data a run used, enough to load the same test split again."""

    name: str
    classes: tuple[int, ...]
    class_names: tuple[str, ...]
    image_shape: tuple[int, int]
    source: str
    path: str | None = None


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

    Called before any training, so an unwritable or occupied folder costs nothing.
    """
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
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
        raise RunExistsError(
            f"cannot write the run folder {path}: {exc}. Choose a writable --out."
        ) from exc
    return path


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


def save_config(path: Path, config: TrainConfig, data: DataInfo, **options: Any) -> None:
    write_json(path / CONFIG_FILE, {"params": config.to_dict(), "data": asdict(data), **options})


def save_history(path: Path, history: list[EpochResult]) -> None:
    rows = [{c: getattr(r, c) for c in HISTORY_COLUMNS} for r in history]
    write_json(path / HISTORY_JSON, rows)
    with (path / HISTORY_CSV).open("w", newline="") as f:
        writer = csv.DictWriter(f, HISTORY_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def save_model(path: Path, model: SeedNet) -> None:
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(path / MODEL_FILE), metadata={"format": str(FORMAT)})


def save_metrics(path: Path, metrics: TestMetrics) -> None:
    write_json(path / METRICS_FILE, metrics.to_dict())


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

    @property
    def status(self) -> str:
        return self.info["status"]

    def model(self) -> SeedNet:
        """The saved network, rebuilt and loaded, in eval mode."""
        weights = self.path / MODEL_FILE
        if not weights.is_file():
            raise RunFormatError(
                f"{self.path} has no {MODEL_FILE} (the run is {self.status}); "
                "only a finished run has a model to load."
            )
        model = SeedNet(self.config, len(self.data.classes), self.data.image_shape)
        model.load_state_dict(load_file(str(weights)))
        return model.eval()


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
        raise RunFormatError(f"{path} has no {CONFIG_FILE}; the run did not get far enough.")
    saved = read_json(path / CONFIG_FILE)
    data = saved.pop("data")
    data = DataInfo(
        **{
            **data,
            "classes": tuple(data["classes"]),
            "class_names": tuple(data["class_names"]),
            "image_shape": tuple(data["image_shape"]),
        }
    )
    config = TrainConfig.from_dict(saved.pop("params"))
    history = read_json(path / HISTORY_JSON) if (path / HISTORY_JSON).is_file() else []
    metrics = (
        TestMetrics.from_dict(read_json(path / METRICS_FILE))
        if (path / METRICS_FILE).is_file()
        else None
    )
    return SavedRun(path, info, config, data, saved, history, metrics)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_json(path: Path, obj: Any) -> None:
    """Write atomically so a crash never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RunFormatError(f"cannot read {path}: {exc}.") from exc
