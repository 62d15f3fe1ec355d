"""One search through local worker processes and through a two-node Ray cluster, side by side.

The seed's grid with successive halving (searches/seed-grid.toml: 280 configurations, 3-fold
CV, up to 12 epochs) on MNIST 2 vs 7 runs with the local executor (two worker processes),
then with the Ray executor on a two-node cluster started on this machine
(scripts/ray-local-cluster.sh: one CPU per node, so two workers as well, token
authentication on), --rounds times in turn. Printed: each search's seconds and the overhead
ratio ray / local (the target is at most 1.10), and the driver's load measured during the
same searches: its CPU seconds per trial-epoch (Optuna calls, the SQLite study, bookkeeping,
reading replies) and from it how many workers one driver keeps busy at the seed network's
epoch time (the workers' training seconds per driver second; the target is at least 200).

    sudo python benchmarks/bench_cluster.py [--config searches/seed-grid.toml] [--rounds 1]

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
    best: float
    complete: int
    pruned: int

    @classmethod
    def from_json(cls, text: str) -> Measured:
        data = json.loads(text)
        return cls(**{**data, "load": DriverLoad(**data["load"])})


def search(kind: str, config: Path, out: Path) -> Measured:
    """Run the search here (the cluster's RAY_ADDRESS for ray) and measure it."""
    from deepnet import load_dataset, tune
    from deepnet.search.spec import build_spec

    loads: list[DriverLoad] = []

    def on_event(event: object) -> None:
        if isinstance(event, DriverLoad):
            loads.append(event)

    spec = build_spec((), config, {})
    data = load_dataset("mnist", (2, 7))
    result = tune(spec, data, out, n_jobs=2, refit=False, executor=kind, on_event=on_event)
    rows = result.outcome.rows
    return Measured(
        kind,
        result.outcome.seconds,
        DriverLoad(
            sum(load.driver_seconds for load in loads),
            sum(load.trial_epochs for load in loads),
            sum(load.training_seconds for load in loads),
        ),
        result.outcome.best.score,
        sum(r.state == "complete" for r in rows),
        sum(r.state == "pruned" for r in rows),
    )


def measure(kind: str, config: Path) -> Measured:
    """One search of this kind in a fresh process (for ray: inside a fresh cluster)."""
    folder = Path(tempfile.mkdtemp(prefix="dn-bench-", dir="/tmp"))  # short: Ray's sockets
    try:
        inner = [sys.executable, __file__, "--inner", kind, "--config", str(config)]
        inner += ["--out", str(folder / "run")]
        env = {**os.environ, "PY": sys.executable, "PYTHONUNBUFFERED": "1"}
        command = inner if kind == "local" else ["bash", str(CLUSTER), str(folder), *inner]
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        output = done.stdout
        if kind == "ray" and (folder / "out.log").is_file():
            output = (folder / "out.log").read_text()
        if done.returncode != 0:
            sys.exit(f"the {kind} search failed ({done.returncode}):\n{output}{done.stderr}")
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
    print(f"{'executor':10}{'seconds':>10}{'best CV':>10}{'complete':>10}{'pruned':>8}", end="")
    print(f"{'driver ms/trial-epoch':>23}{'workers kept busy':>19}")
    for r in results:
        print(f"{r.kind:10}{r.seconds:10.1f}{r.best:10.4f}{r.complete:10}{r.pruned:8}", end="")
        print(f"{1000 * r.load.seconds_per_trial_epoch:23.2f}{r.load.workers_kept_busy:19,.0f}")
    local, ray = (statistics.fmean(r.seconds for r in by_kind[k]) for k in KINDS)
    print(f"overhead ray / local: {ray / local:.3f} (target <= 1.10)")
    busy = min(r.load.workers_kept_busy for r in by_kind["ray"])
    print(f"one driver keeps {busy:,.0f} workers busy on the cluster (target >= 200)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "searches" / "seed-grid.toml")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--inner", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        print(json.dumps(asdict(search(args.inner, args.config, args.out))))
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
            results.append(measure(kind, args.config))
            print(f"  {kind}: {time.perf_counter() - start:.0f} s with start-up", flush=True)
    report(results)


if __name__ == "__main__":
    main()
