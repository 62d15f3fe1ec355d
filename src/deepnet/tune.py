"""A search run end to end: claim the run folder, search (or resume), refit the best
configuration on the whole training split, evaluate it once on the test split.

This is the core that ``deepnet search`` runs. The test split is touched only by the refit
model's single evaluation, after every choice has been made on validation folds.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna

from deepnet import runs
from deepnet.data import Dataset
from deepnet.errors import RunExistsError, RunFormatError, SearchError
from deepnet.runs import SavedRun, load_run
from deepnet.search import SearchOutcome, SearchSpec, run_search, write_csv
from deepnet.search.driver import OnTrial
from deepnet.search.results import TrialRow, ranked, trial_rows
from deepnet.search.runner import stage_study_name
from deepnet.train import data_info, train

SEARCH_FILE, STUDY_FILE, RESULTS_FILE, REFIT_DIR = (
    "search.json",
    "study.db",
    "results.csv",
    "refit",
)


@dataclass(frozen=True)
class TuneResult:
    outcome: SearchOutcome
    refit: SavedRun | None  # the refit run folder, read back; None without refit
    run_dir: Path


def default_search_dir(spec: SearchSpec, dataset: Dataset, root: Path = Path("runs")) -> Path:
    """runs/search-STRATEGY-HASH: the same command maps to the same folder, so it resumes."""
    strategies = "+".join(s.strategy for s in spec.stages)
    return root / f"search-{strategies}-{spec.fingerprint(_data_key(dataset))}"


def claim_search_dir(run_dir: Path, record: dict[str, Any]) -> bool:
    """Create the run folder, or accept it for resuming; True when resuming.

    A folder holding another search, or anything that is not a search, is refused.
    """
    search_file = run_dir / SEARCH_FILE
    if search_file.is_file():
        saved = runs.read_json(search_file)
        if _identity(saved) != _identity(record):
            raise RunExistsError(
                f"run folder {run_dir} holds a different search (other space, strategy, folds, "
                "seed or data); deepnet will not mix them. Choose another --out, or delete it."
            )
        return True
    runs.start_run(run_dir, "search")
    runs.write_json(run_dir / SEARCH_FILE, record)
    return False


def tune(
    spec: SearchSpec,
    dataset: Dataset,
    run_dir: Path,
    *,
    storage: str | None = None,
    study_name: str | None = None,
    n_jobs: int | None = -1,
    refit: bool = True,
    data_path: str | Path | None = None,
    on_trial: OnTrial | None = None,
    on_refit_epoch: Callable | None = None,
) -> TuneResult:
    """Run or resume the search in ``run_dir``; then refit and test the best configuration."""
    given_storage, storage = storage, storage or default_storage(run_dir)
    study_name = study_name or run_dir.name
    info = data_info(dataset, data_path)
    record = {
        "spec": spec.to_json(),
        "data": _data_key(dataset),
        "storage": given_storage,  # None: RUN/study.db, wherever the folder moves
        "study_name": study_name,
        "data_info": asdict(info),
    }
    claim_search_dir(run_dir, record)
    runs.mark_run(run_dir, "running")
    try:
        outcome = run_search(
            spec,
            dataset.x_train,
            dataset.y_train,
            dataset.n_classes,
            storage=storage,
            study_name=study_name,
            data=_data_key(dataset),
            n_jobs=n_jobs,
            on_trial=on_trial,
        )
    except BaseException as exc:
        runs.mark_run(run_dir, "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed")
        raise
    write_csv(outcome.rows, run_dir / RESULTS_FILE)
    refit_run = None
    if refit:
        refit_dir = run_dir / REFIT_DIR
        if _finished(refit_dir) and load_run(refit_dir).config == outcome.best_config:
            refit_run = load_run(refit_dir)  # resumed after the refit: nothing to redo
        else:
            if refit_dir.exists():  # an unfinished refit: start it again
                shutil.rmtree(refit_dir)
            train(
                outcome.best_config,
                dataset,
                seed=spec.seed,
                validation_split=0.0,
                run_dir=refit_dir,
                data_path=data_path,
                on_epoch=on_refit_epoch,
            )
            refit_run = load_run(refit_dir)
    runs.finish_run(run_dir, "finished", outcome.seconds)
    return TuneResult(outcome, refit_run, run_dir)


def _finished(path: Path) -> bool:
    run_file = path / runs.RUN_FILE
    return run_file.is_file() and runs.read_json(run_file).get("status") == "finished"


def _data_key(dataset: Dataset) -> dict[str, Any]:
    return {
        "name": dataset.name,
        "classes": list(dataset.classes),
        "n_train": len(dataset.y_train),
    }


def _identity(record: dict[str, Any]) -> str:
    return json.dumps({k: record[k] for k in ("spec", "data")}, sort_keys=True)


@dataclass(frozen=True)
class SavedSearch:
    """A search run folder read back: its record, every trial so far, and the refit."""

    run_dir: Path
    record: dict[str, Any]
    status: str
    rows: list[TrialRow]
    refit: SavedRun | None

    @property
    def spec(self) -> SearchSpec:
        return SearchSpec.from_mapping(self.record["spec"])


def load_search(run_dir: str | Path) -> SavedSearch:
    """Read a search run folder and its studies (works while the search is still running)."""
    run_dir = Path(run_dir)
    if not (run_dir / SEARCH_FILE).is_file():
        raise RunFormatError(
            f"{run_dir} is not a search run folder: it has no {SEARCH_FILE}. Pass the folder "
            "that `deepnet search` printed."
        )
    record = runs.read_json(run_dir / SEARCH_FILE)
    status = runs.read_json(run_dir / runs.RUN_FILE).get("status", "unknown")
    n_stages = len(record["spec"]["stages"])
    storage = record["storage"] or default_storage(run_dir)
    names = optuna_study_names(storage)
    rows: list[TrialRow] = []
    for i in range(n_stages):
        name = stage_study_name(record["study_name"], i, n_stages)
        if name in names:
            study = optuna.load_study(study_name=name, storage=storage)
            rows += trial_rows(study, i)
    refit_dir = run_dir / REFIT_DIR
    refit = load_run(refit_dir) if _finished(refit_dir) else None
    return SavedSearch(run_dir, record, status, ranked(rows), refit)


def default_storage(run_dir: Path) -> str:
    return f"sqlite:///{(run_dir / STUDY_FILE).resolve()}"


def optuna_study_names(storage: str) -> set[str]:
    try:
        return set(optuna.study.get_all_study_names(storage))
    except Exception as exc:  # the storage may be a server that is down
        raise SearchError(f"cannot open the study storage {storage!r}: {exc}.") from exc
