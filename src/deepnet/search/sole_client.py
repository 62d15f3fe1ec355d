"""Optuna's cached RDB storage for a study that one process alone writes: the driver's.

deepnet's search driver is the only Optuna client of its study while it runs (workers never
touch it; ``results``, ``report`` and ``dashboard`` only read). Optuna's own cache cannot
know that, so every read (each ask, and each pruning decision, which reads the whole study)
re-reads every unfinished trial from the database: about 70% of the driver's time, and
what bounded how many workers one driver kept busy. Here the study is read from the
database once; after that each write is mirrored into the cached trial, and reads are
served from memory.

Writes go to the database behind the cache, in batches: a trial's parameters, its reported
epochs and its attributes wait in memory and go in one transaction with everything else
waiting, before any trial's state changes and at least every ``FLUSH_SECONDS``. A trial is
therefore in the database whole before it is told finished (nothing finished is ever lost),
readers of a running search lag at most about that long, and the driver commits a few times
per trial instead of once per epoch and parameter. A driver killed outright loses only the
waiting writes of trials still running, which resuming retrains anyway.
"""

from __future__ import annotations

import copy
import datetime
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy
from optuna.distributions import (
    BaseDistribution,
    check_distribution_compatibility,
    distribution_to_json,
)
from optuna.storages import RDBStorage
from optuna.storages._cached_storage import _CachedStorage
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import FrozenTrial, TrialState

FLUSH_SECONDS = 1.0  # the longest a write waits in memory while trials keep running

AttrModel = type[models.TrialUserAttributeModel] | type[models.TrialSystemAttributeModel]


@dataclass
class _Waiting:
    """Writes not yet in the database, as the rows they become: one statement per table."""

    params: list[dict[str, Any]] = field(default_factory=list)
    intermediate_values: list[dict[str, Any]] = field(default_factory=list)
    attrs: dict[tuple[AttrModel, int, str], str] = field(default_factory=dict)  # -> value_json

    def __bool__(self) -> bool:
        return bool(self.params or self.intermediate_values or self.attrs)

    def write(self, session: Any) -> None:
        """Bulk statements (executemany), not an ORM query and flush per value."""
        if self.params:
            session.execute(sqlalchemy.insert(models.TrialParamModel.__table__), self.params)
        if self.intermediate_values:
            table = models.TrialIntermediateValueModel.__table__
            session.execute(sqlalchemy.insert(table), self.intermediate_values)
        by_model: dict[AttrModel, list[dict[str, Any]]] = {}
        for (model, trial_id, key), value_json in self.attrs.items():
            by_model.setdefault(model, []).append(
                {"trial_id": trial_id, "key": key, "value_json": value_json}
            )
        for model, rows in by_model.items():  # an upsert any database takes
            table = model.__table__
            session.execute(
                sqlalchemy.delete(table).where(
                    table.c.trial_id == sqlalchemy.bindparam("old_trial"),
                    table.c.key == sqlalchemy.bindparam("old_key"),
                ),
                [{"old_trial": r["trial_id"], "old_key": r["key"]} for r in rows],
            )
            session.execute(sqlalchemy.insert(table), rows)


class SoleClientStorage(_CachedStorage):
    """An RDB storage whose studies no other process writes while this one holds them."""

    def __init__(self, backend: RDBStorage, flush_seconds: float = FLUSH_SECONDS) -> None:
        super().__init__(backend)
        self._read_once: set[int] = set()  # study ids read from the database
        self._waiting = _Waiting()
        self._waiting_lock = threading.RLock()  # the cache's own lock is not re-entrant
        self._flush_seconds = flush_seconds
        self._flushed_at = time.monotonic()

    def flush(self) -> None:
        """Write everything waiting, in one transaction."""
        with self._waiting_lock:
            waiting, self._waiting = self._waiting, _Waiting()
            self._flushed_at = time.monotonic()
            if waiting:
                with _create_scoped_session(self._backend.scoped_session) as session:
                    waiting.write(session)

    def _defer(self, add: Callable[[_Waiting], None]) -> None:
        with self._waiting_lock:
            add(self._waiting)
            if time.monotonic() - self._flushed_at >= self._flush_seconds:
                self.flush()

    def _read_trials_from_remote_storage(self, study_id: int) -> None:
        if study_id not in self._read_once:
            super()._read_trials_from_remote_storage(study_id)
            self._read_once.add(study_id)

    def get_trial(self, trial_id: int) -> FrozenTrial:
        with self._lock:
            if trial_id in self._trial_id_to_study_id_and_number:
                study_id, number = self._trial_id_to_study_id_and_number[trial_id]
                return self._studies[study_id].trials[number]
        return self._backend.get_trial(trial_id)

    def set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: BaseDistribution,
    ) -> None:
        self._check_updatable(trial_id)
        with self._lock:
            study_id, _ = self._trial_id_to_study_id_and_number[trial_id]
            study = self._studies[study_id]
            known = study.param_distribution.get(param_name) or next(
                (
                    t.distributions[param_name]
                    for t in study.trials.values()
                    if param_name in t.distributions
                ),
                None,
            )
            if known is not None:  # as the database would check it
                check_distribution_compatibility(known, distribution)
            study.param_distribution.setdefault(param_name, distribution)
        row = {
            "trial_id": trial_id,
            "param_name": param_name,
            "param_value": param_value_internal,
            "distribution_json": distribution_to_json(distribution),
        }
        self._defer(lambda w: w.params.append(row))
        value = distribution.to_external_repr(param_value_internal)

        def update(t: FrozenTrial) -> None:
            t._params = {**t._params, param_name: value}
            t._distributions = {**t._distributions, param_name: distribution}

        self._mirror(trial_id, update)

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        self.flush()  # the trial whole in the database before its new state
        changed = super().set_trial_state_values(trial_id, state, values)
        if changed:
            now = datetime.datetime.now()

            def update(t: FrozenTrial) -> None:
                t.state = state
                if values is not None:
                    t._values = list(values)
                if state is TrialState.RUNNING and t._datetime_start is None:
                    t._datetime_start = now
                if state.is_finished():
                    t.datetime_complete = now

            self._mirror(trial_id, update)
        return changed

    def set_trial_intermediate_value(
        self, trial_id: int, step: int, intermediate_value: float
    ) -> None:
        self._check_updatable(trial_id)
        stored, kind = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(
            intermediate_value
        )
        row = {
            "trial_id": trial_id,
            "step": step,
            "intermediate_value": stored,
            "intermediate_value_type": kind,
        }
        self._defer(lambda w: w.intermediate_values.append(row))
        self._mirror(
            trial_id,
            lambda t: setattr(
                t, "intermediate_values", {**t.intermediate_values, step: intermediate_value}
            ),
        )

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._defer_attr(models.TrialUserAttributeModel, trial_id, key, value)
        self._mirror(trial_id, lambda t: setattr(t, "_user_attrs", {**t._user_attrs, key: value}))

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._defer_attr(models.TrialSystemAttributeModel, trial_id, key, value)
        self._mirror(
            trial_id, lambda t: setattr(t, "_system_attrs", {**t._system_attrs, key: value})
        )

    def _defer_attr(self, model: AttrModel, trial_id: int, key: str, value: Any) -> None:
        self._check_updatable(trial_id)
        value_json = json.dumps(value)
        self._defer(lambda w: w.attrs.__setitem__((model, trial_id, key), value_json))

    def _check_updatable(self, trial_id: int) -> None:
        """Refuse a write to a finished trial now, as the database would have."""
        trial = self.get_trial(trial_id)
        self._backend.check_trial_is_updatable(trial_id, trial.state)

    def _mirror(self, trial_id: int, update: Callable[[FrozenTrial], None]) -> None:
        """Apply a write to a new copy of the cached trial (lists handed out earlier keep
        the trial as it was, as a database read would have given it)."""
        with self._lock:
            if trial_id not in self._trial_id_to_study_id_and_number:
                return  # never read: a later read finds it in the database
            study_id, number = self._trial_id_to_study_id_and_number[trial_id]
            trials = self._studies[study_id].trials
            trial = copy.copy(trials[number])
            update(trial)
            trials[number] = trial
