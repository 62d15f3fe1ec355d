import numpy as np
import pytest

from deepnet.data import load_dataset


@pytest.fixture(scope="session")
def mnist_all():
    return load_dataset("mnist", "all")


@pytest.fixture(scope="session")
def digits(mnist27):
    """60 real 2s and 60 real 7s, (120, 28, 28, 1) uint8, with their names ("2" or "7")."""
    pick = np.concatenate([np.flatnonzero(mnist27.y_train == k)[:60] for k in (0, 1)])
    return mnist27.x_train[pick], np.array(mnist27.class_names)[mnist27.y_train[pick]]
