"""Workers on a Ray cluster: one long-lived actor per free CPU, each holding the images.

The driver connects to a running cluster (``ray start --head`` on one machine, ``ray start
--address`` on the others) and starts one actor per CPU it offers (or ``n_jobs``). The
training images go once into Ray's object store; every actor takes its copy from there at
start, so a round's request carries only its members. An actor answers one call per round
(the batch's Submit or Join, then its Advance; see deepnet.search.protocol), and the driver
reads rounds as they come (``ray.wait``), so no machine waits for a slower one.

An actor that dies, or whose machine does, is lost: the driver re-queues the trials it was
training (RayWorker.receive raises WorkerLostError). Ray's actor restarts are off: a
restarted actor would come back empty (its batch gone) on a machine Ray may not have, and a
call to it would wait there; the surviving actors take the work instead.

Ray is imported here only, when a search asks for it: ``pip install 'deepnet[ray]'``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

import deepnet
from deepnet.errors import ConfigError, SearchError
from deepnet.search.events import WorkersStarted
from deepnet.search.executor import (
    Executor,
    InlineWorker,
    Pool,
    Worker,
    WorkerCrashError,
    WorkerLostError,
    resolve_n_jobs,
)
from deepnet.search.protocol import Advance, Crash, Join, Load, Reply, Submit

if TYPE_CHECKING:
    from deepnet.engine import EpochResult, Member
    from deepnet.engine.checkpoint import CheckpointPolicy

CONNECT_SECONDS = 5.0  # an unreachable address is an error after this, not a hang
START_SECONDS = 300.0  # the actors' start: importing torch and deepnet on every node
INSTALL_HINT = "pip install 'deepnet[ray]' (or pip install -r requirements-ray.txt)"


@dataclass(frozen=True)
class Build:
    """Which deepnet a process runs: its version and the digest of its C kernels (the same
    version may be built from other kernels)."""

    version: str
    kernels: str

    @classmethod
    def here(cls) -> Build:
        from deepnet.engine.kernels import sources_digest

        return cls(deepnet.__version__, hashlib.sha256(sources_digest()).hexdigest()[:12])

    def __str__(self) -> str:
        return f"deepnet {self.version}, kernels {self.kernels}"


@dataclass(frozen=True)
class NodeIdentity:
    """What an actor runs on: its node and deepnet build."""

    node_ip: str
    node_id: str
    build: Build
    native: bool  # compiled kernels in use (else the slower torch fallback)

    def __str__(self) -> str:
        return f"{self.node_ip} (node {self.node_id[:8]})"


def check_same_build(driver: Build, node: NodeIdentity) -> None:
    """Refuse a node that runs another deepnet or other kernels than the driver: its
    results would not be the driver's."""
    if node.build != driver:
        raise ConfigError(
            f"node {node} runs {node.build}, but this driver runs {driver}: install the "
            "same deepnet on every node of the cluster."
        )


class Trainer:
    """The actor: an InlineWorker on the node's copy of the images (one torch thread, its
    one CPU)."""

    def __init__(self, data: Load):
        import torch

        torch.set_num_threads(1)
        # the object store's arrays are read-only views: the engine wants its own
        self.worker = InlineWorker(
            np.array(data.images),
            np.array(data.labels),
            data.n_classes,
            data.checkpoints,
            data.compute,  # "cuda": the GPU Ray gave this actor (its CUDA_VISIBLE_DEVICES)
        )

    def identity(self) -> NodeIdentity:
        import ray

        from deepnet.engine import kernels

        return NodeIdentity(
            ray.util.get_node_ip_address(),
            ray.get_runtime_context().get_node_id(),
            Build.here(),
            kernels.native(),
        )

    def round(self, requests: list[Submit | Join | Advance]) -> Reply:
        """Carry out a round's requests, the last an Advance; its reply."""
        from deepnet.search.worker import answer

        reply = None
        for request in requests:
            reply = answer(self.worker, request)
        if reply is None:
            raise WorkerCrashError("a round must end with Advance")
        return reply


class RayWorker:
    """One actor behind the Worker calls: Submit and Join wait for the round's Advance and
    travel with it, one remote call per round; ``receive`` takes that call's answer."""

    def __init__(self, actor: Any, node: NodeIdentity):
        self.actor, self.node = actor, node
        self._requests: list[Submit | Join | Advance] = []
        self.pending: Any = None  # the ObjectRef of the round in flight
        self._lost = False

    def submit(self, members: Sequence[Member]) -> None:
        self._requests.append(Submit(list(members)))

    def join(self, members: Sequence[Member]) -> None:
        self._requests.append(Join(list(members)))

    def advance(self, stop: Sequence[str] = (), threads: int | None = None) -> None:
        """``threads`` is ignored: an actor holds one CPU by Ray's count."""
        requests, self._requests = [*self._requests, Advance(list(stop))], []
        self.pending = self.actor.round.remote(requests)

    def alive(self) -> bool:
        return not self._lost

    def receive(self) -> list[EpochResult]:
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        ref, self.pending = self.pending, None
        try:
            reply = ray.get(ref)
        except RayActorError as exc:  # died, or unreachable: its node may be gone
            self._lost = True
            raise WorkerLostError(f"{self} was lost: {_first_line(exc)}") from exc
        except RayTaskError as exc:  # raised outside training: a bug, the trials fail
            raise WorkerCrashError(_first_line(exc.cause or exc)) from exc
        if isinstance(reply, Crash):
            raise WorkerCrashError(reply.message)
        return reply.results

    def close(self) -> None:
        import ray

        with contextlib.suppress(Exception):  # the actor, or the whole cluster, may be gone
            ray.kill(self.actor, no_restart=True)

    def __str__(self) -> str:
        return f"Ray worker on {self.node}"


class RayPool(Pool):
    """The actors of a search; rounds are read as they arrive, not in a fixed order."""

    def __init__(self, workers: list[RayWorker], where: str, own_connection: bool, data: Any):
        super().__init__(list(workers), where)
        self._own_connection = own_connection
        self._data = data  # the images' ObjectRef: held while the actors live

    def started(self) -> WorkersStarted:
        nodes = {w.node.node_id: w.node for w in self.workers if isinstance(w, RayWorker)}
        notes = tuple(
            f"node {node} has no C compiler: it trains with the slower torch fallback"
            for node in nodes.values()
            if not node.native
        )
        return WorkersStarted(len(self.workers), f"{len(nodes)} node(s) of {self.where}", notes)

    def arrivals(self, busy: Sequence[Worker]) -> list[Worker]:
        """Every busy worker whose round has come in (waits for the first one)."""
        import ray

        by_ref = {w.pending: w for w in busy if isinstance(w, RayWorker)}
        ray.wait(list(by_ref), num_returns=1)
        ready, _ = ray.wait(list(by_ref), num_returns=len(by_ref), timeout=0)
        came = {by_ref[ref] for ref in ready}
        return [w for w in busy if w in came]  # among those in, the fixed order

    def close(self) -> None:
        import ray

        super().close()
        self._data = None
        if self._own_connection:
            ray.shutdown()


def start_ray_workers(
    images: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    n_jobs: int | None,
    max_useful: int | None,
    executor: Executor,
    checkpoints: CheckpointPolicy | None = None,
) -> RayPool:
    """Connect to the cluster and start its actors; each holds the images from one put.
    ``checkpoints`` must be in a folder every node reaches at the same path (a shared
    filesystem): a trial re-queued to another node resumes from there."""
    ray = import_ray()
    own = not ray.is_initialized()
    if own:
        _connect(ray, executor)
    try:
        where = str(executor)
        cpus = int(ray.available_resources().get("CPU", 0))
        if cpus < 1:
            raise SearchError(
                f"{where} has no free CPU for a worker (all are taken by other jobs): wait "
                "for them, or add a node with ray start --address."
            )
        n = resolve_n_jobs(n_jobs, max_useful, cores=cpus, where=where)
        gpus = 0
        if executor.device != "cpu":  # a GPU per worker
            gpus = 1
            n = min(n, _free_gpus(ray, where))
        load = Load(images, labels, n_classes, checkpoints, executor.compute)
        data = ray.put(load)  # into the object store, once
        actor_class = ray.remote(num_cpus=1, num_gpus=gpus, max_restarts=0)(Trainer)
        actors = [actor_class.options(scheduling_strategy="SPREAD").remote(data) for _ in range(n)]
        nodes = _identities(ray, actors, where)
        driver = Build.here()
        for node in nodes:
            check_same_build(driver, node)
        workers = [RayWorker(a, node) for a, node in zip(actors, nodes, strict=True)]
        return RayPool(workers, where, own, data)
    except BaseException:
        if own:
            ray.shutdown()  # the actors end with the driver's connection
        raise


def _free_gpus(ray: Any, where: str) -> int:
    """The cluster's free GPUs, at least one (SearchError, naming the fix, where none is)."""
    gpus = int(ray.available_resources().get("GPU", 0))
    if gpus < 1:
        raise SearchError(
            f"--device cuda: {where} has no free GPU for a worker: start its nodes on "
            "machines with NVIDIA GPUs (ray start finds them), or search on the CPU "
            "(--device cpu)."
        )
    return gpus


def import_ray() -> Any:
    """The ray module, or a one-line error saying what to install."""
    try:
        import ray
    except ImportError:
        raise ConfigError(
            f"--executor ray needs Ray, which is not installed: {INSTALL_HINT}."
        ) from None
    return ray


def preflight(executor: Executor) -> None:
    """Ray installed and the cluster's head answering, or a one-line error, within seconds
    and before anything is created."""
    import_ray()
    address = _address(executor)
    if address != "auto":
        _check_reachable(address)


def _address(executor: Executor) -> str:
    return executor.address or os.environ.get("RAY_ADDRESS") or "auto"


def _connect(ray: Any, executor: Executor) -> None:
    """ray.init on the cluster, or a one-line error within seconds (ray.init itself waits
    minutes for an address that is not a Ray head)."""
    preflight(executor)
    address = _address(executor)
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError ...
        raise SearchError(
            f"cannot connect to the Ray cluster at {address}: {_first_line(exc)}. Start it "
            "with ray start --head (and give its HOST:PORT with --ray-address); with token "
            "authentication, set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH here too."
        ) from exc


# A Ray head's GCS speaks gRPC: to HTTP/2's client preface it answers with a SETTINGS frame
_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
_SETTINGS = 4


def _check_reachable(address: str) -> None:
    """The address answers as a gRPC server (TCP, then HTTP/2's first frame)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(
            f"Ray address {address!r} is not HOST:PORT: give the head's address and port "
            "(ray start --head prints it), or 'auto'."
        )
    try:
        sock = socket.create_connection((host.strip("[]"), int(port)), CONNECT_SECONDS)
    except OSError as exc:
        raise SearchError(
            f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}. Check the "
            "address and that the head runs (ray start --head) and its port is open."
        ) from None
    with sock:
        if os.environ.get("RAY_USE_TLS", "0") not in ("0", ""):
            return  # a TLS handshake comes first: ray.init checks the rest
        try:
            sock.sendall(_PREFACE)
            head = _read(sock, 9)
        except OSError:
            head = b""
    if len(head) < 9 or head[3] != _SETTINGS:
        raise SearchError(
            f"{address} answers, but not as a Ray cluster's head: give the port ray start "
            "--head listens on (6379 unless its --port chose another)."
        )


def _read(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size and (chunk := sock.recv(size - len(data))):
        data += chunk
    return data


def _identities(ray: Any, actors: list[Any], where: str) -> list[NodeIdentity]:
    """Wait for every actor to start; say why one could not."""
    from ray.exceptions import GetTimeoutError, RayActorError

    try:
        return ray.get([a.identity.remote() for a in actors], timeout=START_SECONDS)
    except GetTimeoutError:
        raise SearchError(
            f"the workers on {where} did not start within {START_SECONDS:.0f}s: are its CPUs "
            "held by another job, or is deepnet not installed on a node?"
        ) from None
    except RayActorError as exc:
        raise SearchError(f"a worker on {where} could not start: {_why(exc)}") from exc


def _why(exc: BaseException) -> str:
    """An actor's start-up error in a line: deepnet's own message where deepnet refused (the
    last ``deepnet.errors.`` line of the actor's traceback, which Ray passes on as text, as
    where a node's CPU lacks what the search asks for), else the exception's first line."""
    text = str(exc).strip()
    for line in reversed(text.splitlines()):
        name, _, message = line.strip().partition(": ")
        if name.startswith("deepnet.errors.") and message:
            return message
    return _first_line(exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
