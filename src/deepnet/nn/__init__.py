"""Keras 2.0-faithful building blocks in PyTorch: the seed's network and its parts."""

from deepnet.nn.activations import ACTIVATIONS
from deepnet.nn.functional import categorical_crossentropy, dropout, dropout_scale, max_norm_
from deepnet.nn.initializers import INITIALIZERS
from deepnet.nn.network import SeedNet, pool_activate
from deepnet.nn.optimizers import OPTIMIZERS, KerasOptimizer

__all__ = [
    "ACTIVATIONS",
    "INITIALIZERS",
    "OPTIMIZERS",
    "KerasOptimizer",
    "SeedNet",
    "categorical_crossentropy",
    "dropout",
    "dropout_scale",
    "max_norm_",
    "pool_activate",
]
