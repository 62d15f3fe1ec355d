"""A whole search: its stages, folds and seed, from CLI options, a TOML file or Python.

A TOML file holds either one stage at the top level or a list of stages:

    cv = 3
    seed = 0
    strategy = "halving"          # one stage ...
    [space]
    optimizer = ["SGD", "Adam", "Nadam"]
    learn_rate = { loguniform = [1e-4, 1e-1] }

    [[stages]]                    # ... or several, each starting from the best so far
    strategy = "grid"
    space = { optimizer = ["SGD", "Adam", "Nadam"], neurons = [25, 30, 35] }

and, at the top level whatever the stages, how the best configuration is refit:

    ensemble = 5                  # K seeds, or "folds"; as --ensemble
    ensemble_validation = 0.1     # as --ensemble-validation

Every key is checked against ``deepnet.search.schema`` before a stage is built.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from optuna.pruners import BasePruner
from optuna.samplers import BaseSampler

from deepnet.ensemble import DEFAULT_VALIDATION_SHARE, EnsemblePlan
from deepnet.errors import ConfigError
from deepnet.search import schema
from deepnet.search.space import Space, parse_options
from deepnet.search.strategies import STRATEGY_BY_NAME, Config, Strategy

DEFAULT_SEARCH = Path(str(files("deepnet.search") / "default.toml"))


@dataclass(frozen=True)
class Stage:
    """One search over a space with a strategy. Later stages start from earlier bests."""

    space: Space
    strategy: str = "grid"
    n_iter: int | None = None  # random, tpe; halving/hyperband over a random sample
    min_epochs: int = schema.PRUNING_DEFAULTS["min_epochs"]  # halving/hyperband: first rung
    reduction_factor: int = schema.PRUNING_DEFAULTS["reduction_factor"]  # keep 1 in this many

    def __post_init__(self) -> None:
        if not isinstance(self.space, Space):
            raise ConfigError(
                f"space={self.space!r} is not allowed: give a Space, e.g. "
                "Space.from_dict({'neurons': [16, 32]})."
            )
        for key in (schema.STRATEGY, schema.N_ITER, schema.MIN_EPOCHS, schema.REDUCTION_FACTOR):
            object.__setattr__(self, key.name, key.check(getattr(self, key.name)))
        self.algorithm.check(self)
        if self.n_iter is None:  # sampled stages need a count
            object.__setattr__(self, "n_iter", self.algorithm.default_n_iter(self.space))

    @property
    def algorithm(self) -> Strategy:
        """The strategy object that ``strategy`` names."""
        return STRATEGY_BY_NAME[self.strategy]

    @property
    def n_trials(self) -> int:
        """How many trials the stage runs (its queue, or n_iter for TPE)."""
        return self.algorithm.n_trials(self)

    def candidates(self, seed: int) -> list[Config] | None:
        """The configurations it tries, in order; None when proposed during the search."""
        return self.algorithm.candidates(self, seed)

    def sampler(self, seed: int) -> BaseSampler:
        return self.algorithm.sampler(self, seed)

    def pruner(self, max_epochs: int) -> BasePruner:
        return self.algorithm.pruner(self, max_epochs)

    def to_json(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "n_iter": self.n_iter,
            "min_epochs": self.min_epochs,
            "reduction_factor": self.reduction_factor,
            "space": self.space.to_json(),
        }


@dataclass(frozen=True)
class SearchSpec:
    """Stages run in order; ``cv`` stratified folds shuffled by ``seed``. ``ensemble``: how
    the best configuration is refit (None: one network on every training image); it is the
    refit's, recorded there, so it is not part of the search's identity (``to_json``)."""

    stages: tuple[Stage, ...]
    cv: int = 3
    seed: int = 0
    ensemble: EnsemblePlan | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))
        if not self.stages or not all(isinstance(s, Stage) for s in self.stages):
            raise ConfigError("a search needs at least one stage, and only Stage objects.")
        for key in (schema.CV, schema.SEED):
            object.__setattr__(self, key.name, key.check(getattr(self, key.name)))
        if self.ensemble is not None:
            object.__setattr__(self, "ensemble", EnsemblePlan.parse(self.ensemble))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], origin: str = "the search spec") -> SearchSpec:
        """From the structure of a TOML file (see the module docstring), checked whole first."""
        stages = schema.check_spec(values, origin)
        ensemble = values.get("ensemble")
        return cls(
            tuple(
                Stage(
                    Space.from_dict(raw["space"]), **{k: v for k, v in raw.items() if k != "space"}
                )
                for raw in stages
            ),
            values.get("cv", 3),
            values.get("seed", 0),
            None
            if ensemble is None
            else EnsemblePlan.parse(
                ensemble, values.get("ensemble_validation", DEFAULT_VALIDATION_SHARE)
            ),
        )

    @classmethod
    def from_toml(cls, path: Path) -> SearchSpec:
        return cls.from_mapping(read_toml(path), str(path))

    def to_json(self) -> dict[str, Any]:
        """The search itself (what its run folder records and resumes): not the ensemble."""
        return {"cv": self.cv, "seed": self.seed, "stages": [s.to_json() for s in self.stages]}

    def fingerprint(self, data: dict[str, Any]) -> str:
        """Eight hex digits naming this search on this data (the default run folder)."""
        text = json.dumps({"spec": self.to_json(), "data": data}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:8]


def build_spec(
    params: Iterable[str], config_file: Path | None, overrides: Mapping[str, Any]
) -> SearchSpec:
    """The search that ``deepnet search`` runs: from ``--param`` options (a grid unless
    ``overrides`` names a strategy), a ``--config`` file, or the default file, with
    ``overrides`` (cv, seed, strategy, n_iter, ...; None: not given) on top."""
    params = list(params)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if params and config_file:
        raise ConfigError("give the space with --param or with --config, not both.")
    if params:
        values: dict[str, Any] = {"space": parse_options(params), "strategy": "grid"}
        origin = "the --param options"
    else:
        values = read_toml(config_file or DEFAULT_SEARCH)
        origin = str(config_file or "the default search")
    if "stages" in values and any(k in overrides for k in schema.STAGE_KEYS):
        raise ConfigError(
            f"{origin} has several stages: set strategy, n_iter, min_epochs and "
            "reduction_factor per stage in the file, not on the command line."
        )
    return SearchSpec.from_mapping({**values, **overrides}, origin)


def read_toml(path: Path) -> dict[str, Any]:
    """The raw mapping of a TOML search file, with clear errors for unreadable files."""
    try:
        return tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read the search file {path}: {exc.strerror}.") from exc
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text file: give a TOML search file.") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}.") from exc
