"""The keys of a search spec, each with its rule: one schema for TOML files, mappings, CLI
options and the Python API.

``check_spec`` checks a whole mapping (every key, type and range, every stage) before any
stage is built, so a bad file fails with one line naming the key, its value and what is
allowed, before a run folder exists. ``Stage`` and ``SearchSpec`` check their own values
with the same ``Key`` objects, so Python callers get the same messages. What a parameter of
the space allows is ``deepnet.config``'s business (checked by ``Space``).
"""

from __future__ import annotations

import difflib
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from deepnet.errors import ConfigError
from deepnet.search.strategies import STRATEGIES
from deepnet.seeds import MAX_SEED

PRUNING_STRATEGIES = ("halving", "hyperband")  # the ones with rungs
# their defaults, which a stored spec writes for every stage
PRUNING_DEFAULTS = {"min_epochs": 1, "reduction_factor": 3}


@dataclass(frozen=True)
class Key:
    """One key: the allowed values in words, the test, and the canonical form of a good value."""

    name: str
    rule: str
    accepts: Callable[[Any], bool]
    canonical: Callable[[Any], Any] = lambda value: value

    def check(self, value: Any, where: str = "") -> Any:
        """``value`` in canonical form, or a ConfigError naming key, value and rule."""
        if not self.accepts(value):
            where = f" in {where}" if where else ""
            raise ConfigError(
                f"{self.name}={value!r} is not allowed{where}: it must be {self.rule}."
            )
        return self.canonical(value)


def _integer(name: str, low: int, high: int | None = None, optional: bool = False) -> Key:
    """An integer key; ``optional``: None (unset, as Python and JSON write it) is allowed."""

    def accepts(value: Any) -> bool:
        if value is None:
            return optional
        whole = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        return whole and low <= value and (high is None or value <= high)

    rule = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"
    return Key(name, rule, accepts, lambda value: None if value is None else int(value))


def _is_strategy(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower() in STRATEGIES


def _is_list_of_tables(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)


STRATEGY = Key(
    "strategy", "one of " + ", ".join(STRATEGIES), _is_strategy, lambda s: s.strip().lower()
)
N_ITER = _integer("n_iter", 1, optional=True)
MIN_EPOCHS = _integer("min_epochs", 1)
REDUCTION_FACTOR = _integer("reduction_factor", 2)
SPACE = Key(
    "space",
    "a table of parameters and their values, e.g. [space] neurons = [16, 32]",
    lambda value: isinstance(value, Mapping),
)
CV = _integer("cv", 2)
SEED = _integer("seed", 0, MAX_SEED)
STAGES = Key(
    "stages",
    "a non-empty list of stage tables ([[stages]] with a space each)",
    _is_list_of_tables,
)


def _is_ensemble(value: Any) -> bool:
    from deepnet.ensemble import EnsemblePlan  # torch: imported only when the key is used

    try:
        EnsemblePlan.parse(value)
    except ConfigError:
        return False
    return True


def _is_share(value: Any) -> bool:
    from deepnet.ensemble import is_validation_share

    return is_validation_share(value)


# how the best configuration is refit: top-level keys, whatever the stages
ENSEMBLE = Key("ensemble", 'a number of seeds K >= 2 (e.g. 5) or "folds"', _is_ensemble)
ENSEMBLE_VALIDATION = Key(
    "ensemble_validation",
    "the share of the training images that chooses between the ensemble and its first "
    "member, between 0 and 1 (e.g. 0.1)",
    _is_share,
    float,
)

STAGE_KEYS = {k.name: k for k in (STRATEGY, N_ITER, MIN_EPOCHS, REDUCTION_FACTOR, SPACE)}
REFIT_KEYS = {k.name: k for k in (ENSEMBLE, ENSEMBLE_VALIDATION)}
SPEC_KEYS = {k.name: k for k in (CV, SEED, STAGES)} | REFIT_KEYS | STAGE_KEYS


def check_spec(values: Any, origin: str) -> list[Mapping[str, Any]]:
    """Check a whole spec mapping against the schema; return its stages' mappings (one for a
    file with a top-level [space]). ``origin`` names the source in messages."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"{origin} must be a table of search keys, not {values!r}.")
    _check_keys(values, SPEC_KEYS, origin)
    if "ensemble_validation" in values and "ensemble" not in values:
        raise ConfigError(
            f"ensemble_validation in {origin} has no effect without an ensemble: add "
            'ensemble = K (or "folds"), or leave ensemble_validation out.'
        )
    top_stage = [k for k in STAGE_KEYS if k in values]
    if "stages" not in values:
        stages, wheres = [{k: values[k] for k in top_stage}], [origin]
    elif top_stage:
        raise ConfigError(
            f"{origin} has both [[stages]] and a top-level {', '.join(top_stage)}: "
            "set them in each stage instead."
        )
    else:
        stages = values["stages"]
        wheres = [f"stage {i} of {origin}" for i in range(1, len(stages) + 1)]
    for stage, where in zip(stages, wheres, strict=True):
        _check_keys(stage, STAGE_KEYS, where)
        if "space" not in stage:
            raise ConfigError(f"{where} has no space: add a [space] table of parameters.")
        budget = [k for k, default in PRUNING_DEFAULTS.items() if stage.get(k, default) != default]
        strategy = str(stage.get("strategy", "grid")).strip().lower()
        if budget and strategy not in PRUNING_STRATEGIES:
            raise ConfigError(
                f"{' and '.join(budget)} in {where} set(s) the rungs of halving and hyperband, "
                f"which {strategy} does not have: use strategy halving or hyperband, or leave "
                f"{' and '.join(budget)} out."
            )
    return stages


def _check_keys(values: Mapping[str, Any], keys: Mapping[str, Key], where: str) -> None:
    """Every key known, and every value allowed by its key's rule."""
    for name, value in values.items():
        if name not in keys:
            hint = difflib.get_close_matches(str(name), keys, n=1)
            raise ConfigError(
                f"unknown key {name!r} in {where}"
                + (f": did you mean {hint[0]!r}?" if hint else "")
                + f" Allowed keys: {', '.join(keys)}."
            )
        keys[name].check(value, where)
