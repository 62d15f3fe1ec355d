"""Opening, checking and resuming the Optuna study a stage lives in.

A study remembers what it is for (its spec: space, strategy, folds, seed, data) in a user
attribute, so reopening it with a different space is refused rather than mixed. Reopening
it with the same spec resumes: trials that were running when the process died (or were
interrupted) are failed, and a fixed stage's ``Queue`` holds every candidate that no trial
holds yet (those among them), so no finished trial is ever trained twice.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState

from deepnet.errors import SearchError
from deepnet.search.records import STUDY_SPEC, TrialRecord, trial_params
from deepnet.search.sole_client import SoleClientStorage
from deepnet.search.storage import open_storage, reason, redact

if TYPE_CHECKING:
    from deepnet.search.spec import Stage


def quiet_optuna() -> None:
    """Let Optuna log warnings only (not every study created and trial told): for the CLI,
    which prints its own progress. Importing deepnet leaves Optuna's level alone."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)


@contextmanager
def optuna_quieted() -> Iterator[None]:
    """Optuna logs warnings only while the block runs, then its level is restored: for the
    scikit-learn-style classes, which print their own progress (``verbose``)."""
    before = optuna.logging.get_verbosity()
    quiet_optuna()
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)


def open_study(
    storage: str | None,
    name: str,
    stage: Stage,
    spec: dict[str, Any],
    seed: int,
    max_epochs: int,
) -> optuna.Study:
    """Create or resume the study ``name`` in ``storage`` (None: a new in-memory study)."""
    pruner = stage.pruner(max_epochs)
    if storage is None:
        study = optuna.create_study(
            study_name=name, direction="maximize", sampler=stage.sampler(seed), pruner=pruner
        )
    else:
        study = _create_or_load(storage, name, stage, seed, pruner)
    stored = study.user_attrs.get(STUDY_SPEC)
    if stored is None:
        study.set_user_attr(STUDY_SPEC, spec)
    elif _canonical(stored) != _canonical(spec):
        raise SearchError(
            f"study {name!r} in {redact(storage)} already holds a search with a different spec "
            f"(space, strategy, folds, seed or data); deepnet will not mix the two. Its "
            f"space was {json.dumps(stored.get('stage', {}).get('space'))}. Use another "
            "--study-name or --out, or delete that study."
        )
    _recover(study)
    return study


def _create_or_load(
    storage: str, name: str, stage: Stage, seed: int, pruner: optuna.pruners.BasePruner
) -> optuna.Study:
    rdb = open_storage(storage)  # a clear SearchError for a bad, unreachable or refused URL
    try:
        resumed = name in {s.study_name for s in rdb.get_all_studies()}
        # TPE restarts its random stream after the trials it has seen, not at the start
        n_before = len(optuna.load_study(study_name=name, storage=rdb).trials) if resumed else 0
        return optuna.create_study(
            storage=SoleClientStorage(rdb),  # the driver alone writes its study
            study_name=name,
            direction="maximize",
            load_if_exists=True,
            sampler=stage.sampler(seed + n_before),
            pruner=pruner,
        )
    except Exception as exc:  # SQLAlchemy and its drivers raise many types
        raise SearchError(
            f"cannot open study {name!r} in {redact(storage)}: {type(exc).__name__}: "
            f"{reason(exc, storage)}. Check the server and the URL."
        ) from exc


def _recover(study: optuna.Study) -> None:
    """Fail the trials left running by a dead process (a Queue runs them again)."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        set_attr = functools.partial(study._storage.set_trial_user_attr, t._trial_id)
        TrialRecord(interrupted=True).write(set_attr)
        study.tell(t.number, state=TrialState.FAIL)


class Queue:
    """A fixed stage's configurations still to run, in order: trials already waiting in the
    study (a process died between queueing and asking one), then the candidates that no
    trial holds (interrupted trials hold none). Each is queued in the study just before it
    is asked: every read of a study re-reads all its waiting trials, so few should wait."""

    def __init__(self, study: optuna.Study, configs: list[dict[str, Any]]):
        self.study = study
        trials = study.get_trials(deepcopy=False)
        self.waiting = sum(t.state is TrialState.WAITING for t in trials)
        present = {
            _canonical(trial_params(t))
            for t in trials
            if not (t.state is TrialState.FAIL and TrialRecord.of(t).interrupted)
        }
        self.configs = []
        for config in configs:
            if (key := _canonical(config)) not in present:
                self.configs.append(config)
                present.add(key)

    def __len__(self) -> int:
        return self.waiting + len(self.configs)

    def ask(self, distributions: dict[str, BaseDistribution]) -> optuna.Trial | None:
        """The next configuration as a running trial; None when the queue is empty."""
        if self.waiting:
            self.waiting -= 1
        elif self.configs:
            self.study.enqueue_trial(self.configs.pop(0))
        else:
            return None
        return self.study.ask(distributions)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)
