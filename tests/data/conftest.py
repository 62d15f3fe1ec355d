import pytest

from deepnet.data import load_dataset


@pytest.fixture(scope="session")
def mnist_all():
    return load_dataset("mnist", "all")
