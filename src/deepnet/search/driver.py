"""The search loop of one stage: Optuna trials in, cross-validated members out, results back.

Each trial is trained as k members (one per fold) in lockstep on one worker, together with
the other trials of its batch as one population. After every epoch the driver reports the
mean validation accuracy over the folds to the trial, and stops all of a trial's members
when the pruner says so. A trial's score is the mean final validation accuracy over its
folds. Only this module talks to Optuna while training runs.

The workers advance in rounds of one epoch; the pool says in which order the driver reads
them (see Pool and RayPool). A trial's own result never depends on that order, only pruning
decisions can. A worker that is lost costs only its batch's open trials: they are stored as
interrupted (as after a crash, so nothing counts them) and their configurations are asked
again, to train on another worker: from scratch, or, with checkpoints, from the last epoch
its worker saved (the worker's first reply then replays the saved epochs, which are reported
to the new trial before the epochs it trains). The driver measures its own CPU time per
stage (DriverLoad): what bounds how many workers one driver can keep busy.
"""

from __future__ import annotations

import math
import statistics
import time
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
from deepnet.search.events import DriverLoad, OnEvent, TrialsResumed, WorkerLost
from deepnet.search.executor import Pool, Worker, WorkerCrashError, WorkerLostError
from deepnet.search.records import TrialRecord, encode_history
from deepnet.search.spec import Stage
from deepnet.search.strategies import shared_run_key
from deepnet.search.study import Queue

OnTrial = Callable[[FrozenTrial], None]


@dataclass
class _TrialRun:
    """A trial while its fold members train (members it may share with longer trials)."""

    trial: optuna.Trial
    config: TrainConfig
    history: dict[int, list[EpochResult]] = field(default_factory=dict)  # fold -> epochs
    state: TrialState | None = None
    reason: str = ""  # why it failed
    pruned_at_epoch: int | None = None

    def record(self, round_: dict[int, EpochResult]) -> TrialState | None:
        """Take one round of its folds' results (fold -> result); return the trial's final
        state once it has one."""
        for fold, r in round_.items():
            self.history.setdefault(fold, []).append(r)
        diverged = [(f, r) for f, r in sorted(round_.items()) if r.status is Status.DIVERGED]
        if diverged:
            fold, r = diverged[0]
            return self.fail(f"fold {fold} diverged: {r.reason}")
        epoch = next(iter(round_.values())).epoch
        self.trial.report(statistics.fmean(r.val_accuracy for r in round_.values()), epoch)
        if epoch >= self.config.epochs:
            return TrialState.COMPLETE
        if self.trial.should_prune():
            self.pruned_at_epoch = epoch
            return TrialState.PRUNED
        return None

    def fail(self, reason: str) -> TrialState:
        self.reason = reason
        return TrialState.FAIL

    def interrupt(self, study: optuna.Study, reason: str) -> None:
        """Store it as interrupted: failed, uncounted, and asked again (now or on resume)."""
        self.state, self.reason = TrialState.FAIL, reason
        self.save(TrialState.FAIL, interrupted=True)
        study.tell(self.trial, state=TrialState.FAIL)

    def save(self, state: TrialState, interrupted: bool = False) -> float | None:
        """Store the trial's record (histories; fold scores if it completed); return its
        score."""
        folds = [h for _, h in sorted(self.history.items())]
        finals = [h[-1].val_accuracy for h in folds] if state is TrialState.COMPLETE else []
        TrialRecord(
            epochs_trained=max(map(len, folds), default=0),
            seconds=sum(r.seconds for h in folds for r in h),
            history=encode_history(self.history),
            fold_scores=tuple(finals),
            std=float(np.std(finals)) if finals else None,
            reason=self.reason,
            pruned_at_epoch=self.pruned_at_epoch,
            interrupted=interrupted,
        ).write(self.trial.set_user_attr)
        return statistics.fmean(finals) if finals else None


@dataclass(frozen=True)
class _MemberOf:
    """Which shared run of its batch, and which fold, a member trains."""

    run: str
    fold: int


@dataclass
class _Batch:
    """The trials one worker trains together: one member per fold per shared run."""

    runs: dict[str, list[_TrialRun]] = field(default_factory=dict)  # run id -> its trials
    unstarted: dict[tuple, str] = field(default_factory=dict)  # shared_run_key -> run id
    started: int = 0  # runs handed out as members so far (the first ``started`` of runs)
    member_of: dict[str, _MemberOf] = field(default_factory=dict)  # member key -> its run

    def add(self, run: _TrialRun) -> None:
        """Add a trial to the unstarted run of an equal config, or to a new run."""
        key = shared_run_key(run.trial.params)
        rid = self.unstarted.setdefault(key, f"r{len(self.runs)}")
        self.runs.setdefault(rid, []).append(run)

    def members(self, folds: Sequence[Split], seed: int) -> list[Member]:
        """One member per fold for each run not handed out yet, trained for the longest of
        its trials' epochs. A trial added later never joins these runs."""
        out = []
        for rid, trials in list(self.runs.items())[self.started :]:
            epochs = max(t.config.epochs for t in trials)
            config = trials[0].config.replace(epochs=epochs)
            for i, (train, val) in enumerate(folds):
                member = Member(f"{rid}/{i}", config, train, val, seed + i, checkpoint=rid)
                self.member_of[member.key] = _MemberOf(rid, i)
                out.append(member)
        self.started = len(self.runs)
        self.unstarted.clear()
        return out

    def rounds(self, results: list[EpochResult]) -> dict[str, list[dict[int, EpochResult]]]:
        """A reply's results by run id, then epoch (in order), then fold. A reply holds one
        epoch per run, or, for a run resumed from a checkpoint at epoch k, epochs 1..k+1."""
        by_run: dict[str, dict[int, dict[int, EpochResult]]] = {}
        for r in results:
            of = self.member_of[r.key]
            by_run.setdefault(of.run, {}).setdefault(r.epoch, {})[of.fold] = r
        return {rid: [epochs[e] for e in sorted(epochs)] for rid, epochs in by_run.items()}

    def member_keys(self, runs: list[str]) -> list[str]:
        """The keys of these runs' members."""
        return [key for key, of in self.member_of.items() if of.run in runs]

    def open_trials(self) -> list[_TrialRun]:
        return [t for trials in self.runs.values() for t in trials if t.state is None]

    def finished_runs(self) -> list[str]:
        """Runs none of whose trials still wants epochs (their members can stop)."""
        return [rid for rid, trials in self.runs.items() if all(t.state for t in trials)]

    def training_runs(self) -> int:
        return len(self.runs) - len(self.finished_runs())


@dataclass
class _LoadMeter:
    """The driver's CPU time (all of its process's threads) since the stage began, and the
    trial-epochs and training seconds its workers delivered meanwhile."""

    start: float = field(default_factory=time.process_time)
    trial_epochs: int = 0
    training_seconds: float = 0.0

    def trained(self, results: list[EpochResult]) -> None:
        self.training_seconds += sum(r.seconds for r in results)

    def read(self) -> DriverLoad:
        seconds = time.process_time() - self.start
        return DriverLoad(seconds, self.trial_epochs, self.training_seconds)


def run_stage(
    study: optuna.Study,
    stage: Stage,
    distributions: dict[str, BaseDistribution],
    folds: Sequence[Split],
    seed: int,
    pool: Pool,
    on_trial: OnTrial | None = None,
    on_event: OnEvent | None = None,
    members_per_worker: int = 12,
) -> None:
    """Run the stage's trials until its queue (or, for TPE, its n_iter) is used up.

    Each idle worker gets a batch of trials (at most ``members_per_worker`` members: trials
    times folds, and an even share of the queue), trained together as a population. When
    pruning makes room for a trial in a batch, new trials join it, and its population.
    Trials that differ only in epochs share their members: the longer one reports the
    shorter one's result on the way.
    """
    workers = pool.workers
    idle, busy = list(workers), {}
    configs = stage.candidates(seed)
    queue = None if configs is None else Queue(study, configs)
    requeued: list[dict] = []  # configurations of trials whose worker was lost: asked first
    load = _LoadMeter()

    def next_trial() -> optuna.Trial | None:
        if requeued:
            study.enqueue_trial(requeued.pop(0))
            return study.ask(distributions)
        if queue is not None:
            return queue.ask(distributions)
        counted = [t for t in study.get_trials(deepcopy=False) if not TrialRecord.of(t).interrupted]
        return study.ask(distributions) if len(counted) < stage.n_iter else None

    def fill(batch: _Batch, members: int, sharers: int) -> bool:
        """Add trials to the batch for up to ``members`` more members (in a fixed queue,
        at most an even share of it among ``sharers`` workers); whether any were added."""
        runs = max(1, members // len(folds))
        if queue is not None:
            runs = min(runs, math.ceil((len(queue) + len(requeued)) / sharers))
        target = len(batch.runs) + runs
        added = False
        while len(batch.runs) < target and (trial := next_trial()):
            batch.add(_TrialRun(trial, TrainConfig.from_dict(trial.params)))
            added = True
        return added

    def finish(run: _TrialRun, state: TrialState) -> None:
        run.state = state
        score = run.save(state)
        if state is TrialState.COMPLETE:
            frozen = study.tell(run.trial, score)
        else:
            frozen = study.tell(run.trial, state=state)
        if on_trial:
            on_trial(frozen)

    def lose(worker: Worker, batch: _Batch, exc: WorkerLostError) -> None:
        """Re-queue the open trials of a lost worker's batch, and stop using the worker (so
        a trial that kills every worker it trains on ends the search, after n losses)."""
        again = batch.open_trials()
        for run in again:
            run.interrupt(study, f"its worker was lost ({exc}); re-queued")
            requeued.append(dict(run.trial.params))
        if on_event:
            on_event(WorkerLost(str(worker), str(exc), tuple(r.trial.number for r in again)))
        retire(worker, str(exc))

    def retire(worker: Worker, why: str) -> None:
        """Stop using a worker that is gone; none left is an error (the study is intact)."""
        pool.drop(worker)
        if not workers:
            raise SearchError(
                f"every worker is lost (the last: {why}); finished trials are kept in the "
                "study: run the same command again to resume."
            )

    try:
        while True:
            starting = []
            while idle and fill(batch := _Batch(), members_per_worker, len(idle)):
                worker = idle.pop()
                worker.submit(batch.members(folds, seed))
                busy[worker] = batch
                starting.append(worker)
            for worker in starting:  # once every new batch is placed: the cores are shared
                worker.advance(threads=pool.threads(len(busy)))
            if not busy:
                if on_event and not pool.in_driver:
                    on_event(load.read())
                return
            # Every busy worker trains one epoch; rounds are read in the pool's order.
            for worker in pool.arrivals(list(busy)):
                batch = busy[worker]
                try:
                    results = worker.receive()
                except WorkerLostError as exc:
                    del busy[worker]
                    lose(worker, batch, exc)
                    continue
                except WorkerCrashError as exc:
                    for run in batch.open_trials():
                        finish(run, run.fail(f"training crashed: {exc}"))
                    results = None
                if results is not None:
                    load.trained(results)
                    for rid, rounds in batch.rounds(results).items():
                        if len(rounds) > 1 and on_event:  # it replays a checkpoint's epochs
                            trials = tuple(t.trial.number for t in batch.runs[rid])
                            on_event(TrialsResumed(trials, len(rounds) - 1))
                        for round_ in rounds:
                            for run in batch.runs[rid]:
                                if run.state is None:
                                    load.trial_epochs += 1
                                    if (state := run.record(round_)) is not None:
                                        finish(run, state)
                    if batch.open_trials():
                        done = batch.finished_runs()
                        # pruning made room: new trials join the batch (and its population)
                        room = members_per_worker - batch.training_runs() * len(folds)
                        if room >= len(folds) and fill(batch, room, len(workers)):
                            worker.join(batch.members(folds, seed))
                        worker.advance(batch.member_keys(done), pool.threads(len(busy)))
                        continue
                del busy[worker]
                if worker.alive():
                    idle.append(worker)
                else:  # it died after its last round: nothing in flight is lost
                    retire(worker, f"{worker} exited")
    except BaseException:
        for batch in busy.values():
            for run in batch.open_trials():
                run.interrupt(
                    study, "interrupted before it finished; it is retried when the search resumes"
                )
        raise
