"""Run folders to report on: finished ones, and real unfinished ones (Ctrl-C, SIGKILL)."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from deepnet import SearchSpec, Space, Stage, TrainConfig, load_dataset, train, tune
from deepnet.data import Dataset

SPACE = {"optimizer": ["Adam", "Nadam"], "neurons": [16, 32], "epochs": [3], "batch_size": [64]}
# Every parameter given, so the results table has many columns: 2 x 4 configurations.
WIDE_SPACE = {
    "optimizer": ["Adam", "Nadam"],
    "learn_rate": [0.0005, 0.001, 0.002, 0.004],
    "activation": ["relu"],
    "conv_activation": ["relu"],
    "dense_activation": ["relu"],
    "init_mode": ["lecun_uniform"],
    "weight_constraint": [3.0],
    "dropout_rate": [0.5],
    "conv_dropout": [0.25],
    "neurons": [16],
    "conv1_filters": [4],
    "conv2_filters": [8],
    "epochs": [1],
    "batch_size": [64],
}
KILL_TIMEOUT_S = 300


@pytest.fixture(scope="session")
def small_data(small27_npz):
    """small27 loaded through --path, so a report reloads the same 400 test images."""
    return load_dataset("mnist", (2, 7), small27_npz)


@pytest.fixture(scope="session")
def train_run(small_data, small27_npz, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("train") / "run"
    train(TrainConfig(epochs=2, batch_size=64), small_data, run_dir=run_dir, data_path=small27_npz)
    return run_dir


TINTS = np.array([[255, 40, 40], [40, 200, 60], [60, 90, 255], [250, 200, 30]])


def tinted(images: np.ndarray, width: int) -> np.ndarray:
    """Grey digits (n, 28, 28, 1) as RGB images (n, 28, width, 3), each stroke in one of
    TINTS' colours (by position), padded with black on the right to ``width``."""
    tint = TINTS[np.arange(len(images)) % len(TINTS)][:, None, None, :]
    rgb = (images.astype(np.int64) * tint // 255).astype(np.uint8)
    return np.pad(rgb, ((0, 0), (0, 0), (0, width - images.shape[2]), (0, 0)))


@pytest.fixture(scope="session")
def rgb_npz(small27: Dataset, tmp_path_factory) -> Path:
    """small27's digits tinted into colour, 28x36 (not square), as an arrays .npz."""
    path = tmp_path_factory.mktemp("rgb") / "digits-rgb.npz"
    original = np.array(small27.classes)
    np.savez(
        path,
        x_train=tinted(small27.x_train, 36),
        y_train=original[small27.y_train],
        x_test=tinted(small27.x_test, 36),
        y_test=original[small27.y_test],
    )
    return path


@pytest.fixture(scope="session")
def rgb_run(rgb_npz, tmp_path_factory) -> Path:
    """One epoch on the colour digits, loaded through --path as a user's arrays would be."""
    run_dir = tmp_path_factory.mktemp("rgb") / "run"
    data = load_dataset(path=rgb_npz)
    train(TrainConfig(epochs=1, batch_size=64), data, run_dir=run_dir, data_path=rgb_npz)
    return run_dir


@pytest.fixture(scope="session")
def search_run(small_data, small27_npz, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("search") / "run"
    spec = SearchSpec((Stage(Space.from_dict(SPACE), "halving"),), cv=3, seed=0)
    tune(spec, small_data, run_dir, n_jobs=1, data_path=small27_npz)
    return run_dir


@pytest.fixture(scope="session")
def wide_search(small_data, small27_npz, tmp_path_factory) -> Path:
    """A finished grid of 8 trials over every parameter: enough for parameter importance."""
    run_dir = tmp_path_factory.mktemp("wide") / "run"
    spec = SearchSpec((Stage(Space.from_dict(WIDE_SPACE), "grid"),), cv=2, seed=0)
    tune(spec, small_data, run_dir, n_jobs=1, data_path=small27_npz)
    return run_dir


@pytest.fixture(scope="session")
def interrupted_search(small_data, small27_npz, tmp_path_factory) -> Path:
    """The halving search of ``search_run`` stopped by Ctrl-C after two trials ended."""
    run_dir = tmp_path_factory.mktemp("interrupted") / "run"
    spec = SearchSpec((Stage(Space.from_dict(SPACE), "halving"),), cv=3, seed=0)
    ended = []

    def ctrl_c_after_two(trial):
        ended.append(trial)
        if len(ended) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tune(spec, small_data, run_dir, n_jobs=1, data_path=small27_npz, on_trial=ctrl_c_after_two)
    return run_dir


def _trials(db: Path, state: str) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db) as con:
            query = "select count(*) from trials where state = ?"
            return con.execute(query, (state,)).fetchone()[0]
    except sqlite3.Error:  # not created yet
        return 0


def _kill_when(args: list[str], ready) -> None:
    """Run ``python -m deepnet ARGS`` and SIGKILL it once ``ready()`` holds."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "deepnet", *args],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + KILL_TIMEOUT_S
    while not ready() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, "the process ended before it could be killed midway"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="session")
def killed_search(small27_npz, tmp_path_factory) -> Path:
    """`deepnet search` SIGKILLed in its second batch: 4 trials complete, others running."""
    run_dir = tmp_path_factory.mktemp("killed") / "search"
    db = run_dir / "study.db"
    grid = ["optimizer=Adam,Nadam,RMSprop,Adamax", "neurons=8,16", "epochs=2", "batch_size=64"]
    params = [a for p in grid for a in ("--param", p)]
    _kill_when(
        ["search", *params, "--n-jobs", "1", "--path", str(small27_npz), "--out", str(run_dir)],
        lambda: _trials(db, "COMPLETE") >= 4 and _trials(db, "RUNNING") >= 1,
    )
    return run_dir


@pytest.fixture(scope="session")
def killed_train(small27_npz, tmp_path_factory) -> Path:
    """`deepnet train` SIGKILLed while it trains: run.json says running, no epochs saved."""
    run_dir = tmp_path_factory.mktemp("killed") / "train"
    options = ["--epochs", "30", "--batch-size", "64", "--path", str(small27_npz)]
    _kill_when(
        ["train", *options, "--out", str(run_dir)],
        lambda: (run_dir / "config.json").is_file(),
    )
    return run_dir
