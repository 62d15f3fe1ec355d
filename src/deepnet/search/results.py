"""Search results read back from the studies: ranked rows, CSV, scikit-learn's cv_results_."""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from deepnet.search.records import History, TrialRecord, TrialStatus, trial_params

# ranked(): complete first, failed last
RANK_ORDER = (
    TrialStatus.COMPLETE,
    TrialStatus.PRUNED,
    TrialStatus.RUNNING,
    TrialStatus.WAITING,
    TrialStatus.FAILED,
)


@dataclass(frozen=True)
class TrialRow:
    """One trial of a search: its configuration, cross-validated score and cost."""

    stage: int
    number: int
    state: TrialStatus  # given as text ("complete", ...) it is converted
    score: float | None  # mean validation accuracy over the folds
    std: float | None
    fold_scores: tuple[float, ...]
    epochs: int  # epochs trained (fewer than configured when pruned)
    seconds: float  # training time summed over the folds
    params: dict[str, Any]
    reason: str = ""
    history: History | None = None  # fold -> per-epoch rows of HISTORY_FIELDS
    last_value: float | None = None  # the last mean validation accuracy reported (pruned)
    started_at: float | None = None  # POSIX times, for scores over time
    finished_at: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "state", TrialStatus(self.state))

    @property
    def finished(self) -> bool:
        return self.state.finished

    @property
    def ok(self) -> bool:
        return self.state is TrialStatus.COMPLETE and self.score is not None


def trial_rows(study: optuna.Study, stage: int = 0) -> list[TrialRow]:
    """Every trial of ``study`` except interrupted attempts that were retried."""
    return [
        row_of(t, stage)
        for t in study.get_trials(deepcopy=False)
        if not TrialRecord.of(t).interrupted
    ]


def row_of(t: FrozenTrial, stage: int = 0) -> TrialRow:
    record = TrialRecord.of(t)
    return TrialRow(
        stage=stage,
        number=t.number,
        state=TrialStatus.of(t.state),
        score=t.value if t.state is TrialState.COMPLETE else None,
        std=record.std,
        fold_scores=record.fold_scores,
        epochs=record.epochs_trained,
        seconds=record.seconds,
        params=trial_params(t),
        reason=record.reason,
        history=record.history,
        last_value=t.intermediate_values[max(t.intermediate_values)]
        if t.intermediate_values
        else None,
        started_at=t.datetime_start.timestamp() if t.datetime_start else None,
        finished_at=t.datetime_complete.timestamp() if t.datetime_complete else None,
    )


def ranked(rows: list[TrialRow]) -> list[TrialRow]:
    """Best first: complete trials by score (ties: smaller std), then pruned trials (those
    that got furthest first, then by their last score), then failed ones.

    Ties are broken by the parameters' text, so the order never depends on which trial
    happened to run first.
    """

    def key(r: TrialRow) -> tuple:
        return (
            RANK_ORDER.index(r.state),
            -(r.score or 0.0),
            r.std or 0.0,
            -r.epochs,
            -(r.last_value or 0.0),
            r.stage,
            json.dumps(r.params, sort_keys=True, default=str),
        )

    return sorted(rows, key=key)


def best(rows: list[TrialRow]) -> TrialRow | None:
    ok = ranked([r for r in rows if r.ok])
    return ok[0] if ok else None


def failure_summary(rows: list[TrialRow]) -> str:
    """The most common failure reasons, e.g. '3 x fold 0 diverged: ...'."""
    counts = Counter(r.reason or r.state for r in rows if not r.ok)
    return "; ".join(f"{n} x {reason}" for reason, n in counts.most_common(3))


def param_names(rows: list[TrialRow]) -> list[str]:
    names: dict[str, None] = {}
    for r in rows:
        names.update(dict.fromkeys(r.params))
    return list(names)


def searched_names(rows: list[TrialRow]) -> list[str]:
    """Parameters that took more than one value across the rows."""
    return [
        n
        for n in param_names(rows)
        if len({json.dumps(r.params.get(n), default=str) for r in rows}) > 1
    ]


def write_csv(rows: list[TrialRow], path: Path) -> None:
    """One line per trial, ranked, with fold scores and every parameter as columns."""
    rows = ranked(rows)
    folds = max((len(r.fold_scores) for r in rows), default=0)
    names = param_names(rows)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "rank",
                "stage",
                "trial",
                "state",
                "mean_cv_accuracy",
                "std",
                *(f"split{i}_accuracy" for i in range(folds)),
                "epochs_trained",
                "last_cv_accuracy",
                "seconds",
                *names,
                "reason",
            ]
        )
        for rank, r in enumerate(rows, 1):
            writer.writerow(
                [
                    rank,
                    r.stage,
                    r.number,
                    r.state.value,
                    _num(r.score),
                    _num(r.std),
                    *(_num(s) for s in r.fold_scores),
                    *[""] * (folds - len(r.fold_scores)),
                    r.epochs,
                    _num(r.last_value),
                    f"{r.seconds:.2f}",
                    *(r.params.get(n, "") for n in names),
                    r.reason,
                ]
            )


def _num(x: float | None) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.6f}"


def cv_results(rows: list[TrialRow], n_folds: int, names: list[str]) -> dict[str, Any]:
    """scikit-learn's ``cv_results_`` layout; pruned and failed trials score NaN."""
    scores = np.array([r.score if r.ok else np.nan for r in rows], dtype=float)
    results: dict[str, Any] = {
        "params": [{n: r.params[n] for n in names if n in r.params} for r in rows],
        "mean_test_score": scores,
        "std_test_score": np.array([r.std if r.ok else np.nan for r in rows], dtype=float),
        "mean_fit_time": np.array([r.seconds / max(n_folds, 1) for r in rows]),
        "epochs_trained": np.array([r.epochs for r in rows]),
        "state": np.array([r.state.value for r in rows], dtype=object),
    }
    for i in range(n_folds):
        results[f"split{i}_test_score"] = np.array(
            [r.fold_scores[i] if r.ok and i < len(r.fold_scores) else np.nan for r in rows]
        )
    order = np.argsort(-np.nan_to_num(scores, nan=-np.inf), kind="stable")
    rank = np.empty(len(rows), dtype=np.int32)
    rank[order] = np.arange(1, len(rows) + 1)
    results["rank_test_score"] = rank
    for n in names:
        column = np.ma.MaskedArray(np.empty(len(rows), dtype=object), mask=True)
        for i, r in enumerate(rows):
            if n in r.params:
                column[i] = r.params[n]
        results[f"param_{n}"] = column
    return results
