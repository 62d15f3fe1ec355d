"""Plot data: what each picture of a report shows, computed from saved runs, without drawing.

Every function takes plain saved records (histories, trial rows, weights, test images) and
returns arrays or small dataclasses; ``plots`` draws them. Keeping the two apart lets the
tests check the numbers a picture would show.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
import torch
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.importance import FanovaImportanceEvaluator

from deepnet.errors import RunFormatError
from deepnet.evaluate import images_to_tensor
from deepnet.nn import SeedNet
from deepnet.search.records import HISTORY_FIELDS, TrialStatus
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
    """The first ``per_class`` test images (n, H, W, C) of each class: (classes, per_class,
    H, W, C); a class with fewer images leaves its last places black."""
    rows = []
    for c in range(n_classes):
        idx = np.flatnonzero(labels == c)[:per_class]
        block = np.zeros((per_class, *images.shape[1:]), dtype=images.dtype)
        block[: len(idx)] = images[idx]
        rows.append(block)
    return np.stack(rows)


RGB = ("R", "G", "B")  # conv1's input channels on colour images, in the images' order
MAX_KERNELS = 16  # filters (rows) and input channels (columns) drawn of one layer


@dataclass(frozen=True)
class Kernels:
    """A convolution's kernels as drawn: its first MAX_KERNELS filters and input channels
    (a grid of 1024 x 1024 kernels is unreadable and takes minutes to draw)."""

    weights: np.ndarray  # (drawn filters, drawn inputs, k, k)
    filters: int  # how many the layer has
    inputs: int

    @property
    def note(self) -> str:
        """What is left out, for a caption: "" when every kernel is drawn."""
        drawn, inputs = self.weights.shape[:2]
        counts = ((drawn, self.filters, "filters"), (inputs, self.inputs, "inputs"))
        parts = [f"the first {n} of {total} {what}" for n, total, what in counts if n < total]
        return f" ({', '.join(parts)})" if parts else ""


def _kernels(weight: torch.Tensor) -> Kernels:
    filters, inputs = weight.shape[:2]
    return Kernels(weight.detach()[:MAX_KERNELS, :MAX_KERNELS].numpy().copy(), filters, inputs)


def conv_filters(model: SeedNet) -> tuple[Kernels, Kernels]:
    """Kernels of both convolutions: (f1, C, 3, 3) over the C image channels, and
    (f2, f1, 3, 3) over the first layer's maps."""
    return _kernels(model.conv1.weight), _kernels(model.conv2.weight)


def colour_patches(weights: np.ndarray) -> np.ndarray:
    """First-layer RGB filters (f, 3, k, k) as colour images (f, k, k, 3) in [0, 1]: each
    filter scaled by its own largest weight, so that 0 is mid-grey and a filter that
    responds to red looks red, however small its weights."""
    limit = np.abs(weights).max(axis=(1, 2, 3), keepdims=True)
    scaled = 0.5 + 0.5 * weights / np.where(limit > 0, limit, 1.0)
    return scaled.transpose(0, 2, 3, 1)


MAX_MAPS = 32  # feature maps drawn of one layer (four rows of them)


@torch.no_grad()
def feature_maps(model: SeedNet, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One uint8 image (H, W, C) through each convolution: (f1, H-2, W-2), (f2, H-4, W-4),
    the first MAX_MAPS maps of each."""
    first, second = model.eval().feature_maps(images_to_tensor(image[None]))
    return first[0, :MAX_MAPS].numpy(), second[0, :MAX_MAPS].numpy()


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


@dataclass(frozen=True)
class TrialScore:
    """A trial's score at its last rung: the final CV accuracy of a completed trial, else the
    last mean validation accuracy it reported before it was stopped (``final`` False)."""

    number: int
    score: float
    final: bool


def last_rung(row: TrialRow) -> TrialScore | None:
    """The trial's score at the last rung it reached; None if it reported none."""
    if row.ok:
        return TrialScore(row.number, row.score, final=True)
    if row.last_value is None or math.isnan(row.last_value):
        return None
    return TrialScore(row.number, row.last_value, final=False)


def score_by_value(rows: Sequence[TrialRow], param: str) -> list[tuple[Any, list[TrialScore]]]:
    """For each value of ``param``: the last-rung scores of every trial that used it."""
    scores: dict[Any, list[TrialScore]] = {}
    for r in rows:
        if param in r.params and (score := last_rung(r)) is not None:
            scores.setdefault(r.params[param], []).append(score)
    return [(v, scores[v]) for v in _sort_values(list(scores))]


@dataclass(frozen=True)
class HeatMap:
    """Best score for each pair of values of two parameters: the best final CV score where a
    trial completed (``final``), else the best last rung (NaN: no trial reported one)."""

    x_param: str
    y_param: str
    x_values: list[Any]
    y_values: list[Any]
    scores: np.ndarray  # (len(y_values), len(x_values))
    final: np.ndarray  # bool, same shape: the cell's score is a completed trial's


def heat_map(rows: Sequence[TrialRow], x_param: str, y_param: str) -> HeatMap:
    scored = [
        (r, s)
        for r in rows
        if x_param in r.params and y_param in r.params and (s := last_rung(r)) is not None
    ]
    xs = _sort_values(list({r.params[x_param] for r, _ in scored}))
    ys = _sort_values(list({r.params[y_param] for r, _ in scored}))
    grid = np.full((len(ys), len(xs)), np.nan)
    final = np.zeros((len(ys), len(xs)), dtype=bool)
    for r, s in scored:
        i, j = ys.index(r.params[y_param]), xs.index(r.params[x_param])
        # a completed trial's score outranks any last rung: rungs of different depth differ
        if (s.final, s.score) > (final[i, j], -math.inf if math.isnan(grid[i, j]) else grid[i, j]):
            grid[i, j], final[i, j] = s.score, s.final
    return HeatMap(x_param, y_param, xs, ys, grid, final)


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
    """One search's completed trials in the order they finished (elapsed seconds, score, best
    so far), and when each trial stopped early ended, with its last rung."""

    label: str
    seconds: list[float]
    scores: list[float]
    best: list[float]
    stopped: list[tuple[float, float]] = field(default_factory=list)  # (seconds, last rung)


def timeline(rows: Sequence[TrialRow], label: str) -> Timeline:
    starts = [r.started_at for r in rows if r.started_at is not None]
    if not starts:
        return Timeline(label, [], [], [])
    t0 = min(starts)
    ended = sorted(
        (r for r in rows if r.finished and r.finished_at is not None), key=lambda r: r.finished_at
    )
    done = [r for r in ended if r.ok]
    scores = [r.score for r in done]
    return Timeline(
        label,
        [r.finished_at - t0 for r in done],
        scores,
        list(np.maximum.accumulate(scores)) if scores else [],
        [
            (r.finished_at - t0, s.score)
            for r in ended
            if not r.ok and (s := last_rung(r)) is not None
        ],
    )


def rung_survivors(rows: Sequence[TrialRow]) -> list[tuple[int, int]]:
    """(epochs, trials that trained at least that many) at each epoch count some trial
    stopped at: how successive halving promoted trials from rung to rung."""
    trained = [r.epochs for r in rows if r.finished and r.epochs > 0]
    return [(e, sum(t >= e for t in trained)) for e in sorted(set(trained))]


@dataclass(frozen=True)
class TrialPath:
    """One trial's mean validation accuracy over its folds per epoch, up to where it stopped."""

    number: int
    state: TrialStatus
    epochs: list[int]
    val_accuracy: list[float]


def trial_paths(rows: Sequence[TrialRow]) -> list[TrialPath]:
    """The path of every trial that stored a history (one still running stores none yet)."""
    paths = []
    for r in rows:
        if not r.history:
            continue
        mean = fold_curves(r.history).mean.get("val_accuracy", [])
        points = [(e, v) for e, v in enumerate(mean, start=1) if math.isfinite(v)]
        if points:
            epochs, values = zip(*points, strict=True)
            paths.append(TrialPath(r.number, r.state, list(epochs), list(values)))
    return paths


MIN_IMPORTANCE_TRIALS = 8  # fANOVA's forest on fewer completed trials is noise


@dataclass(frozen=True)
class Importances:
    """fANOVA importance of each varying parameter (summing to 1), most important first."""

    n_trials: int
    values: list[tuple[str, float]]


def importances(rows: Sequence[TrialRow]) -> Importances:
    """Parameter importance over the completed trials (Optuna's fANOVA evaluator, seeded);
    RunFormatError when the search has too few of them to say.

    Each parameter's range is the one the trials used; fANOVA works on that range without
    log scaling, so the search space itself is not needed.
    """
    done = [r for r in rows if r.ok]
    names = [n for n in varying_params(done) if all(n in r.params for r in done)]
    if len(done) < MIN_IMPORTANCE_TRIALS or len(names) < 2:
        raise RunFormatError(
            f"needs at least {MIN_IMPORTANCE_TRIALS} completed trials in which at least 2 "
            f"parameters vary (this search has {len(done)} completed, {len(names)} varying)"
        )
    distributions = {n: _observed_distribution([r.params[n] for r in done]) for n in names}
    trials = [
        optuna.trial.create_trial(
            params={n: r.params[n] for n in names}, distributions=distributions, value=r.score
        )
        for r in done
    ]
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created" line
    try:
        study = optuna.create_study(direction="maximize")
    finally:
        optuna.logging.set_verbosity(verbosity)
    study.add_trials(trials)
    found = optuna.importance.get_param_importances(
        study, evaluator=FanovaImportanceEvaluator(seed=0)
    )
    return Importances(len(done), list(found.items()))


def _observed_distribution(values: Sequence[Any]) -> BaseDistribution:
    """A numeric range over the values a parameter took, or their categories."""
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return IntDistribution(min(values), max(values))
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return FloatDistribution(float(min(values)), float(max(values)))
    return CategoricalDistribution(_sort_values(list(dict.fromkeys(values))))
