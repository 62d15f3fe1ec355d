from pathlib import Path

import pytest

from deepnet import SearchSpec, Space, Stage, TrainConfig, load_dataset, train, tune

SPACE = {"optimizer": ["Adam", "Nadam"], "neurons": [16, 32], "epochs": [3], "batch_size": [64]}


@pytest.fixture(scope="session")
def small_data(small27_npz):
    """small27 loaded through --path, so a report reloads the same 400 test images."""
    return load_dataset("mnist", (2, 7), small27_npz)


@pytest.fixture(scope="session")
def train_run(small_data, small27_npz, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("train") / "run"
    train(TrainConfig(epochs=2, batch_size=64), small_data, run_dir=run_dir, data_path=small27_npz)
    return run_dir


@pytest.fixture(scope="session")
def search_run(small_data, small27_npz, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("search") / "run"
    spec = SearchSpec((Stage(Space.from_dict(SPACE), "halving"),), cv=3, seed=0)
    tune(spec, small_data, run_dir, n_jobs=1, data_path=small27_npz)
    return run_dir
