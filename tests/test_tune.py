import contextlib
import importlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deepnet import ConfigError, RunExistsError, RunFormatError, SearchError, SearchSpec
from deepnet.errors import DiskFullError, RunBusyError
from deepnet.report import report
from deepnet.tune import checkpoint_policy, default_storage, finished_trials, load_search, tune
from tests import postgres
from tests.tables import results_table
from tests.test_lock import hold_in_another_process

SPEC = SearchSpec.from_mapping(
    {
        "strategy": "grid",
        "space": {"optimizer": ["Adam", "Nadam"], "epochs": [1], "batch_size": [64]},
    }
)


@pytest.fixture(scope="module")
def searched(small27, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("search") / "run"
    return tune(SPEC, small27, run_dir, n_jobs=1), run_dir


def test_search_run_folder(searched):
    _, run_dir = searched
    assert {p.name for p in run_dir.iterdir()} >= {
        "run.json",
        "search.json",
        "study.db",
        "results.csv",
        "refit",
    }
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"
    lines = (run_dir / "results.csv").read_text().splitlines()
    assert lines[0].startswith("rank,stage,trial,state,mean_cv_accuracy,std,split0_accuracy")
    assert len(lines) == 3


def test_refit_is_the_best_configuration_tested_once(searched):
    result, _ = searched
    refit = result.refit
    assert refit.config.optimizer == result.outcome.best.params["optimizer"]
    assert refit.options["validation_split"] == 0.0  # all the training images
    assert refit.metrics.n == 400 and refit.metrics.accuracy > 0.9


def test_load_search_reads_it_back(searched):
    result, run_dir = searched
    saved = load_search(run_dir)
    assert saved.status == "finished" and len(saved.rows) == 2
    assert saved.rows[0].params == result.outcome.best.params
    assert saved.refit.metrics == result.refit.metrics


def test_running_again_resumes_and_retrains_nothing(searched, small27):
    _, run_dir = searched
    refit_weights = (run_dir / "refit" / "model.safetensors").read_bytes()
    trained = []
    again = tune(
        SPEC, small27, run_dir, n_jobs=1, on_trial=trained.append, on_refit_epoch=trained.append
    )
    assert trained == []
    assert (run_dir / "refit" / "model.safetensors").read_bytes() == refit_weights
    assert len(again.outcome.rows) == 2


def test_a_different_search_in_the_same_folder_is_refused(searched, small27):
    _, run_dir = searched
    other = SearchSpec.from_mapping({"space": {"optimizer": ["SGD"], "epochs": [1]}})
    with pytest.raises(RunExistsError, match="holds a different search"):
        tune(other, small27, run_dir, n_jobs=1)


def test_a_folder_that_is_not_a_search(tmp_path, small27):
    (tmp_path / "x.txt").write_text("mine")
    with pytest.raises(RunExistsError, match="not a deepnet run"):
        tune(SPEC, small27, tmp_path, n_jobs=1)
    with pytest.raises(RunFormatError, match="not a search run folder"):
        load_search(tmp_path)


def test_low_disk_space_is_refused_before_training(tmp_path, small27, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9, 10**6))
    with pytest.raises(RunExistsError, match=r"only 1 MB free"):
        tune(SPEC, small27, tmp_path / "run", n_jobs=1, on_trial=pytest.fail)


def test_a_moved_search_folder_still_reads(searched, tmp_path):
    import shutil

    _, run_dir = searched
    moved = tmp_path / "moved"
    shutil.copytree(run_dir, moved)
    assert [r.params for r in load_search(moved).rows] == [
        r.params for r in load_search(run_dir).rows
    ]


def test_finished_trials_is_what_resuming_keeps(searched, tmp_path):
    _, run_dir = searched
    assert finished_trials(run_dir) == 2
    assert finished_trials(tmp_path / "new") == 0


def test_a_bad_storage_leaves_the_folder_usable(small27, tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(SearchError, match="the study storage nosuchdb://x uses 'nosuchdb'"):
        tune(SPEC, small27, run_dir, storage="nosuchdb://x", n_jobs=1, on_trial=pytest.fail)
    assert not run_dir.exists()  # nothing was recorded
    tune(SPEC, small27, run_dir, n_jobs=1, refit=False)  # the corrected command
    assert [r.finished for r in load_search(run_dir).rows] == [True, True]


def test_resuming_into_another_study_is_refused(searched, small27, tmp_path):
    _, run_dir = searched
    recorded = default_storage(run_dir)
    other_db = tmp_path / "other.db"
    with pytest.raises(RunExistsError, match=rf"holds study 'run' in {recorded}; this command "):
        tune(SPEC, small27, run_dir, storage=f"sqlite:///{other_db}", on_trial=pytest.fail)
    assert not other_db.exists()
    with pytest.raises(RunExistsError, match=r"gives study 'other' in .*leave out --storage"):
        tune(SPEC, small27, run_dir, study_name="other", on_trial=pytest.fail)
    again = tune(SPEC, small27, run_dir, storage=recorded, study_name="run", n_jobs=1)
    assert len(again.outcome.rows) == 2  # the recorded values, given again: resumed


def test_a_deleted_study_is_reported_not_recreated(searched, small27, tmp_path):
    _, run_dir = searched
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    (copy / "study.db").unlink()
    with pytest.raises(RunFormatError, match=r"the study .*copy/study\.db is gone"):
        load_search(copy)
    with pytest.raises(RunFormatError, match=r"the study .*copy/study\.db is gone"):
        tune(SPEC, small27, copy, n_jobs=1, on_trial=pytest.fail)  # nor resumed from nothing
    assert not (copy / "study.db").exists()


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount here (the tests mount as root): {done.stderr.strip()}")


@contextlib.contextmanager
def _mounted(target: Path, *calls: list[str]) -> Iterator[Path]:
    """``target`` after mount's ``calls`` (the first mounts, the others remount), for the
    block; skipped where this process may not mount."""
    target.mkdir(parents=True)
    _mount(*calls[0], str(target))
    try:
        for args in calls[1:]:
            _mount(*args, str(target))
        yield target
    finally:  # lazily: the SQLite connections Optuna pools keep files open
        subprocess.run(["umount", "--lazy", str(target)], check=True)


def small_disk(target: Path, size: str) -> contextlib.AbstractContextManager[Path]:
    """A real filesystem of ``size`` (tmpfs) at ``target``."""
    return _mounted(target, ["-t", "tmpfs", "-o", f"size={size}", "tmpfs"])


def read_only_view(source: Path, target: Path) -> contextlib.AbstractContextManager[Path]:
    """``source`` seen through a read-only bind mount at ``target``: unwritable even by root."""
    return _mounted(target, ["--bind", str(source)], ["-o", "remount,bind,ro"])


@pytest.mark.parametrize("writer", ["gone", "live"])
def test_a_read_only_search_folder_reads(searched, tmp_path, writer):
    _, run_dir = searched
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)  # with the study's -wal and -shm: a writer's connection
    if writer == "gone":
        with contextlib.closing(sqlite3.connect(copy / "study.db")) as con:
            con.execute("select count(*) from trials")  # the last connection to close
        assert not (copy / "study.db-wal").exists()
    with read_only_view(copy, tmp_path / "ro") as view:
        assert not os.access(view, os.W_OK)
        saved = load_search(view)
        assert [r.params for r in saved.rows] == [r.params for r in load_search(run_dir).rows]
        assert saved.refit.metrics == load_search(run_dir).refit.metrics
        assert finished_trials(view) == 2


def fill(disk: Path) -> None:
    """Write a file until the disk is full."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, bytes(2**20))
    except OSError:
        pass
    finally:
        os.close(fd)


@pytest.mark.parametrize("when", ["search", "refit"])
def test_a_full_disk_is_one_error_and_the_search_resumes(small27, tmp_path, when):
    with small_disk(tmp_path / "disk", "64m") as disk:
        run_dir = disk / "run"
        filled = []

        def fill_once(_):
            if not filled:
                filled.append(fill(disk))

        hooks = {"on_trial" if when == "search" else "on_refit_epoch": fill_once}
        with pytest.raises(DiskFullError) as full:
            tune(SPEC, small27, run_dir, n_jobs=1, **hooks)
        assert str(full.value).startswith(
            f"the disk holding {run_dir} is full; the trials finished so far are kept in its "
            "study. Free some space, then run the same command again to resume."
        )
        assert not list(run_dir.rglob("*.tmp"))
        assert json.loads((run_dir / "run.json").read_text())["kind"] == "search"
        (disk / "filler").unlink()
        again = tune(SPEC, small27, run_dir, n_jobs=1)
        assert again.refit.metrics.n == 400
        assert load_search(run_dir).status == "finished"


def test_a_search_on_a_busy_folder_is_refused(searched, small27):
    _, run_dir = searched
    before = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()}
    holder = hold_in_another_process(run_dir)
    try:
        with pytest.raises(RunBusyError, match=rf"in use by process {holder.pid} on "):
            tune(SPEC, small27, run_dir, n_jobs=1, on_trial=pytest.fail)
    finally:
        holder.kill()
        holder.wait()
    after = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()}
    assert after == {**before, "lock.json": after["lock.json"]}  # nothing else touched


def _running_trials(db: Path) -> int:
    try:
        with sqlite3.connect(db) as con:
            return con.execute("select count(*) from trials where state = 'RUNNING'").fetchone()[0]
    except sqlite3.Error:  # not created yet
        return 0


def test_sigterm_stops_a_search_like_ctrl_c_and_it_resumes(small27_npz, tmp_path):
    run_dir = tmp_path / "run"
    command = [
        *(sys.executable, "-m", "deepnet", "search", "--n-jobs", "1", "--no-refit"),
        *("--param", "optimizer=Adam,Nadam", "--param", "epochs=3", "--param", "batch_size=64"),
        *("--path", str(small27_npz), "--out", str(run_dir)),
    ]
    search = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while _running_trials(run_dir / "study.db") == 0 and time.time() < deadline:
        time.sleep(0.1)
    search.send_signal(signal.SIGTERM)
    out, _ = search.communicate(timeout=60)
    assert search.returncode == 130, out
    assert "stopped; finished trials are kept" in out and "Traceback" not in out
    assert json.loads((run_dir / "run.json").read_text())["status"] == "interrupted"
    assert not (run_dir / "lock.json").exists()
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    saved = load_search(run_dir)
    assert saved.status == "finished" and [r.finished for r in saved.rows] == [True, True]


def _pg_completed(url: str, study: str) -> int:
    import psycopg

    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    try:
        with psycopg.connect(dsn, connect_timeout=5) as con:
            query = (
                "select count(*) from trials t join studies s on t.study_id = s.study_id "
                "where s.study_name = %s and t.state = 'COMPLETE'"
            )
            return con.execute(query, (study,)).fetchone()[0]
    except psycopg.Error:  # no tables yet
        return 0


@pytest.mark.slow
def test_a_search_in_postgresql_killed_and_resumed(
    postgres_url, small27_npz, tmp_path, monkeypatch
):
    """The study in a real PostgreSQL server (URL in $DEEPNET_STORAGE): read and reported
    while the search runs, SIGKILL midway, the rerun keeps what finished, ends with the table
    of an uninterrupted search in another study of the same server, and the password is in
    no file of either run folder."""
    grid = ["optimizer=Adam,Nadam,RMSprop,Adamax", "neurons=8,16", "epochs=2", "batch_size=64"]
    args = [sys.executable, "-m", "deepnet", "search", "--n-jobs", "1", "--no-refit"]
    args += [a for p in grid for a in ("--param", p)] + ["--path", str(small27_npz)]
    env = {**os.environ, "DEEPNET_STORAGE": postgres_url, "PYTHONUNBUFFERED": "1"}
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    proc = subprocess.Popen(
        [*args, "--out", str(killed)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.time() + 300
    while _pg_completed(postgres_url, "killed") < 4 and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGSTOP)  # hold it mid-search while a reader looks
    live = load_search(killed, postgres_url)  # what results, report and dashboard read
    assert live.status == "running" and sum(r.ok for r in live.rows) >= 4
    with monkeypatch.context() as patch:  # as `deepnet report` reads it
        patch.setenv("DEEPNET_STORAGE", postgres_url)
        page = report(killed, out=tmp_path / "live.html").read_text()
    assert "best CV accuracy" in page and postgres.PASSWORD not in page
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = _pg_completed(postgres_url, "killed")
    assert 4 <= done_before < 8
    rerun = subprocess.run(
        [*args, "--out", str(killed)], env=env, capture_output=True, text=True, timeout=600
    )
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    retrained = [line for line in rerun.stdout.splitlines() if line.startswith("trial ")]
    assert len(retrained) == 8 - done_before  # nothing finished is trained again
    subprocess.run(
        [*args, "--out", str(clean)], env=env, check=True, capture_output=True, timeout=600
    )
    assert _pg_completed(postgres_url, "clean") == _pg_completed(postgres_url, "killed") == 8
    assert results_table(killed / "results.csv") == results_table(clean / "results.csv")
    assert "study.db" not in {p.name for p in killed.iterdir()}
    password = postgres.PASSWORD.encode()
    for path in [*killed.rglob("*"), *clean.rglob("*")]:
        assert not path.is_file() or password not in path.read_bytes(), path
    assert postgres.PASSWORD not in rerun.stdout + rerun.stderr
    record = json.loads((killed / "search.json").read_text())
    assert record["storage"].startswith("postgresql+psycopg://deepnet:***@127.0.0.1:")
    # readers need the password too: from $DEEPNET_STORAGE, or refused with the fix
    assert len(load_search(killed, postgres_url).rows) == 8
    with pytest.raises(SearchError, match="never stores: give the full URL"):
        load_search(killed)


def test_ctrl_c_while_the_folder_is_claimed_leaves_nothing_to_block_a_rerun(
    small27, tmp_path, monkeypatch
):
    """Ctrl-C while the new study is being created (the slow part of the claim) used to leave
    run.json without search.json: a folder the same command then refused as not a search."""
    tune_module = importlib.import_module("deepnet.tune")  # `deepnet.tune` is the function

    run_dir = tmp_path / "run"
    create_study = tune_module.optuna_study_names

    def interrupted(storage, create=False):
        if create:
            raise KeyboardInterrupt  # as a Ctrl-C arriving there would
        return create_study(storage, create)

    monkeypatch.setattr(tune_module, "optuna_study_names", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tune(SPEC, small27, run_dir, n_jobs=1, refit=False)
    assert not run_dir.exists()
    monkeypatch.undo()
    assert len(tune(SPEC, small27, run_dir, n_jobs=1, refit=False).outcome.rows) == 2


def test_too_many_folds_are_refused_before_the_folder_is_claimed(small27, tmp_path):
    run_dir = tmp_path / "run"
    too_many = SearchSpec(SPEC.stages, cv=700, seed=0)
    with pytest.raises(ConfigError, match="cv=700 folds cannot be stratified"):
        tune(too_many, small27, run_dir, n_jobs=1, refit=False)
    assert not run_dir.exists()  # so the corrected command starts afresh
    assert len(tune(SPEC, small27, run_dir, n_jobs=1, refit=False).outcome.rows) == 2


def test_checkpoints_default_to_the_run_folder_every_minute(tmp_path):
    policy = checkpoint_policy(tmp_path / "run")
    assert policy.directory == (tmp_path / "run" / "checkpoints").absolute()
    assert policy.every == 60
    assert checkpoint_policy(Path("rel"), 0).directory == Path("rel", "checkpoints").absolute()
    assert checkpoint_policy(tmp_path, 0, tmp_path / "shared").directory == tmp_path / "shared"
    assert checkpoint_policy(tmp_path, -1) is None


@pytest.mark.parametrize("every", [-5, float("nan")])
def test_a_bad_checkpoint_interval_is_refused_before_anything_is_made(small27, tmp_path, every):
    with pytest.raises(ConfigError, match=r"checkpoint_every=.* seconds >= 0 .* -1 for no"):
        tune(SPEC, small27, tmp_path / "run", n_jobs=1, checkpoint_every=every)
    assert not (tmp_path / "run").exists()


def test_tune_refits_a_folds_ensemble_and_refuses_bad_ones_first(small27, tmp_path):
    run_dir = tmp_path / "run"
    for bad, message in ((0, "ensemble=0 is not allowed"), ("fold", "did you mean 'folds'")):
        with pytest.raises(ConfigError, match=message):
            tune(SPEC, small27, run_dir, n_jobs=1, ensemble=bad)
        assert not run_dir.exists()
    with pytest.raises(ConfigError, match="drop --no-refit"):
        tune(SPEC, small27, run_dir, n_jobs=1, ensemble=2, refit=False)
    result = tune(SPEC, small27, run_dir, n_jobs=1, ensemble="folds")
    record = result.refit.ensemble
    assert record.plan.describe() == "3 folds"  # one member per fold of the search's cv
    assert record.members == ("members/fold-0", "members/fold-1", "members/fold-2")
    assert result.refit.config == result.outcome.best_config
    assert result.refit.metrics == record.test.of(record.choice)
    assert load_search(run_dir).refit.ensemble == record
