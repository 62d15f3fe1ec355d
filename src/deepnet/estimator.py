"""DeepNetClassifier: the seed's network as a scikit-learn estimator.

It follows scikit-learn's contract (the constructor stores its arguments untouched,
``fit`` validates them, fitted attributes end in ``_``), so it works inside scikit-learn's
own GridSearchCV and cross_val_score, and ``clone`` round-trips. Its parameters are the
seed's hyperparameter names with the same defaults as ``TrainConfig``.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import accuracy_score
from sklearn.utils.validation import check_is_fitted

from deepnet.config import PARAMS, TrainConfig
from deepnet.engine import EpochResult, Member, PopulationEngine, Status
from deepnet.errors import ConfigError, DivergedError
from deepnet.evaluate import images_to_tensor, predict_logits


class DeepNetClassifier(ClassifierMixin, BaseEstimator):
    """Train the seed's CNN on images X (n, h, w[, 1]) or flattened (n, h*w); labels y.

    ``y`` may be class labels or a one-hot matrix (the seed used ``to_categorical``).
    uint8 images are scaled by 1/255; float images are used as given.
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
        seed: int = 0,
        verbose: int = 0,
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
        self.seed = seed
        self.verbose = verbose

    def config(self) -> TrainConfig:
        """The validated TrainConfig of the current parameters."""
        return TrainConfig.from_dict({name: getattr(self, name) for name in PARAMS})

    def fit(self, X: np.ndarray, y: np.ndarray) -> DeepNetClassifier:
        config = self.config()
        images = as_images(X)
        labels = as_labels(y)
        self.classes_, encoded = np.unique(labels, return_inverse=True)
        if len(self.classes_) < 2:
            raise ConfigError(f"y holds one class ({self.classes_[0]!r}); a classifier needs two.")
        member = Member("model", config, np.arange(len(encoded)), np.arange(0), self.seed)
        training = PopulationEngine().train(images, encoded, len(self.classes_), [member])
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
        self.model_ = training.model("model").eval()
        self.history_ = history
        self.n_features_in_ = int(np.prod(images.shape[1:]))
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "model_")
        logits = predict_logits(self.model_, images_to_tensor(as_images(X)))
        return torch.softmax(logits, dim=1).numpy()

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]

    def score(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> float:
        """Accuracy; ``y`` may be one-hot, as the seed passed it to ``evaluate``."""
        return float(accuracy_score(as_labels(y), self.predict(X), sample_weight=sample_weight))


def as_images(X: np.ndarray) -> np.ndarray:
    """(n, h, w) images from (n, h, w), (n, h, w, 1), (n, 1, h, w) or square (n, h*w)."""
    x = np.asarray(X)
    if x.ndim == 4 and 1 in (x.shape[1], x.shape[3]):
        x = x[:, 0] if x.shape[1] == 1 else x[..., 0]
    elif x.ndim == 2:
        side = round(np.sqrt(x.shape[1]))
        if side * side != x.shape[1]:
            raise ConfigError(
                f"X has {x.shape[1]} features per row, which is not a square "
                "image; pass images as (n, height, width)."
            )
        x = x.reshape(len(x), side, side)
    if x.ndim != 3:
        raise ConfigError(
            f"X has shape {np.asarray(X).shape}; expected grey images (n, height, "
            "width), (n, height, width, 1) or (n, 1, height, width)."
        )
    if x.dtype != np.uint8:
        x = x.astype(np.float32)
    return x


def as_labels(y: np.ndarray) -> np.ndarray:
    """Class labels from labels or a one-hot matrix."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:
        return y.argmax(axis=1)
    return y.ravel()
