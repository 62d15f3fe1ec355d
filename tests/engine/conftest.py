"""The engines' fixtures: small27's digits as colour images."""

from __future__ import annotations

import numpy as np
import pytest

from deepnet.data import Dataset
from tests.engine.images import colour_digits


@pytest.fixture(scope="session")
def colour27(small27: Dataset) -> np.ndarray:
    """small27's training digits as RGB 32x32 images (n, 32, 32, 3), labels small27's."""
    return colour_digits(small27.x_train)
