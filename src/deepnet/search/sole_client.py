"""Optuna's cached RDB storage for a study that one process alone writes: the driver's.

deepnet's search driver is the only Optuna client of its study while it runs (workers never
touch it; ``results``, ``report`` and ``dashboard`` only read). Optuna's own cache cannot
know that, so every read (each ask, and each pruning decision, which reads the whole study)
re-reads every unfinished trial from the database: about 70% of the driver's time, and
what bounded how many workers one driver kept busy. Here the study is read from the
database once; after that each write goes to the database as before and is mirrored into
the cached trial, and reads are served from memory. The study on disk is the same.
"""

from __future__ import annotations

import copy
import datetime
from collections.abc import Callable, Sequence
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.storages import RDBStorage
from optuna.storages._cached_storage import _CachedStorage
from optuna.trial import FrozenTrial, TrialState


class SoleClientStorage(_CachedStorage):
    """An RDB storage whose studies no other process writes while this one holds them."""

    def __init__(self, backend: RDBStorage) -> None:
        super().__init__(backend)
        self._read_once: set[int] = set()  # study ids read from the database

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
        super().set_trial_param(trial_id, param_name, param_value_internal, distribution)
        value = distribution.to_external_repr(param_value_internal)

        def update(t: FrozenTrial) -> None:
            t._params = {**t._params, param_name: value}
            t._distributions = {**t._distributions, param_name: distribution}

        self._mirror(trial_id, update)

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
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
        super().set_trial_intermediate_value(trial_id, step, intermediate_value)
        self._mirror(
            trial_id,
            lambda t: setattr(
                t, "intermediate_values", {**t.intermediate_values, step: intermediate_value}
            ),
        )

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        super().set_trial_user_attr(trial_id, key, value)
        self._mirror(trial_id, lambda t: setattr(t, "_user_attrs", {**t._user_attrs, key: value}))

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        super().set_trial_system_attr(trial_id, key, value)
        self._mirror(
            trial_id, lambda t: setattr(t, "_system_attrs", {**t._system_attrs, key: value})
        )

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
