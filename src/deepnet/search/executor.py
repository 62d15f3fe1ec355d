"""Where populations train: in this process, in worker processes on the other cores, or in
actors on a Ray cluster (deepnet.search.ray_executor).

A worker trains one batch of members at a time (as populations, see deepnet.engine), one
lockstep epoch per request, and answers with that round's EpochResults; the search driver
reads the round, decides which members to stop (pruning), and asks for the next. The
driver never touches tensors and a worker never touches the study. Every kind of worker
(inline, process, Ray actor) offers the same calls:

    submit(members)      start a new batch (replacing the previous one)
    join(members)        add members to the batch; they start with the next round
    advance(stop)        stop these members, then train the others one more epoch
    receive()            that round's results (waits for them)
    alive()              whether the worker can take more work
    close()              stop it (a process exits at once, even mid-epoch)

A ``Pool`` holds a search's workers and says in which order the driver reads their rounds.
A worker that raises while training fails its trials (WorkerCrashError); a worker that is
lost (its process, actor or machine gone: WorkerLostError) costs only its in-flight trials,
which the driver trains again on the others.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import numpy as np

from deepnet.engine import EpochResult, Member, PopulationEngine, Training
from deepnet.engine.checkpoint import CheckpointPolicy, Checkpoints, data_fingerprint
from deepnet.engine.device import (
    CPU_FP32,
    Compute,
    Precision,
    check_precision,
    parse_device,
    parse_precision,
    resolve_device,
)
from deepnet.errors import ConfigError
from deepnet.search.events import WorkersStarted
from deepnet.search.protocol import Advance, Channel, Crash, Join, Load, Request, Submit


class Worker(Protocol):
    def submit(self, members: Sequence[Member]) -> None: ...
    def join(self, members: Sequence[Member]) -> None: ...
    def advance(self, stop: Sequence[str] = (), threads: int | None = None) -> None: ...
    def alive(self) -> bool: ...
    def receive(self) -> list[EpochResult]: ...
    def close(self) -> None: ...


class WorkerCrashError(RuntimeError):
    """A worker raised while training; the message is its exception."""


class WorkerLostError(RuntimeError):
    """A worker is gone (process died, actor or node lost); the message says which and why."""


class ExecutorKind(StrEnum):
    LOCAL = "local"  # this machine: one process per worker (or this process for one)
    RAY = "ray"  # one Ray actor per worker on the cluster's machines


@dataclass(frozen=True)
class Executor:
    """Where a search's workers run: ``Executor("local")``, or ``Executor("ray", address)``
    with the cluster's HOST:PORT, "auto" or None for the cluster this machine belongs to
    (or $RAY_ADDRESS); on which device they train: "cpu", or "cuda" (locally "cuda:N"
    picks a GPU; on Ray each worker is given a GPU of its own); and in what precision:
    "fp32", or "bf16" (checked here for this machine, by each worker on a cluster's)."""

    kind: ExecutorKind = ExecutorKind.LOCAL
    address: str | None = None
    device: str = "cpu"
    precision: str = "fp32"

    def __post_init__(self) -> None:
        try:
            kind = ExecutorKind(self.kind)
        except ValueError:
            raise ConfigError(
                f"executor={self.kind!r} is not known: use 'local' (this machine) or 'ray' "
                "(a Ray cluster)."
            ) from None
        if self.address is not None and kind is not ExecutorKind.RAY:
            raise ConfigError(
                f"a Ray address ({self.address!r}) is for executor 'ray', not {kind.value!r}: "
                "add --executor ray, or leave the address out."
            )
        object.__setattr__(self, "kind", kind)
        if kind is ExecutorKind.LOCAL:
            device = resolve_device(self.device)  # this machine's GPUs: checked now
            precision = check_precision(self.precision, device)
        else:
            precision = parse_precision(self.precision)
            device = parse_device(self.device)
            if device.index is not None:
                raise ConfigError(
                    f"device={self.device!r}: on a Ray cluster each worker is given a GPU of "
                    "its own; give --device cuda, without an index."
                )
        object.__setattr__(self, "device", str(device))
        object.__setattr__(self, "precision", precision)

    @property
    def compute(self) -> Compute:
        """Where and in what arithmetic the workers train."""
        return Compute(self.device, Precision(self.precision))

    @classmethod
    def of(cls, value: str | Executor) -> Executor:
        return value if isinstance(value, Executor) else cls(value)  # type: ignore[arg-type]

    def __str__(self) -> str:
        notes = [n for n in (self.device, self.precision) if n not in ("cpu", "fp32")]
        on = f" ({', '.join(notes)})" if notes else ""
        if self.kind is ExecutorKind.LOCAL:
            return f"this machine{on}"
        return f"the Ray cluster at {self.address or 'auto'}{on}"


class Pool:
    """A search's workers, and the order in which the driver reads their rounds.

    Here the order is fixed (the workers' own), so what the pruner sees, and so every
    decision, never depends on which worker is faster: a search with the same seed and
    the same number of workers ends with the same table. A slow worker stalls the others
    for that; RayPool reads rounds as they come instead. ``in_driver``: the one worker
    trains in the driver's own process (so the driver's CPU time is not its own).
    ``cores``: the cores its worker processes share, so that a busy worker may train on
    more threads while others are idle (None: each keeps its own, as the one inline worker
    and Ray's actors, one CPU each by Ray's count, do).
    """

    def __init__(
        self,
        workers: list[Worker],
        where: str = "this machine",
        in_driver: bool = False,
        cores: int | None = None,
    ):
        self.workers = workers
        self.where = where
        self.in_driver = in_driver
        self.cores = cores

    def threads(self, busy: int) -> int | None:
        """The threads each of ``busy`` workers trains on: an even share of the cores."""
        return None if self.cores is None else max(1, self.cores // max(1, busy))

    def started(self) -> WorkersStarted:
        return WorkersStarted(len(self.workers), self.where)

    def arrivals(self, busy: Sequence[Worker]) -> list[Worker]:
        """The busy workers whose rounds to read next, in the order to read them."""
        return list(busy)

    def drop(self, worker: Worker) -> None:
        """Stop using a worker that is gone."""
        self.workers.remove(worker)
        worker.close()

    def close(self) -> None:
        for worker in self.workers:
            worker.close()

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class InlineWorker:
    """Trains in the calling process, with torch's own thread count, as ``compute`` says.

    With ``checkpoints``, members resume from their trial's saved state, and the first round
    after that replays their saved epochs before the new one (so the driver can report them
    to the study); the batch is saved at epoch boundaries as the policy says.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        n_classes: int,
        checkpoints: CheckpointPolicy | None = None,
        compute: Compute = CPU_FP32,
    ):
        self.images, self.labels, self.n_classes = images, labels, n_classes
        self.engine = PopulationEngine(
            keep_models=False, device=compute.device, precision=compute.precision
        )
        self._training: Training | None = None
        self._checkpoints = (
            None
            if checkpoints is None
            else Checkpoints(checkpoints, data_fingerprint(images, labels))
        )
        self._replay: list[EpochResult] = []  # saved epochs of resumed members, sent next

    def _train(self, members: Sequence[Member]) -> Training:
        saved = self._checkpoints.resume(members) if self._checkpoints else {}
        if saved:
            resume = {key: s.snapshot for key, s in saved.items()}
            try:
                training = self.engine.train(
                    self.images, self.labels, self.n_classes, members, resume
                )
            except (RuntimeError, ValueError, KeyError) as exc:  # whole, but not theirs
                warnings.warn(
                    f"ignoring the checkpoints of members {sorted(saved)} ({exc}); they "
                    "train again from scratch.",
                    UserWarning,
                    stacklevel=2,
                )
            else:
                self._replay += [r for s in saved.values() for r in s.results]
                return training
        return self.engine.train(self.images, self.labels, self.n_classes, members)

    def submit(self, members: Sequence[Member]) -> None:
        if self._checkpoints:
            self._checkpoints.reset()
        self._replay = []
        self._training = self._train(members)

    def join(self, members: Sequence[Member]) -> None:
        if self._training is None:
            raise WorkerCrashError("join() before submit()")
        self._training.extend(self._train(members))

    def advance(self, stop: Sequence[str] = (), threads: int | None = None) -> None:
        """Record the stops; the epoch is trained when the round is received (in the
        driver's process, whose threads are its own: ``threads`` is ignored)."""
        if self._training is not None:
            for key in stop:
                self._training.stop(key)
        if self._checkpoints:
            self._checkpoints.stop(stop)

    def alive(self) -> bool:
        return True

    def receive(self) -> list[EpochResult]:
        if self._training is None:
            raise WorkerCrashError("receive() before submit()")
        try:
            replayed, self._replay = self._replay, []
            results = replayed + self._training.step()
            if self._checkpoints:
                self._checkpoints.record(results, self._training.snapshot)
        except Exception as exc:  # a crashing trial fails alone; the search goes on
            raise WorkerCrashError(f"{type(exc).__name__}: {exc}") from exc
        return results

    def close(self) -> None:
        self._training = None


class ProcessWorker:
    """Trains in a worker process (deepnet.search.worker) with its own torch threads.

    The process is a fresh ``python -m deepnet.search.worker``, not a multiprocessing spawn,
    so it never imports the caller's main module; it runs in its own process group, so a
    Ctrl-C in the terminal reaches the driver only, which then closes it. It starts with
    nothing but its pipes, so that starting several costs one interpreter start-up, not one
    each; ``load`` then sends it the training images.
    """

    def __init__(self, threads: int = 1):
        self.process = subprocess.Popen(
            [sys.executable, "-P", "-m", "deepnet.search.worker", str(threads)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
            process_group=0,
        )
        self.channel = Channel(self.process.stdout, self.process.stdin)
        self._lost = False  # a request could not be delivered: the process has gone

    def load(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        n_classes: int,
        checkpoints: CheckpointPolicy | None = None,
        compute: Compute = CPU_FP32,
    ) -> None:
        self._send(Load(images, labels, n_classes, checkpoints, compute))

    def submit(self, members: Sequence[Member]) -> None:
        self._send(Submit(list(members)))

    def join(self, members: Sequence[Member]) -> None:
        self._send(Join(list(members)))

    def advance(self, stop: Sequence[str] = (), threads: int | None = None) -> None:
        self._send(Advance(list(stop), threads))

    def alive(self) -> bool:
        return not self._lost and self.process.poll() is None

    def receive(self) -> list[EpochResult]:
        if self._lost:
            raise WorkerLostError(self._death())
        try:
            reply = self.channel.receive()
        except EOFError:
            raise WorkerLostError(self._death()) from None
        if isinstance(reply, Crash):
            raise WorkerCrashError(reply.message)
        return reply.results

    def __str__(self) -> str:
        return f"worker process {self.process.pid}"

    def close(self) -> None:
        """Close the pipe (the worker exits when it reads end of file) and reap the process."""
        with contextlib.suppress(OSError):  # the process may be gone already
            self.process.stdin.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()

    def _send(self, request: Request) -> None:
        try:
            self.channel.send(request)
        except BrokenPipeError:  # reported by the next receive(), which the driver handles
            self._lost = True

    def _death(self) -> str:
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        return f"worker process {self.process.pid} died (exit code {code})"


def start_workers(
    images: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    n_jobs: int | None,
    max_useful: int | None = None,
    executor: Executor | None = None,
    checkpoints: CheckpointPolicy | None = None,
) -> Pool:
    """The workers for ``n_jobs`` (see resolve_n_jobs) on the executor (default: local).

    Locally, 1 trains inline and more are processes. ``max_useful`` is the most trials the
    search can train at once: no more workers start. ``checkpoints``: where and how often
    they save their batches (None: never).
    """
    if executor is not None and executor.kind is ExecutorKind.RAY:
        from deepnet.search.ray_executor import start_ray_workers

        return start_ray_workers(
            images, labels, n_classes, n_jobs, max_useful, executor, checkpoints
        )
    compute = (executor or Executor()).compute
    n = resolve_n_jobs(n_jobs, max_useful)
    if n == 1:
        worker = InlineWorker(images, labels, n_classes, checkpoints, compute)
        return Pool([worker], in_driver=True)
    workers = [ProcessWorker() for _ in range(n)]  # all start up at once
    try:
        for worker in workers:
            worker.load(images, labels, n_classes, checkpoints, compute)
    except BaseException:  # Ctrl-C while they start: none is left behind
        for worker in workers:
            worker.close()
        raise
    return Pool(list(workers), cores=os.cpu_count() or 1)


def resolve_n_jobs(
    n_jobs: int | None,
    max_useful: int | None = None,
    cores: int | None = None,
    where: str = "this machine",
) -> int:
    """How many workers to start, by scikit-learn's convention: None is 1, -1 is every core,
    -2 all but one. Never more than the cores (with a warning: more only slow each other
    down) nor than ``max_useful``, the most trials that can train at once. ``cores`` are
    this machine's unless given (a Ray cluster's free CPUs, ``where`` names it)."""
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int | None) or n_jobs == 0:
        raise ConfigError(
            f"n_jobs={n_jobs!r} is not allowed: use a positive count, or -1 for every core."
        )
    cores = cores or os.cpu_count() or 1
    if n_jobs is None:
        n = 1
    elif n_jobs > cores:
        warnings.warn(
            f"n_jobs={n_jobs} asks for more workers than the {cores} cores of {where}; "
            f"starting {cores}.",
            UserWarning,
            stacklevel=3,
        )
        n = cores
    else:
        n = n_jobs if n_jobs > 0 else cores + 1 + n_jobs
    if max_useful is not None:
        n = min(n, max_useful)
    return max(1, n)
