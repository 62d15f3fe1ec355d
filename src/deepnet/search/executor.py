"""Where populations train: in this process, or in worker processes on the other cores.

A worker trains one batch of members at a time (as populations, see deepnet.engine), one
lockstep epoch per request, and answers with that round's EpochResults; the search driver
reads the round, decides which members to stop (pruning), and asks for the next. The
driver never touches tensors and a worker never touches the study. Both kinds of worker
offer the same calls:

    submit(members)      start a new batch (replacing the previous one)
    join(members)        add members to the batch; they start with the next round
    advance(stop)        stop these members, then train the others one more epoch
    receive()            that round's results (waits for them)
    alive()              whether the worker can take more work
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Protocol

import numpy as np
import torch

from deepnet.engine import EpochResult, Member, PopulationEngine, Training
from deepnet.errors import ConfigError


class Worker(Protocol):
    def submit(self, members: Sequence[Member]) -> None: ...
    def join(self, members: Sequence[Member]) -> None: ...
    def advance(self, stop: Sequence[str] = ()) -> None: ...
    def alive(self) -> bool: ...
    def receive(self) -> list[EpochResult]: ...
    def close(self) -> None: ...


class WorkerCrashError(RuntimeError):
    """A worker raised while training; the message is its exception."""


class InlineWorker:
    """Trains in the calling process, with torch's own thread count."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, n_classes: int):
        self.images, self.labels, self.n_classes = images, labels, n_classes
        self.engine = PopulationEngine(keep_models=False)
        self._training: Training | None = None

    def submit(self, members: Sequence[Member]) -> None:
        self._training = self.engine.train(self.images, self.labels, self.n_classes, members)

    def join(self, members: Sequence[Member]) -> None:
        if self._training is None:
            raise WorkerCrashError("join() before submit()")
        self._training.extend(self.engine.train(self.images, self.labels, self.n_classes, members))

    def advance(self, stop: Sequence[str] = ()) -> None:
        """Record the stops; the epoch is trained when the round is received."""
        if self._training is not None:
            for key in stop:
                self._training.stop(key)

    def alive(self) -> bool:
        return True

    def receive(self) -> list[EpochResult]:
        if self._training is None:
            raise WorkerCrashError("receive() before submit()")
        try:
            return self._training.step()
        except Exception as exc:  # a crashing trial fails alone; the search goes on
            raise WorkerCrashError(f"{type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        self._training = None


def _serve(conn: Connection, threads: int) -> None:
    """Worker process main loop: first ("data", (images, labels, n_classes)), then
    ("submit" | "join", members) | ("advance", stops) | ("close", None)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver handles Ctrl-C and closes us
    torch.set_num_threads(threads)
    try:
        _, data = conn.recv()
    except EOFError:
        return
    worker = InlineWorker(*data)
    while True:
        try:
            command, payload = conn.recv()
        except EOFError:  # the driver is gone (killed): nothing left to train for
            return
        if command == "close":
            return
        if command in ("submit", "join"):
            getattr(worker, command)(payload)
            continue
        worker.advance(payload)
        try:
            conn.send(("ok", worker.receive()))
        except WorkerCrashError as exc:  # reported, so the driver fails the trial, not the search
            conn.send(("error", str(exc)))


class ProcessWorker:
    """Trains in a spawned process with its own torch thread pool (1 thread by default).

    The process starts with nothing but a pipe, so that starting several costs one
    interpreter start-up, not one each; ``load`` then sends it the training images.
    """

    def __init__(self, threads: int = 1):
        context = mp.get_context("spawn")  # fork after torch has threads can deadlock
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, threads), daemon=True)
        self.process.start()
        child.close()

    def load(self, images: np.ndarray, labels: np.ndarray, n_classes: int) -> None:
        self.conn.send(("data", (images, labels, n_classes)))

    def submit(self, members: Sequence[Member]) -> None:
        self.conn.send(("submit", list(members)))

    def join(self, members: Sequence[Member]) -> None:
        self.conn.send(("join", list(members)))

    def advance(self, stop: Sequence[str] = ()) -> None:
        self.conn.send(("advance", list(stop)))

    def alive(self) -> bool:
        return self.process.is_alive()

    def receive(self) -> list[EpochResult]:
        try:
            status, payload = self.conn.recv()
        except EOFError:
            raise WorkerCrashError(
                f"worker process {self.process.pid} died (exit code {self.process.exitcode})"
            ) from None
        if status == "error":
            raise WorkerCrashError(payload)
        return payload

    def close(self) -> None:
        with contextlib.suppress(OSError):  # the process may be gone already
            self.conn.send(("close", None))
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
        self.conn.close()


def start_workers(
    images: np.ndarray, labels: np.ndarray, n_classes: int, n_jobs: int | None
) -> list[Worker]:
    """``n_jobs`` workers: 1 trains inline; more (or -1: one per core) are processes."""
    n = resolve_n_jobs(n_jobs)
    if n == 1:
        return [InlineWorker(images, labels, n_classes)]
    workers = [ProcessWorker() for _ in range(n)]  # all start up at once
    for worker in workers:
        worker.load(images, labels, n_classes)
    return workers


def resolve_n_jobs(n_jobs: int | None) -> int:
    """scikit-learn's convention: None is 1, -1 is every core, -2 all but one."""
    cores = os.cpu_count() or 1
    if n_jobs is None:
        return 1
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs == 0:
        raise ConfigError(
            f"n_jobs={n_jobs!r} is not allowed: use a positive count, or -1 for every core."
        )
    return max(1, n_jobs if n_jobs > 0 else cores + 1 + n_jobs)
