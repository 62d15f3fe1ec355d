"""Plot data: what each picture of a report shows, computed from saved runs, without drawing.

Every function takes plain saved records (histories, trial rows, weights, test images) and
returns arrays or small dataclasses; ``plots`` draws them. Keeping the two apart lets the
tests check the numbers a picture would show.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from deepnet.nn import SeedNet
from deepnet.search.records import HISTORY_FIELDS
from deepnet.search.results import TrialRow

CURVE_FIELDS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")


@dataclass(frozen=True)
class Curves:
    """Per-epoch series of one training run (None where there was no validation)."""

    epochs: list[int]
    series: dict[str, list[float | None]]

    def has(self, name: str) -> bool:
        return any(v is not None for v in self.series.get(name, ()))


def run_curves(history: Sequence[dict[str, Any]]) -> Curves:
    """Curves of a train run's history (history.json rows)."""
    return Curves(
        [int(h["epoch"]) for h in history],
        {f: [h.get(f) for h in history] for f in CURVE_FIELDS},
    )


@dataclass(frozen=True)
class FoldCurves:
    """A trial's per-fold curves and, over the epochs every fold reached, mean and std."""

    folds: dict[str, Curves]
    epochs: list[int]
    mean: dict[str, list[float]]
    std: dict[str, list[float]]


def fold_curves(history: dict[str, list[list[float]]]) -> FoldCurves:
    """Per-fold curves of a trial from its stored history (fold -> rows of HISTORY_FIELDS)."""
    folds = {}
    for fold, rows in sorted(history.items()):
        named = [dict(zip(HISTORY_FIELDS, row, strict=True)) for row in rows]
        folds[fold] = Curves(
            list(range(1, len(rows) + 1)), {f: [r[f] for r in named] for f in CURVE_FIELDS}
        )
    n = min((len(c.epochs) for c in folds.values()), default=0)
    mean, std = {}, {}
    for f in CURVE_FIELDS:
        columns = [[c.series[f][e] for c in folds.values()] for e in range(n)]
        if all(v is not None for col in columns for v in col):
            mean[f] = [statistics.fmean(col) for col in columns]
            std[f] = [float(np.std(col)) for col in columns]
    return FoldCurves(folds, list(range(1, n + 1)), mean, std)


def samples_per_class(
    images: np.ndarray, labels: np.ndarray, n_classes: int, per_class: int = 8
) -> np.ndarray:
    """The first ``per_class`` test images of each class: (classes, per_class, H, W) uint8."""
    rows = []
    for c in range(n_classes):
        idx = np.flatnonzero(labels == c)[:per_class]
        block = np.zeros((per_class, *images.shape[1:]), dtype=images.dtype)
        block[: len(idx)] = images[idx]
        rows.append(block)
    return np.stack(rows)


def conv_filters(model: SeedNet) -> tuple[np.ndarray, np.ndarray]:
    """Kernels of both convolutions: (f1, 3, 3) and (f2, f1, 3, 3)."""
    return (
        model.conv1.weight.detach()[:, 0].numpy().copy(),
        model.conv2.weight.detach().numpy().copy(),
    )


@torch.no_grad()
def feature_maps(model: SeedNet, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One uint8 image (H, W) through each convolution: (f1, H-2, W-2), (f2, H-4, W-4)."""
    x = torch.from_numpy(image.astype(np.float32) / 255.0)[None, None]
    first, second = model.eval().feature_maps(x)
    return first[0].numpy(), second[0].numpy()


@dataclass(frozen=True)
class Mistake:
    index: int  # position in the test split
    true: int
    predicted: int
    confidence: float  # the predicted class's probability


def mistakes(probabilities: np.ndarray, labels: np.ndarray, limit: int = 24) -> list[Mistake]:
    """Wrongly classified test images, most confident first (ties: lower index first)."""
    predicted = probabilities.argmax(1)
    wrong = np.flatnonzero(predicted != labels)
    confidence = probabilities[wrong, predicted[wrong]]
    order = np.lexsort((wrong, -confidence))[:limit]
    return [
        Mistake(
            int(wrong[i]), int(labels[wrong[i]]), int(predicted[wrong[i]]), float(confidence[i])
        )
        for i in order
    ]


def varying_params(rows: Sequence[TrialRow]) -> list[str]:
    """Parameters that take more than one value across the trials, in first-seen order."""
    seen: dict[str, set[str]] = {}
    for r in rows:
        for k, v in r.params.items():
            seen.setdefault(k, set()).add(repr(v))
    return [k for k, values in seen.items() if len(values) > 1]


def _sort_values(values: Sequence[Any]) -> list[Any]:
    try:
        return sorted(values)
    except TypeError:
        return sorted(values, key=repr)


def score_by_value(rows: Sequence[TrialRow], param: str) -> list[tuple[Any, list[float]]]:
    """For each value of ``param``: the CV scores of the completed trials that used it."""
    scores: dict[Any, list[float]] = {}
    for r in rows:
        if r.ok and param in r.params:
            scores.setdefault(r.params[param], []).append(r.score)
    return [(v, scores[v]) for v in _sort_values(list(scores))]


@dataclass(frozen=True)
class HeatMap:
    """Best CV score for each pair of values of two parameters (NaN: no completed trial)."""

    x_param: str
    y_param: str
    x_values: list[Any]
    y_values: list[Any]
    scores: np.ndarray  # (len(y_values), len(x_values))


def heat_map(rows: Sequence[TrialRow], x_param: str, y_param: str) -> HeatMap:
    done = [r for r in rows if r.ok and x_param in r.params and y_param in r.params]
    xs = _sort_values(list({r.params[x_param] for r in done}))
    ys = _sort_values(list({r.params[y_param] for r in done}))
    grid = np.full((len(ys), len(xs)), np.nan)
    for r in done:
        i, j = ys.index(r.params[y_param]), xs.index(r.params[x_param])
        grid[i, j] = r.score if math.isnan(grid[i, j]) else max(grid[i, j], r.score)
    return HeatMap(x_param, y_param, xs, ys, grid)


def heat_map_params(rows: Sequence[TrialRow]) -> tuple[str, str] | None:
    """The two varying parameters with the most values (a grid's two widest axes)."""
    varying = varying_params(rows)
    if len(varying) < 2:
        return None
    width = {p: len({repr(r.params.get(p)) for r in rows}) for p in varying}
    first, second = sorted(varying, key=lambda p: -width[p])[:2]
    return first, second


@dataclass(frozen=True)
class Timeline:
    """One search's trials in the order they finished: elapsed seconds, score, best so far."""

    label: str
    seconds: list[float]
    scores: list[float]
    best: list[float]


def timeline(rows: Sequence[TrialRow], label: str) -> Timeline:
    done = sorted(
        (r for r in rows if r.ok and r.finished_at is not None), key=lambda r: r.finished_at
    )
    starts = [r.started_at for r in rows if r.started_at is not None]
    if not done or not starts:
        return Timeline(label, [], [], [])
    t0 = min(starts)
    scores = [r.score for r in done]
    return Timeline(
        label,
        [r.finished_at - t0 for r in done],
        scores,
        list(np.maximum.accumulate(scores)),
    )


def rung_survivors(rows: Sequence[TrialRow]) -> list[tuple[int, int]]:
    """(epochs, trials that trained at least that many) at each epoch count some trial
    stopped at: how successive halving promoted trials from rung to rung."""
    trained = [r.epochs for r in rows if r.finished and r.epochs > 0]
    return [(e, sum(t >= e for t in trained)) for e in sorted(set(trained))]
