"""The seed's hyperparameters: names, defaults, allowed values, and validation.

``TrainConfig`` is the single source of truth. Each field carries a ``Param`` spec in its
metadata; the CLI options, search-space validation and error messages are all derived
from those specs, so a parameter is declared exactly once.
"""

from __future__ import annotations

import difflib
import math
import numbers
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from deepnet.errors import ConfigError
from deepnet.nn.activations import ACTIVATIONS
from deepnet.nn.initializers import INITIALIZERS
from deepnet.nn.optimizers import OPTIMIZERS

NONE_WORDS = ("none", "null", "")
TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")
LR_SCHEDULES = ("constant", "cosine", "onecycle", "step")
MAX_CONV_BLOCKS = 3


@dataclass(frozen=True)
class Param:
    """How one hyperparameter is checked and parsed."""

    name: str
    kind: type  # int, float, str or bool
    help: str
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # True: low itself is not allowed
    high_open: bool = False
    optional: bool = False  # True: None is allowed and means "unset"

    def rule(self) -> str:
        """The allowed values, in words."""
        if self.kind is bool:
            return "true or false"
        if self.choices:
            text = "one of " + ", ".join(self.choices)
        else:
            kind = "an integer" if self.kind is int else "a number"
            bounds = []
            if self.low is not None:
                bounds.append(f"{'>' if self.low_open else '>='} {self.low:g}")
            if self.high is not None:
                bounds.append(f"{'<' if self.high_open else '<='} {self.high:g}")
            text = kind + (" " + " and ".join(bounds) if bounds else "")
        return text + (", or none" if self.optional else "")

    def validate(self, value: Any) -> Any:
        """Return the canonical form of ``value`` or raise ConfigError naming the rule."""
        if value is None or (self.optional and isinstance(value, str) and value.lower() == "none"):
            if self.optional:
                return None
            raise self._error(value)
        if self.kind is bool:
            return self._flag(value)
        if self.choices:
            return self._choice(value)
        is_bool = isinstance(value, bool)
        if self.kind is int and (is_bool or not isinstance(value, numbers.Integral)):
            raise self._error(value)
        if self.kind is float and (is_bool or not isinstance(value, numbers.Real)):
            raise self._error(value)
        number = self.kind(value)
        if not math.isfinite(number) or not self._in_range(number):
            raise self._error(value)
        return number

    def parse(self, text: str) -> Any:
        """Validate a value written as text (a CLI option or a TOML string)."""
        text = text.strip()
        if self.optional and text.lower() in NONE_WORDS:
            return None
        if self.choices or self.kind is bool:
            return self.validate(text)
        try:
            number = self.kind(text) if self.kind is int else float(text)
        except ValueError:
            raise self._error(text) from None
        return self.validate(number)

    def _flag(self, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in TRUE_WORDS + FALSE_WORDS:
            return value.strip().lower() in TRUE_WORDS
        raise self._error(value)

    def _choice(self, value: Any) -> str:
        if isinstance(value, str):
            for choice in self.choices:
                if choice.lower() == value.strip().lower():
                    return choice
        hint = difflib.get_close_matches(str(value), self.choices, n=1, cutoff=0.5)
        raise self._error(value, f" (did you mean {hint[0]!r}?)" if hint else "")

    def _in_range(self, x: float) -> bool:
        if self.low is not None and (x < self.low or (self.low_open and x == self.low)):
            return False
        return self.high is None or (x < self.high or (not self.high_open and x == self.high))

    def _error(self, value: Any, hint: str = "") -> ConfigError:
        return ConfigError(f"{self.name}={value!r} is not allowed: it must be {self.rule()}{hint}.")


def _param(default: Any, kind: type, help_text: str, **rule: Any) -> Any:
    return field(default=default, metadata={"param": (kind, help_text, rule)})


ACTIVATION_NAMES = tuple(ACTIVATIONS)


@dataclass(frozen=True)
class TrainConfig:
    """One configuration of the seed's network and its training, with Keras 2.0 meanings.

    Defaults are the seed's baseline: Adadelta, 12 epochs, batch 128, relu, 16 units.
    Values are validated and canonicalised on construction (``optimizer="nadam"``
    becomes ``"Nadam"``); a bad value raises ConfigError naming the allowed values.
    """

    batch_size: int = _param(128, int, "samples per update", low=1)
    epochs: int = _param(12, int, "passes over the training data", low=1, high=10_000)
    optimizer: str = _param("Adadelta", str, "optimizer", choices=tuple(OPTIMIZERS))
    learn_rate: float | None = _param(
        None,
        float,
        "learning rate (none: the optimizer's Keras default)",
        low=0,
        low_open=True,
        optional=True,
    )
    activation: str = _param(
        "relu",
        str,
        "activation of the conv layers and the hidden dense layer",
        choices=ACTIVATION_NAMES,
    )
    conv_activation: str | None = _param(
        None,
        str,
        "activation of the conv layers (none: --activation)",
        choices=ACTIVATION_NAMES,
        optional=True,
    )
    dense_activation: str | None = _param(
        None,
        str,
        "activation of the hidden dense layer (none: --activation)",
        choices=ACTIVATION_NAMES,
        optional=True,
    )
    init_mode: str = _param(
        "glorot_uniform",
        str,
        "kernel initializer of the dense layers",
        choices=tuple(INITIALIZERS),
    )
    weight_constraint: float | None = _param(
        None,
        float,
        "MaxNorm bound on the hidden dense kernel (none: unconstrained)",
        low=0,
        low_open=True,
        optional=True,
    )
    dropout_rate: float = _param(
        0.5, float, "dropout after the hidden dense layer", low=0, high=1, high_open=True
    )
    neurons: int = _param(16, int, "units of the hidden dense layer", low=1, high=65_536)
    conv1_filters: int = _param(4, int, "filters of the first conv layer", low=1, high=1024)
    conv2_filters: int = _param(8, int, "filters of the second conv layer", low=1, high=1024)
    conv_dropout: float = _param(
        0.25, float, "dropout after each max-pooling layer", low=0, high=1, high_open=True
    )
    conv_blocks: int = _param(
        1,
        int,
        "conv-conv-pool blocks (1: the seed's; 2-3 stack more, each with its own filters)",
        low=1,
        high=MAX_CONV_BLOCKS,
    )
    block2_filters: int | None = _param(
        None,
        int,
        "filters of both convs of block 2 (none: twice conv2_filters)",
        low=1,
        high=1024,
        optional=True,
    )
    block3_filters: int | None = _param(
        None,
        int,
        "filters of both convs of block 3 (none: twice block 2's)",
        low=1,
        high=1024,
        optional=True,
    )
    batch_norm: bool = _param(
        False, bool, "batch normalisation after each convolution, before its activation"
    )
    augment_shift: int = _param(
        0, int, "random translation of training images, up to this many pixels", low=0, high=64
    )
    augment_rotate: float = _param(
        0.0, float, "random rotation of training images, up to this many degrees", low=0, high=180
    )
    augment_scale: float = _param(
        0.0,
        float,
        "random scaling of training images, by a factor in [1 - s, 1 + s]",
        low=0,
        high=1,
        high_open=True,
    )
    augment_flip: bool = _param(
        False, bool, "random horizontal flips of training images (not for digits)"
    )
    lr_schedule: str = _param(
        "constant",
        str,
        "learning-rate schedule over the member's epochs",
        choices=LR_SCHEDULES,
    )
    warmup_epochs: int = _param(
        0, int, "epochs of linear learning-rate warm-up (fewer than --epochs)", low=0
    )

    def __post_init__(self) -> None:
        for name, spec in PARAMS.items():
            object.__setattr__(self, name, spec.validate(getattr(self, name)))
        if self.warmup_epochs >= self.epochs:
            raise ConfigError(
                f"warmup_epochs={self.warmup_epochs} is not fewer than epochs={self.epochs}: "
                "the warm-up must leave epochs to train at the full rate; lower warmup_epochs."
            )

    @property
    def block_filters(self) -> tuple[tuple[int, int], ...]:
        """Each conv-conv-pool block's two filter counts, block 1 first."""
        blocks = [(self.conv1_filters, self.conv2_filters)]
        for given in (self.block2_filters, self.block3_filters)[: self.conv_blocks - 1]:
            width = given or 2 * blocks[-1][1]
            blocks.append((width, width))
        return tuple(blocks)

    @property
    def augments(self) -> bool:
        """Whether training batches are augmented at all."""
        return bool(
            self.augment_shift or self.augment_rotate or self.augment_scale or self.augment_flip
        )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a mapping, refusing unknown names with a "did you mean" hint."""
        check_names(values)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some parameters changed (validated, unknown names refused)."""
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    @property
    def effective_learn_rate(self) -> float:
        """``learn_rate``, or the optimizer's Keras default when unset."""
        if self.learn_rate is not None:
            return self.learn_rate
        return OPTIMIZERS[self.optimizer].hyper["lr"]


PARAMS: dict[str, Param] = {
    f.name: Param(f.name, *f.metadata["param"][:2], **f.metadata["param"][2])
    for f in fields(TrainConfig)
}


def check_names(values: dict[str, Any]) -> None:
    """Raise ConfigError for any name that is not a hyperparameter, with the closest match."""
    for name in values:
        if name not in PARAMS:
            hint = difflib.get_close_matches(name, PARAMS, n=1, cutoff=0.5)
            suggestion = f"did you mean {hint[0]!r}? " if hint else ""
            raise ConfigError(
                f"unknown parameter {name!r}: {suggestion}known parameters are {', '.join(PARAMS)}."
            )
