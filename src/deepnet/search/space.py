"""Search spaces with the seed's parameter names: value lists (grids) and distributions.

A space maps each hyperparameter to a tuple of allowed values (a grid dimension) or to an
Optuna distribution (for random search and TPE). Everything is validated against the
parameter's rules in ``deepnet.config`` when the space is built, so a bad value fails
before any training. The same space can be written three ways:

    Python    {"optimizer": ["SGD", "Adam"], "learn_rate": loguniform(1e-4, 1e-1)}
    CLI       --param optimizer=SGD,Adam --param learn_rate=loguniform:1e-4:1e-1
    TOML      optimizer = ["SGD", "Adam"]
              learn_rate = { loguniform = [1e-4, 1e-1] }
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from deepnet.config import PARAMS, check_names
from deepnet.errors import ConfigError

Dimension = tuple[Any, ...] | FloatDistribution | IntDistribution
# a range's name -> (its number type, whether it is uniform in log space)
KINDS: dict[str, tuple[type, bool]] = {
    "loguniform": (float, True),
    "uniform": (float, False),
    "int": (int, False),
    "logint": (int, True),
}


def loguniform(low: float, high: float) -> FloatDistribution:
    """Floats between low and high, uniform in log space (learning rates)."""
    return _range("loguniform", low, high)


def uniform(low: float, high: float) -> FloatDistribution:
    """Floats uniform between low and high (dropout rates)."""
    return _range("uniform", low, high)


def randint(low: int, high: int, log: bool = False) -> IntDistribution:
    """Integers from low to high inclusive (hidden units, filters)."""
    return _range("logint" if log else "int", low, high)


@dataclass(frozen=True)
class Space:
    """Validated search space: parameter name -> value tuple or distribution."""

    dims: Mapping[str, Dimension]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Space:
        """From a seed-style ``param_grid`` dict (a scalar means a one-value list)."""
        if not isinstance(values, Mapping):
            raise ConfigError(
                f"space={values!r} is not allowed: it must map parameter names to values, "
                "e.g. {'neurons': [16, 32]}."
            )
        if not values:
            raise ConfigError("the search space is empty: give at least one parameter to search.")
        check_names(values)
        return cls({name: _dimension(name, value) for name, value in values.items()})

    @classmethod
    def from_options(cls, options: list[str]) -> Space:
        """From CLI options ``name=v1,v2`` or ``name=loguniform:low:high``."""
        return cls.from_dict(parse_options(options))

    def largest(self, name: str) -> Any:
        """The largest value ``name`` takes in this space (None: not searched)."""
        dim = self.dims.get(name)
        if dim is None:
            return None
        return max(dim) if isinstance(dim, tuple) else dim.high

    @property
    def is_grid(self) -> bool:
        return all(isinstance(d, tuple) for d in self.dims.values())

    @property
    def grid_size(self) -> int:
        """Number of configurations in the grid (math.inf when a distribution is present)."""
        if not self.is_grid:
            return math.inf  # type: ignore[return-value]
        return math.prod(len(d) for d in self.dims.values())

    def grid(self) -> Iterator[dict[str, Any]]:
        """Every configuration of a grid, the last parameter varying fastest."""
        names = list(self.dims)
        for values in itertools.product(*(self.dims[n] for n in names)):
            yield dict(zip(names, values, strict=True))

    def distributions(self) -> dict[str, BaseDistribution]:
        """The space as Optuna distributions (value lists become categorical)."""
        return {
            name: CategoricalDistribution(d) if isinstance(d, tuple) else d
            for name, d in self.dims.items()
        }

    def fixed(self, params: Mapping[str, Any]) -> Space:
        """This space with ``params`` added as one-value dimensions, where not searched."""
        extra = {k: (v,) for k, v in params.items() if k not in self.dims}
        return Space({**extra, **self.dims})

    def to_json(self) -> dict[str, Any]:
        """A JSON description, for fingerprints and run folders."""
        out: dict[str, Any] = {}
        for name, d in self.dims.items():
            if isinstance(d, tuple):
                out[name] = list(d)
            else:
                number = int if isinstance(d, IntDistribution) else float
                kind = next(k for k, v in KINDS.items() if v == (number, d.log))
                out[name] = {kind: [d.low, d.high]}
        return out

    def __str__(self) -> str:
        return json.dumps(self.to_json())


def parse_options(options: list[str]) -> dict[str, Any]:
    """CLI ``--param`` options -> a raw space mapping (validated by Space.from_dict)."""
    values: dict[str, Any] = {}
    for option in options:
        name, sep, text = option.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not text.strip():
            raise ConfigError(
                f"--param {option!r} has no values: write --param NAME=V1,V2,... or "
                "--param NAME=loguniform:LOW:HIGH."
            )
        check_names({name: None})
        values[name] = parse_dimension(name, text)
    return values


def parse_dimension(name: str, text: str) -> Any:
    """CLI text -> a value list or a distribution (``loguniform:1e-4:1e-1``, ``int:16:128``)."""
    kind, _, rest = text.partition(":")
    if kind.strip().lower() in KINDS and rest:
        bounds = rest.split(":")
        if len(bounds) != 2:
            raise ConfigError(f"--param {name}={text}: write {kind}:LOW:HIGH.")
        return {kind.strip().lower(): bounds}
    return [PARAMS[name].parse(item) for item in text.split(",")]


def _dimension(name: str, value: Any) -> Dimension:
    spec = PARAMS[name]
    if isinstance(value, BaseDistribution):
        return _checked_distribution(name, value)
    if isinstance(value, Mapping):
        if len(value) != 1 or next(iter(value)) not in KINDS:
            raise ConfigError(
                f"{name}={dict(value)!r}: a distribution is one of {', '.join(KINDS)} with "
                f"[low, high], e.g. {{loguniform = [1e-4, 1e-1]}}."
            )
        ((kind, bounds),) = value.items()
        return _checked_distribution(name, _distribution(name, kind, bounds))
    if isinstance(value, str) or not isinstance(value, (list, tuple, range)):
        value = [value]  # the seed wrote batch_size=128 in its param_grid
    if len(value) == 0:
        raise ConfigError(f"{name} has an empty list of values: give at least one value.")
    values = tuple(spec.validate(v) if not isinstance(v, str) else spec.parse(v) for v in value)
    if len(set(values)) != len(values):
        raise ConfigError(f"{name} lists a value twice: {list(value)}; list each value once.")
    return values


def _distribution(name: str, kind: str, bounds: Any) -> BaseDistribution:
    spec = PARAMS[name]
    if not isinstance(bounds, (list, tuple)) or len(bounds) != 2:
        raise ConfigError(f"{name}: {kind} needs two numbers [low, high], got {bounds!r}.")
    number, _ = KINDS[kind]
    if number is int and spec.kind is not int:
        raise ConfigError(f"{name}: {kind} ranges are for integer parameters with integer bounds.")
    if number is float and spec.kind is not float:
        raise ConfigError(
            f"{name} is {'an integer' if spec.kind is int else 'a choice'} "
            f"parameter: use {'int:LOW:HIGH' if spec.kind is int else 'a list'}."
        )
    return _range(kind, *bounds, what=f"{name}: {kind}")


def _range(kind: str, low: Any, high: Any, what: str = "") -> FloatDistribution | IntDistribution:
    """The ``kind`` distribution over [low, high] (bounds may be numbers or their text), with
    one-line errors where Optuna would raise its own: bad, infinite, reversed or (log)
    non-positive bounds, and fractional bounds of an integer range."""
    what = what or kind
    try:
        if any(isinstance(b, bool) for b in (low, high)):
            raise TypeError
        lo, hi = float(low), float(high)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} needs two numbers [low, high], got {[low, high]!r}.") from None
    number, log = KINDS[kind]
    got = f"got [{lo:g}, {hi:g}]"
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ConfigError(f"{what} needs finite bounds, {got}.")
    if lo >= hi:
        raise ConfigError(f"{what} needs low < high, {got}.")
    if log and lo <= 0:
        raise ConfigError(f"{what} needs low > 0 (it is uniform in log space), {got}.")
    if number is int:
        if lo != int(lo) or hi != int(hi):
            raise ConfigError(f"{what} needs integer bounds, {got}.")
        return IntDistribution(int(lo), int(hi), log=log)
    return FloatDistribution(lo, hi, log=log)


def _checked_distribution(name: str, dist: BaseDistribution) -> Dimension:
    spec = PARAMS[name]
    if not isinstance(dist, (FloatDistribution, IntDistribution)):
        raise ConfigError(
            f"{name}: only float and integer ranges are distributions; "
            "give categorical values as a list."
        )
    if spec.choices:
        raise ConfigError(f"{name} takes one of {', '.join(spec.choices)}: give a list.")
    if isinstance(dist, FloatDistribution) and spec.kind is int:
        raise ConfigError(f"{name} is an integer parameter: use randint / int:LOW:HIGH.")
    for bound in (dist.low, dist.high):
        spec.validate(spec.kind(bound) if spec.kind is int else float(bound))
    return dist
