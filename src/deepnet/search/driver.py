"""The search loop of one stage: Optuna trials in, cross-validated members out, results back.

Each trial is trained as k members (one per fold) in lockstep on one worker. After every
epoch the driver reports the mean validation accuracy over the folds to the trial, and
stops all of a trial's members when the pruner says so. A trial's score is the mean final
validation accuracy over its folds. Only this module talks to Optuna while training runs.

The workers advance in rounds of one epoch and the driver reads each round in a fixed
worker order, so a search with the same seed and the same number of workers makes the same
pruning decisions and ends with the same table, however the processes are scheduled.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from deepnet.config import TrainConfig
from deepnet.data.folds import Split
from deepnet.engine import EpochResult, Member, Status
from deepnet.errors import SearchError
from deepnet.search.executor import Worker, WorkerCrashError
from deepnet.search.strategies import Stage

OnTrial = Callable[[FrozenTrial], None]
HISTORY_FIELDS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds")


@dataclass
class _TrialRun:
    """A trial while its fold members train."""

    trial: optuna.Trial
    config: TrainConfig
    n_folds: int
    history: dict[int, list[EpochResult]] = field(default_factory=dict)

    def members(self, folds: Sequence[Split], seed: int) -> list[Member]:
        return [
            Member(f"{self.trial.number}/{i}", self.config, train, val, seed + i)
            for i, (train, val) in enumerate(folds)
        ]

    def record(self, results: list[EpochResult]) -> TrialState | None:
        """Take one lockstep round; return the trial's final state once it has one."""
        for r in results:
            self.history.setdefault(int(r.key.split("/")[1]), []).append(r)
        diverged = [r for r in results if r.status is Status.DIVERGED]
        if diverged:
            return self.fail(f"fold {diverged[0].key.split('/')[1]} diverged: {diverged[0].reason}")
        epoch = results[0].epoch
        self.trial.report(statistics.fmean(r.val_accuracy for r in results), epoch)
        if all(r.status is Status.FINISHED for r in results):
            return TrialState.COMPLETE
        if self.trial.should_prune():
            self.trial.set_user_attr("pruned_at_epoch", epoch)
            return TrialState.PRUNED
        return None

    def fail(self, reason: str) -> TrialState:
        self.trial.set_user_attr("reason", reason)
        return TrialState.FAIL

    def save(self, state: TrialState) -> float | None:
        """Store histories on the trial, and fold scores if it completed; return its score."""
        t = self.trial
        t.set_user_attr("epochs_trained", max((len(h) for h in self.history.values()), default=0))
        t.set_user_attr("seconds", sum(r.seconds for h in self.history.values() for r in h))
        t.set_user_attr(
            "history",
            {
                str(fold): [[getattr(r, f) for f in HISTORY_FIELDS] for r in h]
                for fold, h in sorted(self.history.items())
            },
        )
        if state is not TrialState.COMPLETE:
            return None
        finals = [h[-1].val_accuracy for _, h in sorted(self.history.items())]
        t.set_user_attr("fold_scores", finals)
        t.set_user_attr("std", float(np.std(finals)))
        return statistics.fmean(finals)


def run_stage(
    study: optuna.Study,
    stage: Stage,
    distributions: dict[str, BaseDistribution],
    folds: Sequence[Split],
    seed: int,
    workers: list[Worker],
    on_trial: OnTrial | None = None,
) -> None:
    """Run the stage's trials until its queue (or, for TPE, its n_iter) is used up."""
    idle, busy = list(workers), {}

    def next_trial() -> optuna.Trial | None:
        if stage.adaptive:
            counted = [
                t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("interrupted")
            ]
            if len(counted) >= stage.n_iter:
                return None
        elif not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            return None
        return study.ask(distributions)

    def finish(run: _TrialRun, state: TrialState) -> None:
        score = run.save(state)
        if state is TrialState.COMPLETE:
            frozen = study.tell(run.trial, score)
        else:
            frozen = study.tell(run.trial, state=state)
        if on_trial:
            on_trial(frozen)

    try:
        while True:
            while idle and (trial := next_trial()) is not None:
                worker = idle.pop()
                config = TrainConfig.from_dict(trial.params)
                run = _TrialRun(trial, config, len(folds))
                worker.submit(run.members(folds, seed))
                worker.advance()
                busy[worker] = run
            if not busy:
                return
            # Every busy worker trains one epoch; rounds are read in worker order, so what the
            # pruner sees, and so every decision, never depends on which process is faster.
            for worker in list(busy):
                run = busy[worker]
                try:
                    state = run.record(worker.receive())
                except WorkerCrashError as exc:
                    state = run.fail(f"training crashed: {exc}")
                if state is None:
                    worker.advance()
                    continue
                del busy[worker]
                finish(run, state)
                if worker.alive():
                    idle.append(worker)
                else:  # a dead process is dropped; the others go on
                    workers.remove(worker)
                    worker.close()
                    if not workers:
                        raise SearchError(
                            "every worker process died (out of memory?); finished trials are "
                            "kept: rerun with --n-jobs 1 or a smaller batch size to resume."
                        )
    except BaseException:
        for run in busy.values():
            run.trial.set_user_attr("interrupted", True)
            run.fail("interrupted before it finished; it is retried when the search resumes")
            run.save(TrialState.FAIL)
            study.tell(run.trial, state=TrialState.FAIL)
        raise
