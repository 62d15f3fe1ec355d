"""Shared fixtures: real data loaded once per session, and fixed seeds for every test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from deepnet.data import Dataset, load_dataset
from deepnet.data.sources import FASHION_DEFAULT
from tests import postgres


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Tests never read or write the user's MNIST cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DEEPNET_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(autouse=True)
def _fixed_seeds() -> None:
    """Tests never depend on global RNG state left by another test."""
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session")
def mnist27() -> Dataset:
    """Real MNIST, digits 2 vs 7, as the seed used it."""
    return load_dataset("mnist", (2, 7))


@pytest.fixture(scope="session")
def small27(mnist27: Dataset) -> Dataset:
    """A stratified 1200-image slice of 2 vs 7 for fast training tests (test split: 400)."""
    rng = np.random.default_rng(0)
    train = np.sort(rng.choice(len(mnist27.y_train), 1200, replace=False))
    test = np.sort(rng.choice(len(mnist27.y_test), 400, replace=False))
    return Dataset(
        mnist27.name,
        mnist27.x_train[train],
        mnist27.y_train[train],
        mnist27.x_test[test],
        mnist27.y_test[test],
        mnist27.class_names,
        mnist27.classes,
        mnist27.source,
    )


requires_fashion_mnist = pytest.mark.skipif(
    not FASHION_DEFAULT.is_dir(),
    reason="Debian package dataset-fashion-mnist is not installed (make test installs it)",
)


@pytest.fixture(scope="session")
def small27_npz(small27: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """small27 as a Keras-style mnist.npz (original labels 2 and 7), for --path."""
    path = tmp_path_factory.mktemp("data") / "mnist-small.npz"
    original = np.array(small27.classes)
    np.savez(
        path,
        x_train=small27.x_train,
        y_train=original[small27.y_train],
        x_test=small27.x_test,
        y_test=original[small27.y_test],
    )
    return path


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL server on 127.0.0.1 for the session (stopped after); its URL."""
    if not postgres.available():
        pytest.skip("Debian's postgresql is not installed (make test installs it as root)")
    with postgres.postgres_server() as url:
        yield url
