"""DeepNetClassifier: the seed's network as a scikit-learn estimator.

It follows scikit-learn's contract (the constructor stores its arguments untouched,
``fit`` validates them, fitted attributes end in ``_``), so it works inside scikit-learn's
own GridSearchCV and cross_val_score, and ``clone`` round-trips. Its parameters are the
seed's hyperparameter names with the same defaults as ``TrainConfig``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.metrics import accuracy_score

from deepnet.config import PARAMS, TrainConfig
from deepnet.data.arrays import as_images, as_images_and_labels
from deepnet.engine import EpochResult, Member, PopulationEngine, Status
from deepnet.errors import ConfigError, DataError, DeepNetError, DivergedError
from deepnet.evaluate import images_to_tensor, predict_logits


class NotFittedError(DeepNetError, SklearnNotFittedError):
    """An estimator was used before ``fit``; also scikit-learn's NotFittedError (and so a
    ValueError and an AttributeError, which keeps ``hasattr`` working).

    It lives here, not in ``deepnet.errors``, because its base class imports scikit-learn,
    which ``deepnet.errors`` must not pay for.
    """


class FittedState:
    """Fitted attributes (public names ending in "_") read before ``fit`` raise
    NotFittedError naming the fix, as scikit-learn's ``check_is_fitted`` does, rather than
    a bare AttributeError."""

    def __getattr__(self, name: str) -> Any:
        if name.endswith("_") and not name.startswith("_") and not self._is_fitted():
            raise NotFittedError(self._not_fitted(name))
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _is_fitted(self) -> bool:
        return any(k.endswith("_") and not k.startswith("_") for k in vars(self))

    def _require_fitted(self, use: str) -> None:
        if not self._is_fitted():
            raise NotFittedError(self._not_fitted(use))

    def _not_fitted(self, use: str) -> str:
        return f"this {type(self).__name__} is not fitted yet: call fit(X, y) before {use}."


class DeepNetClassifier(FittedState, ClassifierMixin, BaseEstimator):
    """Train the seed's CNN on images X (n, h, w, c), channels last (1 grey or 3 RGB), or
    grey (n, h, w) or flattened square (n, h*w); labels y.

    ``y`` may be class labels or a one-hot matrix (the seed used ``to_categorical``).
    uint8 images are scaled by 1/255; float images are used as given. ``image_shape_`` is
    the fitted (height, width, channels): other sizes or channel counts are refused.
    ``device``: where ``fit`` trains, "cpu" or "cuda[:N]" (predictions run on the CPU);
    ``precision``: "fp32", or "bf16" products where the CPU has AVX512_BF16.
    """

    def __init__(
        self,
        batch_size: int = 128,
        epochs: int = 12,
        optimizer: str = "Adadelta",
        learn_rate: float | None = None,
        activation: str = "relu",
        conv_activation: str | None = None,
        dense_activation: str | None = None,
        init_mode: str = "glorot_uniform",
        weight_constraint: float | None = None,
        dropout_rate: float = 0.5,
        neurons: int = 16,
        conv1_filters: int = 4,
        conv2_filters: int = 8,
        conv_dropout: float = 0.25,
        conv_blocks: int = 1,
        block2_filters: int | None = None,
        block3_filters: int | None = None,
        batch_norm: bool = False,
        augment_shift: int = 0,
        augment_rotate: float = 0.0,
        augment_scale: float = 0.0,
        augment_flip: bool = False,
        lr_schedule: str = "constant",
        warmup_epochs: int = 0,
        seed: int = 0,
        verbose: int = 0,
        device: str = "cpu",
        precision: str = "fp32",
    ):
        self.batch_size = batch_size
        self.epochs = epochs
        self.optimizer = optimizer
        self.learn_rate = learn_rate
        self.activation = activation
        self.conv_activation = conv_activation
        self.dense_activation = dense_activation
        self.init_mode = init_mode
        self.weight_constraint = weight_constraint
        self.dropout_rate = dropout_rate
        self.neurons = neurons
        self.conv1_filters = conv1_filters
        self.conv2_filters = conv2_filters
        self.conv_dropout = conv_dropout
        self.conv_blocks = conv_blocks
        self.block2_filters = block2_filters
        self.block3_filters = block3_filters
        self.batch_norm = batch_norm
        self.augment_shift = augment_shift
        self.augment_rotate = augment_rotate
        self.augment_scale = augment_scale
        self.augment_flip = augment_flip
        self.lr_schedule = lr_schedule
        self.warmup_epochs = warmup_epochs
        self.seed = seed
        self.verbose = verbose
        self.device = device
        self.precision = precision

    def config(self) -> TrainConfig:
        """The validated TrainConfig of the current parameters."""
        return TrainConfig.from_dict({name: getattr(self, name) for name in PARAMS})

    def fit(self, X: np.ndarray, y: np.ndarray) -> DeepNetClassifier:
        config = self.config()
        images, labels = as_images_and_labels(X, y)
        classes, encoded = np.unique(labels, return_inverse=True)
        if len(classes) < 2:
            raise ConfigError(f"y holds one class ({classes[0]!r}); a classifier needs two.")
        member = Member("model", config, np.arange(len(encoded)), np.arange(0), self.seed)
        engine = PopulationEngine(device=self.device, precision=self.precision)
        training = engine.train(images, encoded, len(classes), [member])
        history: list[EpochResult] = []
        for result in training:
            history.append(result)
            if self.verbose:
                print(
                    f"epoch {result.epoch}/{config.epochs} loss {result.train_loss:.4f} "
                    f"acc {result.train_accuracy:.4f}"
                )
        if history[-1].status is Status.DIVERGED:
            raise DivergedError(
                f"training diverged: {history[-1].reason}; try a smaller "
                "learn_rate or weight_constraint=3."
            )
        self.classes_ = classes
        self.model_ = training.model("model").eval()
        self.history_ = history
        self.image_shape_ = images.shape[1:]
        self.n_features_in_ = int(np.prod(self.image_shape_))
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        self._require_fitted("predict_proba")
        return self._proba(as_images(X))

    def predict(self, X: np.ndarray) -> np.ndarray:
        self._require_fitted("predict")
        return self.classes_[self._proba(as_images(X)).argmax(axis=1)]

    def score(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> float:
        """Accuracy; ``y`` may be one-hot, as the seed passed it to ``evaluate``."""
        self._require_fitted("score")
        images, labels = as_images_and_labels(X, y)
        predicted = self.classes_[self._proba(images).argmax(axis=1)]
        return float(accuracy_score(labels, predicted, sample_weight=sample_weight))

    def _proba(self, images: np.ndarray) -> np.ndarray:
        if images.shape[1:] != self.image_shape_:
            raise DataError(
                f"X holds {_describe(images.shape[1:])} but this DeepNetClassifier was fitted "
                f"on {_describe(self.image_shape_)}; pass images of the fitted size and "
                "channels."
            )
        logits = predict_logits(self.model_, images_to_tensor(images))
        return torch.softmax(logits, dim=1).numpy()


def _describe(shape: tuple[int, int, int]) -> str:
    height, width, channels = shape
    plural = "s" if channels > 1 else ""
    return (
        f"{height}x{width} images with {channels} channel{plural} "
        f"({height * width * channels} features)"
    )
