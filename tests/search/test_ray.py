"""The Ray executor on a real two-node Ray cluster (one CPU per node, token authentication
on), started on this machine inside a private network and PID namespace that has only
loopback: Ray advertises the machine's routable address and listens on every interface
otherwise. The search's table equals the local executor's, also when one node is killed
midway; Ray missing and an address without a Ray head are one-line errors."""

from __future__ import annotations

import importlib.util
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import deepnet
from deepnet.errors import ConfigError
from deepnet.search.executor import Executor, ExecutorKind
from deepnet.search.ray_executor import Build, NodeIdentity, check_same_build
from tests.engine.fallback import needs_bf16
from tests.tables import results_table

GRID = [
    "--param",
    "optimizer=Adam,Nadam,SGD,RMSprop",
    "--param",
    "neurons=8,16",
    "--param",
    "epochs=2",
    "--param",
    "batch_size=64",
    "--cv",
    "2",
    "--no-refit",
]

CLUSTER = Path(__file__).parents[2] / "scripts" / "ray-local-cluster.sh"

RAY_PROCESSES = ("raylet", "gcs_server", "default_worker", "ray/_private", "ray::")


def _cluster_skip_reason() -> str | None:
    if importlib.util.find_spec("ray") is None:
        return "ray is not installed (make test installs requirements-ray.txt)"
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "a private network namespace (unshare -n) needs root"
    for tool in ("unshare", "ip", "pgrep"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (util-linux, iproute2, procps)"
    return None


needs_cluster = pytest.mark.skipif(
    _cluster_skip_reason() is not None, reason=str(_cluster_skip_reason())
)


def _data(data: Path, out: Path, *more: str) -> list[str]:
    """The grid's search arguments on these images, into this run folder."""
    return [*GRID, "--path", str(data), "--out", str(out), *more]


@pytest.fixture(scope="module")
def local_table(small27_npz: Path, tmp_path_factory: pytest.TempPathFactory) -> list:
    """The grid's table from the local executor (two worker processes)."""
    out = tmp_path_factory.mktemp("local") / "run"
    subprocess.run(
        [sys.executable, "-m", "deepnet", "search", *_data(small27_npz, out), "--n-jobs", "2"],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return results_table(out / "results.csv")


@pytest.fixture
def cluster_dir() -> Iterator[Path]:
    """A short folder (Ray's socket paths must stay under 108 characters), removed after."""
    path = Path(tempfile.mkdtemp(prefix="dn-ray-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _search_on_cluster(
    folder: Path,
    data: Path,
    kill_node: bool = False,
    ok: bool = True,
    more: tuple[str, ...] = (),
    **env: str,
) -> str:
    """Start the two-node cluster, search the grid on it (killing the second node once its
    actors are up, if asked), stop the cluster; the search's output (stdout and stderr).
    ``ok``: whether the search must succeed (else fail); ``more``: search arguments;
    ``env``: for the cluster script."""
    search = [sys.executable, "-m", "deepnet", "search", "--executor", "ray"]
    search += ["--ray-address", "127.0.0.1:6380", *_data(data, folder / "run", *more)]
    env = {**os.environ, "PY": sys.executable, "PYTHONUNBUFFERED": "1", **env}
    if kill_node:
        env["KILL_NODE_WHEN"] = "^workers "
    done = subprocess.run(
        ["bash", str(CLUSTER), str(folder), *search],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = (folder / "out.log").read_text() if (folder / "out.log").exists() else ""
    assert (done.returncode == 0) is ok, done.stdout + done.stderr + output
    left = [p for p in (folder / "left.log").read_text().splitlines() if "ray" in p]
    assert not any(name in p for p in left for name in RAY_PROCESSES), left
    assert not _processes_mentioning(str(folder))  # nothing escaped the namespace
    return output


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, UnicodeDecodeError):
            continue
        if text in cmdline and entry.name.isdigit() and int(entry.name) != os.getpid():
            found.append(cmdline)
    return found


@needs_cluster
def test_a_grid_on_two_nodes_gives_the_local_table(small27_npz, local_table, cluster_dir):
    output = _search_on_cluster(cluster_dir, small27_npz, kill_node=False)
    assert "workers  2 on 2 node(s) of the Ray cluster at 127.0.0.1:6380" in output
    assert results_table(cluster_dir / "run" / "results.csv") == local_table
    assert "lost" not in output


@needs_cluster
def test_a_killed_node_costs_only_its_trials_in_flight(small27_npz, local_table, cluster_dir):
    output = _search_on_cluster(cluster_dir, small27_npz, kill_node=True)
    assert (cluster_dir / "killed").read_text().split()  # its raylet and workers
    lost = [line for line in output.splitlines() if line.startswith("lost Ray worker")]
    assert len(lost) == 1 and "re-queued" in lost[0] and "failed" not in lost[0], output
    requeued = lost[0].split("trials ")[1].split(" re-queued")[0].split(", ")
    assert len(requeued) == 4  # its batch: half of the grid's 8 trials
    table = results_table(cluster_dir / "run" / "results.csv")
    assert table == local_table  # the uninterrupted table: nothing failed, nothing twice
    assert all(row[1] == "complete" for row in table)


@needs_cluster
def test_cuda_on_a_cluster_without_gpus_is_one_line_and_trains_nothing(small27_npz, cluster_dir):
    output = _search_on_cluster(cluster_dir, small27_npz, ok=False, more=("--device", "cuda"))
    errors = [line for line in output.splitlines() if line.startswith("Error: ")]
    assert errors == [
        "Error: --device cuda: the Ray cluster at 127.0.0.1:6380 (cuda) has no free GPU for a "
        "worker: start its nodes on machines with NVIDIA GPUs (ray start finds them), or "
        "search on the CPU (--device cpu)."
    ], output
    assert "Traceback" not in output
    assert not (cluster_dir / "run" / "results.csv").exists()


@pytest.fixture(scope="module")
def local_bf16_table(small27_npz: Path, tmp_path_factory: pytest.TempPathFactory) -> list:
    """The grid's table from the local executor in bf16."""
    out = tmp_path_factory.mktemp("local-bf16") / "run"
    more = ("--n-jobs", "2", "--precision", "bf16")
    search = [sys.executable, "-m", "deepnet", "search", *_data(small27_npz, out, *more)]
    subprocess.run(search, check=True, capture_output=True, timeout=600)
    return results_table(out / "results.csv")


@needs_bf16
@needs_cluster
def test_a_bf16_search_trains_in_bf16_on_every_node(
    small27_npz, local_table, local_bf16_table, cluster_dir
):
    """The precision travels to the actors: the cluster's table is the local bf16 search's,
    which is not the float32 one."""
    output = _search_on_cluster(cluster_dir, small27_npz, more=("--precision", "bf16"))
    assert "the Ray cluster at 127.0.0.1:6380 (bf16)" in output, output
    table = results_table(cluster_dir / "run" / "results.csv")
    assert table == local_bf16_table
    assert table != local_table


@needs_cluster
@pytest.mark.skipif(platform.machine() != "x86_64", reason="an x86-64 CPU level")
def test_bf16_on_nodes_without_it_is_one_line_and_trains_nothing(small27_npz, cluster_dir):
    """The nodes build their kernels for a CPU without AVX512_BF16 (x86-64-v3): each worker
    refuses bf16 as it starts, and the driver says so in one line."""
    output = _search_on_cluster(
        cluster_dir, small27_npz, ok=False, more=("--precision", "bf16"), DEEPNET_MARCH="x86-64-v3"
    )
    errors = [line for line in output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, output
    assert "no bf16 products (no AVX512_BF16); use precision=fp32." in errors[0], errors[0]
    assert "Traceback" not in output
    assert not (cluster_dir / "run" / "results.csv").exists()


@needs_cluster
def test_a_node_running_another_deepnet_is_refused_by_name(small27_npz, local_table, cluster_dir):
    """The second node imports a copy of deepnet with another version: the search stops as
    the actors start, naming that node and both builds, with no trial trained; on a
    cluster of one deepnet the same command then resumes and finishes."""
    other = cluster_dir / "other"
    shutil.copytree(
        Path(deepnet.__file__).parent, other / "deepnet", ignore=shutil.ignore_patterns("*.pyc")
    )
    init = other / "deepnet" / "__init__.py"
    init.write_text(init.read_text().replace(f'"{deepnet.__version__}"', '"0.0.1"'))
    output = _search_on_cluster(
        cluster_dir, small27_npz, ok=False, SECOND_NODE_PYTHONPATH=str(other)
    )
    errors = [line for line in output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, output
    assert re.search(
        rf"node 127\.0\.0\.1 \(node \w{{8}}\) runs deepnet 0\.0\.1, kernels \w+, but "
        rf"this driver runs deepnet {re.escape(deepnet.__version__)}, kernels \w+: install",
        errors[0],
    ), errors[0]
    assert "Traceback" not in output
    assert not (cluster_dir / "run" / "results.csv").exists()  # nothing trained
    shutil.rmtree(other)
    _search_on_cluster(cluster_dir, small27_npz)  # the same command, the same folder
    assert results_table(cluster_dir / "run" / "results.csv") == local_table


def test_without_ray_the_executor_says_what_to_install(small27_npz, tmp_path):
    hide_ray = (
        "import sys; sys.modules['ray'] = None; from deepnet.cli import main; "
        "sys.argv[0] = 'deepnet'; main()"
    )
    search = _data(small27_npz, tmp_path / "run", "--executor", "ray")
    done = subprocess.run(
        [sys.executable, "-c", hide_ray, "search", *search],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'deepnet[ray]'" in lines[0], done.stderr
    assert not (tmp_path / "run").exists()  # refused before anything was made


@pytest.mark.parametrize("listening", [False, True], ids=["nothing there", "not a Ray head"])
def test_an_address_without_a_ray_head_is_one_line_within_seconds(small27_npz, tmp_path, listening):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        if listening:
            server.listen()  # connects, never answers
        address = f"127.0.0.1:{server.getsockname()[1]}"  # bound only: refused
        search = _data(small27_npz, tmp_path / "run", "--executor", "ray", "--ray-address", address)
        start = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "deepnet", "search", *search],
            capture_output=True,
            text=True,
            timeout=120,
        )
        seconds = time.monotonic() - start
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    expected = "not as a Ray cluster's head" if listening else "cannot reach the Ray cluster"
    assert len(lines) == 1 and expected in lines[0] and address in lines[0]
    assert seconds < 60  # the interpreter's start on a busy machine, then 5 s at most
    assert not (tmp_path / "run").exists()


def test_a_node_with_another_build_is_refused_naming_it_and_both():
    here = Build.here()
    older = NodeIdentity("10.0.0.7", "ab12cd34ef", Build("0.0.9", here.kernels), native=True)
    with pytest.raises(ConfigError) as refused:
        check_same_build(here, older)
    message = str(refused.value)
    assert "node 10.0.0.7 (node ab12cd34) runs deepnet 0.0.9" in message
    assert f"this driver runs deepnet {here.version}" in message
    assert "same deepnet on every node" in message
    rebuilt = NodeIdentity("10.0.0.7", "ab12cd34ef", Build(here.version, "0123456789ab"), True)
    with pytest.raises(ConfigError, match=r"kernels 0123456789ab, but"):
        check_same_build(here, rebuilt)
    check_same_build(here, NodeIdentity("10.0.0.8", "cd", Build.here(), native=False))


def test_executors_are_named_and_an_address_needs_ray():
    assert Executor.of("ray").kind is ExecutorKind.RAY
    assert str(Executor("ray", "10.0.0.1:6379")) == "the Ray cluster at 10.0.0.1:6379"
    with pytest.raises(ConfigError, match=r"executor='dask' is not known: use 'local'"):
        Executor.of("dask")
    with pytest.raises(ConfigError, match="is for executor 'ray', not 'local'"):
        Executor("local", "10.0.0.1:6379")


def test_run_search_and_grid_search_cv_take_the_executor(tiny):
    """Both reach the Ray executor (refused here: nothing listens at the address)."""
    from deepnet import DeepNetClassifier, GridSearchCV, SearchSpec, Space, Stage, run_search
    from deepnet.errors import SearchError

    x, y = tiny
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        cluster = Executor("ray", f"127.0.0.1:{server.getsockname()[1]}")
        space = Space.from_dict({"optimizer": ["Adam"], "epochs": [1]})
        with pytest.raises(SearchError, match="cannot reach the Ray cluster at 127"):
            run_search(
                SearchSpec((Stage(space),), cv=2),
                x,
                y,
                2,
                storage=None,
                study_name="t",
                data={},
                executor=cluster,
            )
        grid = GridSearchCV(DeepNetClassifier(epochs=1), {"optimizer": ["Adam"]}, executor=cluster)
        with pytest.raises(SearchError, match="cannot reach the Ray cluster at 127"):
            grid.fit(x, y)
