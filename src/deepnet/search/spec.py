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
"""

from __future__ import annotations

import difflib
import hashlib
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepnet.errors import ConfigError
from deepnet.search.space import Space
from deepnet.search.strategies import Stage

STAGE_KEYS = ("strategy", "n_iter", "min_epochs", "reduction_factor", "space")
TOP_KEYS = ("cv", "seed", "stages", *STAGE_KEYS)


@dataclass(frozen=True)
class SearchSpec:
    """Stages run in order; ``cv`` stratified folds shuffled by ``seed``."""

    stages: tuple[Stage, ...]
    cv: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.stages:
            raise ConfigError("a search needs at least one stage.")
        if isinstance(self.cv, bool) or not isinstance(self.cv, int) or self.cv < 2:
            raise ConfigError(f"cv={self.cv!r} is not allowed: it must be an integer >= 2.")

    @classmethod
    def from_mapping(cls, values: dict[str, Any], origin: str = "the search spec") -> SearchSpec:
        """From the structure of a TOML file (see the module docstring)."""
        _check_keys(values, TOP_KEYS, origin)
        if "stages" in values and "space" in values:
            raise ConfigError(f"{origin} has both [space] and [[stages]]: use one of the two.")
        raw_stages = values.get("stages") or [{k: values[k] for k in STAGE_KEYS if k in values}]
        stages = []
        for i, raw in enumerate(raw_stages, 1):
            where = f"stage {i} of {origin}"
            _check_keys(raw, STAGE_KEYS, where)
            if "space" not in raw:
                raise ConfigError(f"{where} has no space: add a [space] table of parameters.")
            stages.append(
                Stage(
                    Space.from_dict(raw["space"]),
                    **{k: raw[k] for k in STAGE_KEYS if k in raw and k != "space"},
                )
            )
        return cls(tuple(stages), values.get("cv", 3), values.get("seed", 0))

    @classmethod
    def from_toml(cls, path: Path) -> SearchSpec:
        return cls.from_mapping(read_toml(path), str(path))

    def to_json(self) -> dict[str, Any]:
        return {"cv": self.cv, "seed": self.seed, "stages": [s.to_json() for s in self.stages]}

    def fingerprint(self, data: dict[str, Any]) -> str:
        """Eight hex digits naming this search on this data (the default run folder)."""
        text = json.dumps({"spec": self.to_json(), "data": data}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:8]


def read_toml(path: Path) -> dict[str, Any]:
    """The raw mapping of a TOML search file, with clear errors for unreadable files."""
    try:
        return tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read the search file {path}: {exc.strerror}.") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}.") from exc


def _check_keys(values: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    for key in values:
        if key not in allowed:
            hint = difflib.get_close_matches(key, allowed, n=1)
            raise ConfigError(
                f"unknown key {key!r} in {where}"
                + (f": did you mean {hint[0]!r}?" if hint else "")
                + f" Allowed keys: {', '.join(allowed)}."
            )
