"""A search run end to end: lock and claim the run folder, search (or resume), refit the
best configuration on the whole training split (or as an ensemble, deepnet.ensemble),
evaluate it once on the test split.

This is the core that ``deepnet search`` runs. The test split is touched only by the refit
model's single evaluation, after every choice has been made on validation folds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import optuna
import sqlalchemy

from deepnet import lock, runs
from deepnet.config import TrainConfig
from deepnet.data import Dataset, stratified_folds
from deepnet.engine import Engine, PopulationEngine, kernels
from deepnet.engine.checkpoint import DEFAULT_EVERY, CheckpointPolicy
from deepnet.ensemble import EnsemblePlan
from deepnet.errors import ConfigError, RunExistsError, RunFormatError, SearchError
from deepnet.runs import SavedRun, load_run
from deepnet.search import SearchOutcome, SearchSpec, run_search, write_csv
from deepnet.search.driver import OnTrial
from deepnet.search.events import OnEvent
from deepnet.search.executor import Executor, ExecutorKind
from deepnet.search.results import TrialRow, ranked, trial_rows
from deepnet.search.runner import stage_study_name
from deepnet.search.storage import (
    ENV_VAR,
    open_storage,
    password,
    reason,
    redact,
    same_storage,
    storage_url,
)
from deepnet.train import data_info, train, train_ensemble

SEARCH_FILE, STUDY_FILE, RESULTS_FILE, REFIT_DIR, CHECKPOINTS_DIR = (
    "search.json",
    "study.db",
    "results.csv",
    "refit",
    "checkpoints",
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


def claim_search_dir(run_dir: Path, record: dict[str, Any], url: str | None) -> dict[str, Any]:
    """Create the search folder, or accept it for resuming; return the record in force.

    ``url`` is the storage asked for (None: RUN/study.db, or the recorded one when resuming);
    the record holds it redacted. A folder holding another search, or anything that is not
    a search, is refused, and so is resuming into another study than the recorded one (a
    second search that ``load_search`` would never read). A storage that cannot be opened
    is refused before anything is written.
    """
    search_file = run_dir / SEARCH_FILE
    if search_file.is_file():
        saved = runs.read_json(search_file)
        if _identity(saved) != _identity(record):
            raise RunExistsError(
                f"run folder {run_dir} holds a different search (other space, strategy, folds, "
                "seed or data); deepnet will not mix them. Choose another --out, or delete it."
            )
        _check_same_study(run_dir, saved, record["storage"], record["study_name"])
        reading_storage(study_storage(run_dir, saved["storage"], url))  # a deleted study?
        return saved
    record = {**record, "study_name": record["study_name"] or run_dir.name}
    if url is not None:  # refused before anything is written
        optuna_study_names(url, create=True)
    runs.start_run(run_dir, "search")
    try:
        if url is None:  # create RUN/study.db now: missing later, it was deleted
            optuna_study_names(default_storage(run_dir), create=True)
        runs.write_json(search_file, record)
    except BaseException:  # Ctrl-C or an error half-way: leave no folder that cannot resume
        _remove_claim(run_dir)
        raise
    return record


def _remove_claim(run_dir: Path) -> None:
    """Remove what a new search's claim wrote (nothing was trained yet)."""
    for name in (runs.RUN_FILE, SEARCH_FILE, STUDY_FILE, f"{STUDY_FILE}-wal", f"{STUDY_FILE}-shm"):
        (run_dir / name).unlink(missing_ok=True)


def _check_same_study(
    run_dir: Path, saved: dict[str, Any], storage: str | None, study_name: str | None
) -> None:
    """Refuse another storage or study name than recorded (both redacted)."""
    recorded = (saved["storage"] or redact(default_storage(run_dir)), saved["study_name"])
    asked = (storage or recorded[0], study_name or recorded[1])
    if asked != recorded:
        raise RunExistsError(
            f"run folder {run_dir} holds study {recorded[1]!r} in {recorded[0]}; this command "
            f"gives study {asked[1]!r} in {asked[0]}. Resuming there would start a second "
            "search that deepnet results never reads: leave out --storage and --study-name "
            f"(and ${ENV_VAR}), or give the recorded ones, or choose another --out."
        )


def study_storage(run_dir: Path, recorded: str | None, given: str | None = None) -> str:
    """The URL that opens a search's study: RUN/study.db when no storage was recorded, else
    the recorded one, whose password (never written down) comes from ``given`` or
    $DEEPNET_STORAGE."""
    if recorded is None:
        return default_storage(run_dir)
    given = storage_url(given)
    if given is not None and same_storage(given, recorded):
        return given
    if password(recorded) is not None:  # recorded as ***
        raise SearchError(
            f"the study of {run_dir} is in {recorded}, whose password deepnet never stores: "
            f"give the full URL with --storage, or set ${ENV_VAR} to it."
        )
    return recorded


def finished_trials(run_dir: Path) -> int:
    """How many trials a search folder has finished: what resuming it keeps (0 if new)."""
    if not (run_dir / SEARCH_FILE).is_file():
        return 0
    return sum(row.finished for row in load_search(run_dir).rows)


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
    executor: str | Executor = "local",
    on_event: OnEvent | None = None,
    checkpoint_every: float | None = None,
    checkpoint_dir: str | Path | None = None,
    ensemble: EnsemblePlan | int | str | None = None,
) -> TuneResult:
    """Run or resume the search in ``run_dir``; then refit and test the best configuration.

    The folder is locked for the whole run: a second process is refused, naming this one.
    SIGTERM stops the search as Ctrl-C does; both leave it interrupted, ready to resume.
    ``storage`` (default $DEEPNET_STORAGE, else RUN/study.db) and ``study_name`` (default
    the folder's name) are recorded, the storage's password never; resuming keeps them.
    ``executor`` and ``on_event``: as in run_search. Workers checkpoint their trials every
    ``checkpoint_every`` seconds of training (default 60), at an epoch boundary (0: every
    epoch; -1: never)
    in ``checkpoint_dir`` (default RUN/checkpoints; with Ray, a shared filesystem path that
    every node reaches), so an interrupted search resumes its trials mid-training.
    ``ensemble``: K (seeds) or "folds" refits the best configuration as an ensemble, held
    out from a validation share of the training images that chooses between the ensemble
    and its first member (deepnet.ensemble); None: ``spec.ensemble`` (None refits one
    network on every image).
    """
    checkpoints = checkpoint_policy(run_dir, checkpoint_every, checkpoint_dir)
    plan = _ensemble_plan(
        spec.ensemble if ensemble is None else ensemble, spec, dataset, refit, run_dir / REFIT_DIR
    )
    url = storage_url(storage)
    # refused before any claim
    folds = stratified_folds(dataset.y_train, spec.cv, spec.seed, dataset.class_names)
    data_key = _data_key(dataset)  # hashes a sample of the pixels: once
    record = {
        "spec": spec.to_json(),
        "data": data_key,
        "storage": redact(url),  # None: RUN/study.db, wherever the folder moves
        "study_name": study_name,
        "data_info": data_info(dataset, data_path).to_dict(),
    }
    with lock.hold(run_dir):
        record = claim_search_dir(run_dir, record, url)
        runs.mark_run(run_dir, "running")
        start = time.perf_counter()
        try:
            outcome = run_search(
                replace(spec, ensemble=None),  # the refit below trains the ensemble
                dataset.x_train,
                dataset.y_train,
                dataset.n_classes,
                storage=study_storage(run_dir, record["storage"], url),
                study_name=record["study_name"],
                data=data_key,
                n_jobs=n_jobs,
                folds=folds,
                on_trial=on_trial,
                executor=executor,
                on_event=on_event,
                checkpoints=checkpoints,
            )
            write_csv(outcome.rows, run_dir / RESULTS_FILE)
            refit_run = (
                _refit(
                    outcome,
                    dataset,
                    spec.seed,
                    run_dir / REFIT_DIR,
                    data_path,
                    on_refit_epoch,
                    plan,
                    _refit_engine(Executor.of(executor)),
                )
                if refit
                else None
            )
            runs.finish_run(run_dir, "finished", outcome.seconds)
        except BaseException as exc:
            runs.stop_run(
                run_dir,
                exc,
                time.perf_counter() - start,
                kept="the trials finished so far are kept in its study",
                then="run the same command again to resume",
            )
            raise
    return TuneResult(outcome, refit_run, run_dir)


def checkpoint_policy(
    run_dir: Path, every: float | None = None, directory: str | Path | None = None
) -> CheckpointPolicy | None:
    """Where and how often a search's workers checkpoint: ``every`` seconds (None: the
    default; 0: every epoch, -1: never) in ``directory``, default RUN/checkpoints."""
    if every is None:
        every = DEFAULT_EVERY
    if every == -1:
        return None
    if not every >= 0:  # also NaN
        raise ConfigError(
            f"checkpoint_every={every!r} is not allowed: give seconds >= 0 (0: every epoch), "
            "or -1 for no checkpoints."
        )
    folder = Path(directory) if directory else run_dir / CHECKPOINTS_DIR
    return CheckpointPolicy(folder.absolute(), every)  # a Ray actor has another cwd


def _ensemble_plan(
    ensemble: EnsemblePlan | int | str | None,
    spec: SearchSpec,
    dataset: Dataset,
    refit: bool,
    refit_dir: Path,
) -> EnsemblePlan | None:
    """The refit's ensemble plan, checked before the search: a bad value, a validation share
    the classes cannot hold, no refit to build it in, or a finished refit of another plan
    (which deepnet will not overwrite) are refused while nothing has been trained."""
    plan = None if ensemble is None else EnsemblePlan.parse(ensemble).for_cv(spec.cv)
    if not refit:
        if plan is not None:
            raise ConfigError(
                "an ensemble is built by the refit: drop --no-refit (refit=False), or "
                "leave out --ensemble."
            )
        return None
    if plan is not None:
        plan.members(TrainConfig(), dataset.y_train, spec.seed)
    if _finished(refit_dir):
        done = load_run(refit_dir).ensemble
        recorded = None if done is None else done.plan
        if recorded != plan:
            raise RunExistsError(
                f"{refit_dir} holds a finished refit with {_plan_text(recorded)}, but this "
                f"command asks for {_plan_text(plan)}; deepnet never overwrites it. Delete "
                f"{refit_dir} to refit again (the search is kept), or give the recorded "
                "--ensemble."
            )
    return plan


def _plan_text(plan: EnsemblePlan | None) -> str:
    if plan is None:
        return "no ensemble"
    return f"an ensemble of {plan.describe()} (validation share {plan.validation_share:g})"


def _refit(
    outcome: SearchOutcome,
    dataset: Dataset,
    seed: int,
    refit_dir: Path,
    data_path: str | Path | None,
    on_epoch: Callable | None,
    plan: EnsemblePlan | None = None,
    engine: Engine | None = None,
) -> SavedRun:
    """The best configuration trained on the whole training split (or ``plan``'s ensemble)
    and tested once, or the refit already finished before the search was resumed."""
    if _finished(refit_dir) and load_run(refit_dir).config == outcome.best_config:
        return load_run(refit_dir)  # resumed after the refit: nothing to redo
    if refit_dir.exists():  # an unfinished refit: start it again
        shutil.rmtree(refit_dir)
    if plan is not None:
        train_ensemble(
            outcome.best_config,
            dataset,
            plan,
            seed=seed,
            run_dir=refit_dir,
            data_path=data_path,
            on_epoch=on_epoch,
            engine=engine,
        )
        return load_run(refit_dir)
    train(
        outcome.best_config,
        dataset,
        seed=seed,
        validation_split=0.0,
        run_dir=refit_dir,
        data_path=data_path,
        on_epoch=on_epoch,
        engine=engine,
    )
    return load_run(refit_dir)


def _refit_engine(executor: Executor) -> Engine | None:
    """The refit's engine, in this process: on the search's device where the search ran on
    this machine (a Ray cluster's GPUs are not here), in the search's precision where this
    machine has it (None: the CPU's default, fp32)."""
    device = executor.device if executor.kind is ExecutorKind.LOCAL else "cpu"
    bf16 = executor.precision == "bf16" and device == "cpu" and kernels.bf16_products()
    if device == "cpu" and not bf16:
        return None
    return PopulationEngine(device=device, precision="bf16" if bf16 else "fp32")


def _finished(path: Path) -> bool:
    run_file = path / runs.RUN_FILE
    return run_file.is_file() and runs.read_json(run_file).get("status") == "finished"


def _data_key(dataset: Dataset) -> dict[str, Any]:
    """Which training images a search is on: a folder resumes only on the same ones (the
    digest covers every label and a sample of the pixels, wherever they were read from)."""
    x, y = dataset.x_train, dataset.y_train
    digest = hashlib.sha256(np.ascontiguousarray(y).tobytes())
    digest.update(np.ascontiguousarray(x[:: max(1, len(x) // 64)]).tobytes())
    return {
        "name": dataset.name,
        "classes": list(dataset.classes),
        "n_train": len(y),
        "image": [*dataset.image_shape, dataset.channels],
        "digest": digest.hexdigest()[:16],
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
    storage: str = field(repr=False, default="")  # the URL it was read from (may hold a password)

    @property
    def spec(self) -> SearchSpec:
        return SearchSpec.from_mapping(self.record["spec"])


def load_search(run_dir: str | Path, storage: str | None = None) -> SavedSearch:
    """Read a search run folder and its studies (works while the search is still running).

    ``storage``: the full URL of a recorded study server (default $DEEPNET_STORAGE), which
    a password-protected one needs."""
    run_dir = Path(run_dir)
    if not (run_dir / SEARCH_FILE).is_file():
        raise RunFormatError(
            f"{run_dir} is not a search run folder: it has no {SEARCH_FILE}. Pass the folder "
            "that `deepnet search` printed."
        )
    record = runs.read_json(run_dir / SEARCH_FILE)
    status = runs.read_json(run_dir / runs.RUN_FILE).get("status", "unknown")
    n_stages = len(record["spec"]["stages"])
    storage = reading_storage(study_storage(run_dir, record["storage"], storage))
    rdb = open_storage(storage, create=False)
    names = _study_names(rdb)
    rows: list[TrialRow] = []
    for i in range(n_stages):
        name = stage_study_name(record["study_name"], i, n_stages)
        if name in names:
            study = optuna.load_study(study_name=name, storage=rdb)
            rows += trial_rows(study, i)
    refit_dir = run_dir / REFIT_DIR
    refit = load_run(refit_dir) if _finished(refit_dir) else None
    return SavedSearch(run_dir, record, status, ranked(rows), refit, storage)


def default_storage(run_dir: Path) -> str:
    return f"sqlite:///{(run_dir / STUDY_FILE).resolve()}"


def reading_storage(storage: str) -> str:
    """``storage`` as a reader opens it: a missing SQLite file is never created (it was
    deleted or moved), and one in a folder this process cannot write is opened read-only."""
    try:
        url = sqlalchemy.engine.make_url(storage)
    except sqlalchemy.exc.ArgumentError:
        return storage  # optuna_study_names says what is wrong with it
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return storage
    if url.database.startswith("file:"):  # a URI the user wrote: opened as given
        return storage
    db = Path(url.database)
    if not db.is_file():
        raise RunFormatError(
            f"the study {db} is gone (deleted or moved): the trials of this search cannot be "
            "read. Put it back, or delete the run folder to search again."
        )
    if os.access(db.parent, os.W_OK):
        return storage
    # To read a database in WAL mode, SQLite creates STUDY-shm beside it. Without a
    # writer's STUDY-wal nothing can change it, so it is read as immutable; with one,
    # read-only, through the writer's STUDY-shm.
    mode = "mode=ro" if Path(f"{db}-wal").is_file() else "immutable=1"
    return f"sqlite:///file:{quote(str(db.resolve()))}?{mode}&uri=true"


def optuna_study_names(storage: str, create: bool = False) -> set[str]:
    """The studies in ``storage``; ``create`` makes Optuna's tables (a search does, once,
    before any worker starts), otherwise a reader never writes."""
    return _study_names(open_storage(storage, create=create))


def _study_names(rdb: optuna.storages.RDBStorage) -> set[str]:
    try:
        return {s.study_name for s in rdb.get_all_studies()}
    except Exception as exc:  # e.g. a database that holds no Optuna tables
        raise SearchError(
            f"cannot read the studies in {redact(rdb.url)}: {type(exc).__name__}: "
            f"{reason(exc, rdb.url)}. "
            "Give the storage the search used (e.g. sqlite:///runs/my-search/study.db)."
        ) from exc
