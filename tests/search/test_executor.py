"""Workers: inline and process workers agree, a dead worker is reported, worker counts are
capped, and the seed's search cells run as a plain script with every core."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from deepnet.config import TrainConfig
from deepnet.engine import Member, PopulationEngine
from deepnet.engine.checkpoint import (
    CheckpointPolicy,
    CheckpointStore,
    SavedMember,
    data_fingerprint,
    fingerprint,
)
from deepnet.engine.device import Compute, Precision
from deepnet.search.executor import (
    InlineWorker,
    Pool,
    ProcessWorker,
    WorkerLostError,
    resolve_n_jobs,
    start_workers,
)
from tests.engine.fallback import needs_bf16

CORES = os.cpu_count() or 1


def _members(n_images: int) -> list[Member]:
    config = TrainConfig(epochs=2, batch_size=64)
    half = np.arange(n_images // 2)
    return [
        Member(f"{opt}/0", config.replace(optimizer=opt), half, half + n_images // 2, seed=1)
        for opt in ("Adam", "Nadam")
    ]


def test_a_process_worker_trains_what_an_inline_worker_trains(small27):
    x, y = small27.x_train[:400], small27.y_train[:400]
    inline, process = InlineWorker(x, y, 2), ProcessWorker()
    try:
        process.load(x, y, 2)
        rounds = []
        for worker in (inline, process):
            worker.submit(_members(len(y)))
            worker.advance(threads=2)  # a share of the cores: the same results, sooner
            first = worker.receive()
            worker.advance(stop=["Adam/0"], threads=1)
            rounds.append((first, worker.receive()))
        (inline_1, inline_2), (process_1, process_2) = rounds
        assert len(process_1) == 2 and [r.key for r in process_2] == ["Nadam/0"]
        for a, b in zip(inline_1 + inline_2, process_1 + process_2, strict=True):
            assert (a.key, a.epoch, a.status) == (b.key, b.epoch, b.status)
            assert a.val_accuracy == pytest.approx(b.val_accuracy, abs=1e-6)
        assert process.alive()
    finally:
        process.close()
    assert process.process.returncode == 0


@needs_bf16
def test_a_process_worker_trains_in_the_precision_it_is_loaded_with(small27):
    x, y = small27.x_train[:400], small27.y_train[:400]
    bf16 = Compute("cpu", Precision.BF16)
    process = ProcessWorker()
    try:
        process.load(x, y, 2, compute=bf16)
        results = []
        for worker in (InlineWorker(x, y, 2), InlineWorker(x, y, 2, compute=bf16), process):
            worker.submit(_members(len(y)))
            worker.advance(threads=1)
            results.append(worker.receive())
    finally:
        process.close()
    fp32, inline, sent = results
    for a, b, c in zip(fp32, inline, sent, strict=True):
        assert a.key == b.key == c.key
        assert b.val_loss == c.val_loss  # the same bits in the worker process
        assert b.val_loss != a.val_loss  # bf16's own
        assert b.val_accuracy == pytest.approx(a.val_accuracy, abs=0.03)


def test_a_worker_trains_on_the_threads_the_driver_gives_it(small27):
    import torch

    from deepnet.search.protocol import Advance, Submit
    from deepnet.search.worker import answer

    x, y = small27.x_train[:200], small27.y_train[:200]
    worker, before = InlineWorker(x, y, 2), torch.get_num_threads()
    try:
        answer(worker, Submit(_members(len(y))))
        assert len(answer(worker, Advance([], 3)).results) == 2
        assert torch.get_num_threads() == 3
        answer(worker, Advance(["Adam/0"]))  # None: as before
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_busy_workers_share_the_cores_evenly():
    pool = Pool([], cores=4)
    assert [pool.threads(busy) for busy in (0, 1, 2, 3, 4, 8)] == [4, 4, 2, 1, 1, 1]
    assert Pool([]).threads(1) is None  # the inline worker and Ray's actors keep their own


def test_a_killed_worker_is_reported_lost_not_waited_for(small27):
    worker = ProcessWorker()
    worker.load(small27.x_train[:200], small27.y_train[:200], 2)
    worker.process.kill()
    worker.process.wait()
    worker.submit(_members(200))  # the pipe is broken: reported by receive, not raised here
    worker.advance()
    with pytest.raises(WorkerLostError, match=rf"worker process {worker.process.pid} died"):
        worker.receive()
    assert not worker.alive()
    worker.close()


def test_no_more_workers_than_cores_with_one_warning():
    with pytest.warns(UserWarning, match=rf"n_jobs={CORES + 14} .* the {CORES} cores"):
        assert resolve_n_jobs(CORES + 14) == CORES


def test_no_more_workers_than_trials_that_can_train_at_once(small27):
    assert resolve_n_jobs(-1, max_useful=1) == 1
    assert resolve_n_jobs(None, max_useful=5) == 1
    with start_workers(small27.x_train, small27.y_train, 2, -1, max_useful=1) as pool:
        assert [type(w) for w in pool.workers] == [InlineWorker]


@pytest.mark.parametrize("n_jobs", [0, 1.5, True, "2"])
def test_bad_n_jobs_is_a_config_error(n_jobs):
    with pytest.raises(ValueError, match=r"n_jobs=.* is not allowed"):
        resolve_n_jobs(n_jobs)


def _seed_script(tmp_path: Path, npz: Path, epochs: int) -> Path:
    """The seed's data preparation and GridSearchCV cell, imports changed, with no
    ``if __name__ == "__main__":`` guard (as the notebook's cells pasted into a file)."""
    script = tmp_path / "seed_grid.py"
    script.write_text(
        textwrap.dedent(
            f"""\
            import numpy as np
            from deepnet import DeepNetClassifier as KerasClassifier, GridSearchCV

            with np.load({str(npz)!r}) as data:  # mnist.load_data(), a slice of it
                x_train, y_train = data["x_train"][:600], data["y_train"][:600]
            train_picks = np.logical_or(y_train == 2, y_train == 7)
            x_train = x_train[train_picks]
            y_train = np.array(y_train[train_picks] == 7, dtype=int)
            x_train = x_train.reshape(x_train.shape[0], 28, 28, 1).astype("float32") / 255
            y_train = np.eye(2)[y_train]  # keras.utils.to_categorical

            batch_size = 64
            epochs = {epochs}
            optimizer = ["Adam", "Nadam"]
            neurons = [16]
            param_grid = dict(batch_size=batch_size, epochs=epochs, optimizer=optimizer,
                              neurons=neurons)
            model = KerasClassifier()
            grid_search = GridSearchCV(model, param_grid=param_grid, n_jobs=-1, verbose=1)
            grid = grid_search.fit(x_train, y_train)
            print("Grid Score = ", grid.best_score_)
            print("Grid Best Parameters = ", grid.best_params_)
            """
        )
    )
    return script


@pytest.mark.skipif(CORES < 2, reason="n_jobs=-1 starts worker processes only on 2+ cores")
def test_the_seeds_grid_cell_runs_as_a_plain_script_on_every_core(small27_npz, tmp_path):
    script = _seed_script(tmp_path, small27_npz, epochs=1)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=180, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout.count("Fitting 3 folds for each of 2 candidates") == 1  # ran once
    score = float(done.stdout.split("Grid Score = ")[1].split()[0])
    assert 0.5 < score <= 1


def _workers_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"deepnet.search.worker" in cmdline:
            found.append(int(entry.name))
    return found


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc").is_dir() or CORES < 2, reason="needs /proc and 2+ cores")
def test_killing_the_driver_ends_its_workers_quietly(small27_npz, tmp_path):
    script = _seed_script(tmp_path, small27_npz, epochs=500)  # far longer than the test
    driver = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 120
        while len(workers := _workers_of(driver.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(workers) == 2, "the search did not start its two workers"
        time.sleep(3)  # loaded and training
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        deadline = time.monotonic() + 60  # a worker still importing torch on a busy machine
        while any(_running(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_running(w) for w in workers)
        _, stderr = driver.communicate(timeout=10)  # workers shared the driver's stderr
    finally:
        driver.kill()
        for w in workers:
            if _running(w):
                os.kill(w, signal.SIGKILL)
    assert b"Traceback" not in stderr and b"BrokenPipeError" not in stderr, stderr.decode()


def test_a_worker_resumes_a_checkpointed_batch_and_replays_its_saved_epochs(small27, tmp_path):
    x, y = small27.x_train[:400], small27.y_train[:400]
    policy = CheckpointPolicy(tmp_path, every=0)
    members = [dataclasses.replace(m, checkpoint="r0") for m in _members(len(y))]
    members = [dataclasses.replace(m, config=m.config.replace(epochs=3)) for m in members]
    keys = [m.key for m in members]
    first = InlineWorker(x, y, 2, policy)
    first.submit(members)
    first.advance()
    saved = first.receive()  # epoch 1 of both, saved together in one file
    assert len(list(tmp_path.iterdir())) == 1
    again = InlineWorker(x, y, 2, policy)  # a rerun's worker: the first is gone
    again.submit(members)
    again.advance()
    replayed = again.receive()
    assert [(r.key, r.epoch) for r in replayed] == [
        ("Adam/0", 1),
        ("Nadam/0", 1),
        ("Adam/0", 2),
        ("Nadam/0", 2),
    ]
    assert replayed[:2] == saved
    uninterrupted = InlineWorker(x, y, 2)
    uninterrupted.submit(members)
    for _ in range(2):
        uninterrupted.advance()
        expected = uninterrupted.receive()
    assert [r.val_loss for r in replayed[2:]] == [r.val_loss for r in expected]
    third = InlineWorker(x, y, 2, policy)  # what the resumed worker saved: the whole history
    third.submit(members)
    third.advance()
    last = third.receive()
    assert sorted((r.epoch, r.key) for r in last) == [(e, k) for e in (1, 2, 3) for k in keys]
    assert all(r.done for r in last if r.epoch == 3)
    assert list(tmp_path.iterdir()) == []  # its members finished: the file went


def test_a_checkpoint_that_does_not_fit_its_members_is_ignored_with_a_warning(small27, tmp_path):
    x, y = small27.x_train[:400], small27.y_train[:400]
    member = dataclasses.replace(_members(len(y))[0], checkpoint="r0")
    narrow = dataclasses.replace(member, config=member.config.replace(neurons=8))
    training = PopulationEngine().train(x, y, 2, [narrow])
    results = training.step()
    name = fingerprint([member], data_fingerprint(x, y))  # under the wider member's name
    snapshot = training.snapshot(narrow.key)
    CheckpointStore(tmp_path).save(name, [SavedMember(snapshot, tuple(results))])
    resumed = InlineWorker(x, y, 2, CheckpointPolicy(tmp_path))
    with pytest.warns(UserWarning, match=r"ignoring the checkpoints of members \['Adam/0'\]"):
        resumed.submit([member])
    resumed.advance()
    assert [r.epoch for r in resumed.receive()] == [1]  # from scratch


def test_a_stopped_trial_loses_its_checkpoint(small27, tmp_path):
    x, y = small27.x_train[:400], small27.y_train[:400]
    worker = InlineWorker(x, y, 2, CheckpointPolicy(tmp_path, every=0))
    worker.submit([dataclasses.replace(m, checkpoint="r0") for m in _members(len(y))])
    worker.advance()
    worker.receive()
    assert len(list(tmp_path.iterdir())) == 1
    worker.advance(stop=["Adam/0", "Nadam/0"])  # pruned: it is never resumed
    assert list(tmp_path.iterdir()) == []
