"""Metrics of a trained network: loss, accuracy, confusion matrix, Wilson interval."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from deepnet.errors import DataError
from deepnet.nn import categorical_crossentropy

EVAL_BATCH = 4096
Z_95 = 1.959963984540054


def channels_last(images: np.ndarray) -> np.ndarray:
    """(n, h, w, c) images as given, or grey (n, h, w) ones as (n, h, w, 1) (a view): the
    public entry points take both; DataError for any other shape."""
    images = np.asarray(images)
    if images.ndim == 3:
        return images[..., np.newaxis]
    if images.ndim != 4:
        raise DataError(
            f"images have shape {images.shape}; expected (n, height, width, channels) or grey "
            "(n, height, width) (deepnet.data.arrays.as_images converts other layouts)."
        )
    return images


def channels_first(images: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(n, h, w, c) images (or grey (n, h, w)) as a new tensor (n, c, h, w) of ``dtype``,
    the layout torch's layers take, values unscaled."""
    images = channels_last(images)
    n, h, w, c = images.shape
    x = torch.empty((n, c, h, w), dtype=dtype)
    x.copy_(torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2))
    return x


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """(n, h, w, c) images, channels last (or grey (n, h, w)), -> float32 (n, c, h, w), the
    network's input.

    uint8 pixels are scaled to [0, 1] by /255, as the seed did; float images are taken as
    already scaled (the seed passed x_train / 255 to its scikit-learn wrapper).
    """
    x = channels_first(images)
    if np.asarray(images).dtype == np.uint8:
        x.div_(255.0)
    return x


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits (n, classes) in eval mode (no dropout), in chunks to bound memory."""
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(x[i : i + EVAL_BATCH]) for i in range(0, len(x), EVAL_BATCH)])
    finally:
        model.train(was_training)


def loss_and_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Mean clipped cross-entropy and accuracy of logits against integer labels."""
    loss = categorical_crossentropy(logits, labels).mean().item()
    accuracy = (logits.argmax(1) == labels).to(torch.float64).mean().item()
    return loss, accuracy


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class TestMetrics:
    """What one evaluation on a test split measured."""

    __test__ = False  # not a pytest test class, despite the name

    loss: float
    accuracy: float
    n: int
    correct: int
    interval_95: tuple[float, float]
    confusion: list[list[int]]  # confusion[true][predicted]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TestMetrics:
        return cls(**{**d, "interval_95": tuple(d["interval_95"])})


def evaluate(model: nn.Module, images: np.ndarray, labels: np.ndarray) -> TestMetrics:
    """Evaluate ``model`` (a SeedNet, or an ensemble of them) on (n, h, w, c) images (uint8,
    or floats already scaled) and integer labels."""
    return metrics_of(predict_logits(model, images_to_tensor(images)), labels)


def metrics_of(logits: torch.Tensor, labels: np.ndarray) -> TestMetrics:
    """The metrics of logits (n, classes) against integer labels: what ``evaluate`` measures,
    for logits already computed (an ensemble compares its members' without a second pass)."""
    labels = np.asarray(labels, dtype=np.int64)
    loss, accuracy = loss_and_accuracy(logits, torch.from_numpy(labels))
    predicted = logits.argmax(1).numpy()
    k = logits.shape[1]
    confusion = np.bincount(labels * k + predicted, minlength=k * k).reshape(k, k)
    correct = int(np.trace(confusion))
    return TestMetrics(
        loss,
        accuracy,
        len(labels),
        correct,
        wilson_interval(correct, len(labels)),
        confusion.tolist(),
    )
