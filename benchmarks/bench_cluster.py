"""One search through local worker processes and through a two-node Ray cluster, side by side.

The seed's grid with successive halving (searches/seed-grid.toml: 280 configurations, 3-fold
CV, up to 12 epochs) on MNIST 2 vs 7 runs with the local executor (two worker processes),
then with the Ray executor on a two-node cluster started on this machine
(scripts/ray-local-cluster.sh: one CPU per node, so two workers as well, token
authentication on), --rounds times in turn. Printed: each search's seconds and the overhead
ratio ray / local (the target is at most 1.10), and the driver's load measured during the
same searches: its CPU seconds per trial-epoch (every thread: Optuna calls, the SQLite
study, bookkeeping, reading replies, Ray's client). A Ray driver also spends CPU while
nothing happens (its client's threads: heartbeats, metrics, polling), measured for
--idle seconds before the search: that part does not grow with the workers, the rest does.
So one driver keeps N workers busy, at the seed network's epoch time, where N workers'
trial-epochs cost it one CPU second per second: N = (1 - idle rate) x (worker seconds per
trial-epoch) / (driver CPU per trial-epoch beyond the idle rate); the target is N >= 200.
Then (--scaling) the driver's CPU per trial-epoch with more workers than cores (local
processes, and Ray actors on nodes that offer more CPUs than they have), on a small part of
the data: it must not grow with the workers (a driver whose cost grew with N would keep
fewer busy than N above says).

    sudo python benchmarks/bench_cluster.py [--config searches/seed-grid.toml] [--rounds 1]
        [--idle 10] [--scaling 2,8,16]

Needs root (the cluster runs in private namespaces), util-linux, iproute2 and deepnet[ray].
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from deepnet.search.events import DriverLoad

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "scripts" / "ray-local-cluster.sh"
KINDS = ("local", "ray")


@dataclass(frozen=True)
class Measured:
    """One search: its seconds, the driver's load, and what it found."""

    kind: str
    seconds: float
    load: DriverLoad  # summed over the stages
    idle_rate: float  # the driver's CPU seconds per second while connected and idle
    best: float
    complete: int
    pruned: int

    @property
    def marginal(self) -> float:
        """The driver's CPU seconds per trial-epoch beyond its idle rate."""
        idle = self.idle_rate * self.seconds
        return (self.load.driver_seconds - idle) / max(self.load.trial_epochs, 1)

    @property
    def workers_kept_busy(self) -> float:
        """Workers whose trial-epochs cost the driver one CPU second per second."""
        per_worker = self.load.training_seconds / max(self.load.trial_epochs, 1)
        return (1 - self.idle_rate) * per_worker / max(self.marginal, 1e-9)

    @classmethod
    def from_json(cls, text: str) -> Measured:
        data = json.loads(text)
        return cls(**{**data, "load": DriverLoad(**data["load"])})


def idle_rate(kind: str, seconds: float) -> float:
    """The driver's CPU seconds per second, connected (for ray) and doing nothing."""
    if seconds <= 0:
        return 0.0
    if kind == "ray":
        import ray

        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)  # tune() reuses it
    wall, cpu_start = time.monotonic(), time.process_time()
    time.sleep(seconds)
    return (time.process_time() - cpu_start) / (time.monotonic() - wall)


@dataclass(frozen=True)
class Setting:
    """What one measured search runs: the executor, its workers, the training images."""

    kind: str
    jobs: int = 2
    images: int | None = None  # the first this many training images (None: all)
    idle: float = 0.0  # seconds to measure the idle driver for first


def search(setting: Setting, config: Path, out: Path) -> Measured:
    """Run the search here (the cluster's RAY_ADDRESS for ray) and measure it."""
    from dataclasses import replace

    from deepnet import load_dataset, tune
    from deepnet.search.spec import build_spec

    loads: list[DriverLoad] = []

    def on_event(event: object) -> None:
        if isinstance(event, DriverLoad):
            loads.append(event)

    spec = build_spec((), config, {})
    data = load_dataset("mnist", (2, 7))
    if setting.images is not None:
        data = replace(
            data, x_train=data.x_train[: setting.images], y_train=data.y_train[: setting.images]
        )
    rate = idle_rate(setting.kind, setting.idle)
    result = tune(
        spec, data, out, n_jobs=setting.jobs, refit=False, executor=setting.kind, on_event=on_event
    )
    rows = result.outcome.rows
    return Measured(
        setting.kind,
        result.outcome.seconds,
        DriverLoad(
            sum(load.driver_seconds for load in loads),
            sum(load.trial_epochs for load in loads),
            sum(load.training_seconds for load in loads),
        ),
        rate,
        result.outcome.best.score,
        sum(r.state == "complete" for r in rows),
        sum(r.state == "pruned" for r in rows),
    )


def measure(setting: Setting, config: Path) -> Measured:
    """One search in a fresh process (for ray: inside a fresh cluster)."""
    folder = Path(tempfile.mkdtemp(prefix="dn-bench-", dir="/tmp"))  # short: Ray's sockets
    try:
        inner = [sys.executable, __file__, "--inner", json.dumps(asdict(setting))]
        inner += ["--config", str(config), "--out", str(folder / "run")]
        ray = setting.kind == "ray"
        env = {**os.environ, "PY": sys.executable, "PYTHONUNBUFFERED": "1"}
        env["NODE_CPUS"] = str(max(1, -(-setting.jobs // 2)))  # two nodes hold the workers
        command = ["bash", str(CLUSTER), str(folder), *inner] if ray else inner
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        output = done.stdout
        if ray and (folder / "out.log").is_file():
            output = (folder / "out.log").read_text()
        if done.returncode != 0:
            sys.exit(
                f"the {setting.kind} search failed ({done.returncode}):\n{output}{done.stderr}"
            )
        return Measured.from_json(output.strip().splitlines()[-1])
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def cpu() -> str:
    """This machine's CPU model, cores and vector extensions (the kind changes between runs)."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next(
        (line.split(":", 1)[1].strip() for line in info.splitlines() if "model name" in line),
        platform.processor() or "unknown",
    )
    flags = next((line.split() for line in info.splitlines() if line.startswith("flags")), [])
    vectors = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
    return f"{model}, {os.cpu_count()} cores, {' '.join(vectors) or 'no AVX2'}"


def report(results: list[Measured]) -> None:
    by_kind = {k: [r for r in results if r.kind == k] for k in KINDS}
    print(f"{'executor':10}{'seconds':>9}{'best CV':>9}{'complete':>9}{'pruned':>7}", end="")
    print(f"{'driver ms/trial-epoch':>22}{'idle ms/s':>10}{'beyond idle':>12}{'workers':>9}")
    for r in results:
        print(f"{r.kind:10}{r.seconds:9.1f}{r.best:9.4f}{r.complete:9}{r.pruned:7}", end="")
        print(f"{1000 * r.load.seconds_per_trial_epoch:22.2f}{1000 * r.idle_rate:10.2f}", end="")
        print(f"{1000 * r.marginal:12.2f}{r.workers_kept_busy:9,.0f}")
    local, ray = (statistics.fmean(r.seconds for r in by_kind[k]) for k in KINDS)
    print(f"overhead ray / local: {ray / local:.3f} (target <= 1.10)")
    busy = min(r.workers_kept_busy for r in results)
    print(f"one driver keeps {busy:,.0f} workers busy (the lower of local and ray; target >= 200)")


def scaling(config: Path, jobs: list[int], images: int) -> None:
    """The driver's CPU per trial-epoch (beyond a Ray driver's idle rate) as the workers
    grow past the cores, for each executor."""
    print(f"driver CPU per trial-epoch vs workers (the first {images} training images):")
    for kind in KINDS:
        base = None
        for n in jobs:
            r = measure(Setting(kind, n, images, idle=5.0 if kind == "ray" else 0.0), config)
            ms = 1000 * r.marginal
            base = base or ms
            print(
                f"  {kind:5} {n:3} workers: {ms:6.2f} ms beyond idle ({ms / base:.2f}x "
                f"{jobs[0]} workers'), {r.load.trial_epochs} trial-epochs",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "searches" / "seed-grid.toml")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle driver")
    parser.add_argument("--scaling", default="2,8,16", help="worker counts; none: skip")
    parser.add_argument("--scaling-images", type=int, default=1200)
    parser.add_argument("--inner", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        setting = Setting(**json.loads(args.inner))
        print(json.dumps(asdict(search(setting, args.config, args.out))))
        return
    if os.geteuid() != 0:
        sys.exit("the cluster runs in private namespaces (unshare -n): run as root")
    # SIGTERM as Ctrl-C: the search running (and its cluster's namespace) is killed with us
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print(f"cpu: {cpu()}")
    print(f"search: {args.config}, MNIST 2 vs 7, 2 workers each")
    results = []
    for _ in range(args.rounds):
        for kind in KINDS:  # in turn, so that noise on a shared machine falls on both
            start = time.perf_counter()
            results.append(measure(Setting(kind, idle=args.idle), args.config))
            print(f"  {kind}: {time.perf_counter() - start:.0f} s with start-up", flush=True)
    if results:
        report(results)
    if args.scaling != "none":
        scaling(args.config, [int(n) for n in args.scaling.split(",")], args.scaling_images)


if __name__ == "__main__":
    main()
