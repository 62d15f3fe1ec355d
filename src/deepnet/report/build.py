"""Collect a report from a run folder: headline numbers, pictures, the results table.

Reads only what runs and searches saved (run.json, config, histories, weights, metrics, the
study) plus the test split the run's config records, which it reloads (same source, options
and split) to show images.
Each picture is drawn under a guard: what a partial run (a search still running, a run
that crashed or diverged, an older format) cannot provide becomes a note saying what is
missing, and the rest of the report is still drawn.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepnet import lock, runs
from deepnet.ensemble import Choice, EnsembleRecord
from deepnet.errors import DeepNetError, RunFormatError
from deepnet.evaluate import TestMetrics, images_to_tensor, predict_logits
from deepnet.report import figures, plots
from deepnet.runs import SavedRun
from deepnet.search.records import TrialStatus
from deepnet.search.results import TrialRow, failure_summary
from deepnet.tune import REFIT_DIR, SEARCH_FILE, SavedSearch, load_search

TABLE_ROWS = 50
LANDSCAPE_TEXT = (
    "Every trial, also those stopped early: a trial's score here is its final mean "
    "validation accuracy over the folds if it completed, else the last one it reported "
    "(its last rung) before it was pruned, failed, or the search stopped."
)
Picture = tuple[str, bytes]  # caption, PNG


@dataclass
class Section:
    title: str
    pictures: list[Picture] = field(default_factory=list)
    table: tuple[list[str], list[list[str]]] | None = None  # header, rows
    text: str = ""


@dataclass
class Report:
    """Everything the page shows; ``missing`` lists what could not be drawn, and why."""

    title: str
    run_dir: Path
    headline: list[tuple[str, str]] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def guard(self, what: str, draw: Callable[[], Any]) -> Any:
        """Run one drawing step; on failure note what is missing and go on."""
        try:
            return draw()
        except (DeepNetError, OSError, KeyError, ValueError, IndexError, RuntimeError) as exc:
            self.missing.append(f"{what}: {exc}")
            return None


def build_report(run_dir: str | Path, compare: Sequence[str | Path] = ()) -> Report:
    """The report of a train or search run folder (``compare``: other searches to overlay)."""
    run_dir = Path(run_dir)
    if not (run_dir / runs.RUN_FILE).is_file():
        raise RunFormatError(
            f"{run_dir} is not a deepnet run folder: it has no {runs.RUN_FILE}. Pass a folder "
            "that `deepnet train` or `deepnet search` printed."
        )
    if (run_dir / SEARCH_FILE).is_file():
        return _search_report(run_dir, compare)
    report = Report(f"deepnet training run {run_dir.name}", run_dir)
    run = report.guard("the run", lambda: runs.load_run(run_dir))
    if run is None:
        return report
    _train_headline(report, run)
    curves = report.guard("learning curves", lambda: _train_curves(run.first_member()))
    if curves:
        report.sections.append(curves)
    _model_sections(report, run)
    return report


# --- training runs -----------------------------------------------------------------


def _status(info: dict[str, Any], run_dir: Path) -> str:
    """The recorded status; "running" is all a killed process leaves, so the run folder's
    lock tells the two apart (a dead process holds none)."""
    status = str(info.get("status", "unknown"))
    if status != "running":
        return status
    who = lock.holder(run_dir)
    if who is None:
        return "killed (recorded as running, but no process holds the run folder)"
    return f"running (process {who.pid} on {who.host} since {who.since})"


def _seconds(info: dict[str, Any]) -> str | None:
    """How long the run took; None until it ended (a killed run never records it)."""
    seconds = info.get("seconds")
    return None if seconds is None else f"{seconds:.0f} s"


def _train_headline(report: Report, run: SavedRun, prefix: str = "") -> None:
    report.headline.append((f"{prefix}status", _status(run.info, run.path)))
    if run.metrics:
        report.headline.append((f"{prefix}test accuracy", _accuracy(run.metrics)))
    else:
        report.missing.append(
            f"{prefix}test metrics: the run has no metrics.json (it is {run.status})"
        )
    if run.ensemble is not None:
        _ensemble_headline(report, run.ensemble, prefix)
    curves_run = report.guard(f"{prefix}first member", run.first_member)
    if curves_run is not None:
        epochs = f"{len(curves_run.history)} of {run.config.epochs}"
        report.headline.append((f"{prefix}epochs trained", epochs))
    if not prefix and run.info.get("started"):
        report.headline.append(("started", str(run.info["started"])))
    if (seconds := _seconds(run.info)) is not None:
        report.headline.append((f"{prefix}training time", seconds))
    report.headline.append((f"{prefix}parameters", _params(run.config.to_dict())))


def _accuracy(m: TestMetrics) -> str:
    low, high = m.interval_95
    return f"{m.accuracy:.4f} (95% CI {low:.4f}-{high:.4f}, {m.correct}/{m.n})"


def _ensemble_headline(report: Report, record: EnsembleRecord, prefix: str) -> None:
    """The first member and the ensemble side by side, and which the validation share chose."""
    size = len(record.members)
    if record.test is not None:
        report.headline.append(
            (f"{prefix}single model test accuracy", _accuracy(record.test.single))
        )
        report.headline.append(
            (f"{prefix}ensemble of {size} test accuracy", _accuracy(record.test.ensemble))
        )
    if record.validation is None:
        chosen = "the first member alone: no other member finished"
    else:
        one, ens = record.validation.single, record.validation.ensemble
        chosen = (
            f"{'the ensemble' if record.choice is Choice.ENSEMBLE else 'the first member alone'}"
            f", on the validation share ({record.plan.validation_share:.0%} of the training "
            f"images, held out from every member): ensemble {_accuracy(ens)}, first member "
            f"{_accuracy(one)}"
        )
    report.headline.append((f"{prefix}ensemble", f"{record.plan.describe()}; uses {chosen}"))


def _train_curves(run: SavedRun, title: str = "learning curves") -> Section:
    if not run.history:
        raise RunFormatError("no epochs were recorded")
    curves = figures.run_curves(run.history)
    caption = "accuracy and loss per epoch, training vs validation"
    if not curves.has("val_accuracy"):
        caption += " (this run held out no validation images)"
    return Section(title, [(caption, plots.png(plots.learning_curves(curves, title)))])


def _model_sections(report: Report, run: SavedRun, label: str = "") -> None:
    """Data, filters, feature maps, confusion and mistakes of one trained model."""
    data = report.guard(f"{label}test images", lambda: _load_test(run))
    model = report.guard(f"{label}model", run.model)
    # an ensemble's pictures of what a network learned show its first member
    network = model if run.ensemble is None else report.guard(f"{label}network", run.network)
    names = list(run.data.class_names)
    if data is not None:
        images, labels = data
        samples = figures.samples_per_class(images, labels, len(names))
        height, width, channels = images.shape[1:]
        colours = "RGB" if channels == len(figures.RGB) else "grey"
        report.sections.append(
            Section(
                f"{label}the data as the network sees it",
                [
                    (
                        f"test images per class ({height}x{width} {colours}, scaled to [0, 1])",
                        plots.png(plots.image_grid(samples, names, "samples")),
                    )
                ],
            )
        )
    if network is not None:
        first, second = figures.conv_filters(network)
        pictures = [
            _first_filters(first),
            (
                "second convolution: a row per filter, a column per input channel" + second.note,
                plots.png(plots.kernels(second.weights, "conv2 filters")),
            ),
        ]
        if data is not None:
            image = data[0][0]
            layers = figures.feature_maps(network, image)
            wide = max(first.filters, second.filters) > figures.MAX_MAPS
            pictures.append(
                (
                    "one test image through each convolution"
                    + (f" (at most {figures.MAX_MAPS} maps a layer)" if wide else ""),
                    plots.png(plots.maps(image, layers, "feature maps")),
                )
            )
        learned = "the network" if run.ensemble is None else "the ensemble's first member"
        report.sections.append(Section(f"{label}what {learned} learned", pictures))
    pictures = []
    if run.metrics:
        pictures.append(
            (
                "true vs predicted",
                plots.png(plots.confusion(np.array(run.metrics.confusion), names)),
            )
        )
    if model is not None and data is not None:
        images, labels = data
        probabilities = _probabilities(model, images)
        found = figures.mistakes(probabilities, labels)
        n_wrong = int((probabilities.argmax(1) != labels).sum())
        if found:
            pictures.append(
                (
                    f"the {len(found)} most confident of {n_wrong} mistakes",
                    plots.png(plots.mistake_grid(images, found, names)),
                )
            )
    if pictures:
        report.sections.append(Section(f"{label}test results", pictures))


def _first_filters(kernels: figures.Kernels) -> Picture:
    """conv1's kernels (filters, C, 3, 3), captioned for grey or colour images."""
    caption = (
        "first convolution: a row per filter, its 3x3 kernels on the R, G and B channels, and "
        "the filter as a colour patch (scaled to its largest weight; grey is 0)"
        if kernels.inputs == len(figures.RGB)
        else "first convolution: one 3x3 kernel per filter"
    )
    return caption + kernels.note, plots.png(plots.first_filters(kernels.weights))


def _load_test(run: SavedRun) -> tuple[np.ndarray, np.ndarray]:
    """The run's test split (n, h, w, c), reloaded as it was loaded for training."""
    dataset = run.data.load()
    return dataset.x_test, dataset.y_test


@torch.no_grad()
def _probabilities(model: torch.nn.Module, images: np.ndarray) -> np.ndarray:
    return torch.softmax(predict_logits(model, images_to_tensor(images)), 1).numpy()


# --- searches ------------------------------------------------------------------------


def _search_report(run_dir: Path, compare: Sequence[str | Path]) -> Report:
    report = Report(f"deepnet search {run_dir.name}", run_dir)
    search = report.guard("the search", lambda: load_search(run_dir))
    if search is None:
        return report
    rows = search.rows
    done = [r for r in rows if r.ok]
    info = runs.read_json(run_dir / runs.RUN_FILE)
    report.headline.append(("status", _status(info, run_dir)))
    states = Counter(str(r.state) for r in rows)
    report.headline.append(
        ("trials", ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "none yet")
    )
    if failed := [r for r in rows if r.state == TrialStatus.FAILED]:
        report.headline.append(("failures", failure_summary(failed)))
    if info.get("started"):
        report.headline.append(("started", str(info["started"])))
    if (seconds := _seconds(info)) is not None:
        report.headline.append(("search time", seconds))
    if done:
        best = done[0]
        report.headline.append(
            ("best CV accuracy", f"{best.score:.4f} ± {best.std or 0:.4f} (trial {best.number})")
        )
        report.headline.append(("best parameters", _params(best.params)))
    else:
        report.missing.append("best configuration: no trial has completed yet")
    if search.refit is not None:
        _train_headline(report, search.refit, prefix="refit ")
    elif note := report.guard("refit", lambda: _no_refit(run_dir)):
        report.missing.append(note)
    if done and done[0].history:
        fold_data = figures.fold_curves(done[0].history)
        pictures = [
            (
                f"trial {done[0].number}: each fold (thin) and their mean ± 1 std",
                plots.png(plots.fold_learning_curves(fold_data, "best trial, per fold")),
            )
        ]
        refit = search.refit
        curves_run = None if refit is None else report.guard("refit", refit.first_member)
        if curves_run is not None and curves_run.history:
            caption = (
                "the refit on the whole training split"
                if curves_run is refit
                else "the ensemble's first member (validation: the share held out from every "
                "member)"
            )
            curves = figures.run_curves(curves_run.history)
            pictures.append((caption, plots.png(plots.learning_curves(curves, "refit"))))
        report.sections.append(Section("learning curves of the chosen configuration", pictures))
    landscape = Section("the search landscape", text=LANDSCAPE_TEXT)
    for what, draw in _landscape(search, compare):
        picture = report.guard(what, draw)
        if picture is not None:
            landscape.pictures.append(picture)
    if landscape.pictures:
        report.sections.append(landscape)
    report.sections.append(_results_table(rows))
    if search.refit is not None:
        _model_sections(report, search.refit, label="refit: ")
    return report


def _no_refit(run_dir: Path) -> str:
    refit_dir = run_dir / REFIT_DIR
    if (refit_dir / runs.RUN_FILE).is_file():
        status = _status(runs.read_json(refit_dir / runs.RUN_FILE), refit_dir)
        return f"refit: the refit of the best configuration did not finish (it is {status})"
    return "refit: the best configuration has not been refit and tested yet"


def _landscape(
    search: SavedSearch, compare: Sequence[str | Path]
) -> list[tuple[str, Callable[[], Picture | None]]]:
    """The landscape's pictures, each as (what it shows, how to draw it): drawn one by one,
    so one that cannot be drawn leaves a note and the others are still drawn."""
    rows = search.rows
    steps: list[tuple[str, Callable[[], Picture | None]]] = [
        ("trials per epoch", lambda: _paths_picture(rows))
    ]
    for param in figures.varying_params(rows):
        steps.append((f"score by {param}", lambda p=param: _by_value_picture(rows, p)))
    if pair := figures.heat_map_params(rows):
        steps.append((f"heat map of {pair[0]} x {pair[1]}", lambda: _heat_picture(rows, pair)))
    steps.append(("parameter importance", lambda: _importance_picture(rows)))
    steps.append(("scores over time", lambda: _timeline_picture(search, compare)))
    steps.append(("successive halving", lambda: _rungs_picture(rows)))
    return steps


def _paths_picture(rows: Sequence[TrialRow]) -> Picture | None:
    paths = figures.trial_paths(rows)
    if not paths:
        return None
    caption = (
        f"each trial's mean validation accuracy over its folds per epoch, to where it stopped "
        f"({len(paths)} of {len(rows)} trials"
    )
    unstored = Counter(str(r.state) for r in rows if not r.history)  # stored when they end
    if unstored:
        caption += "; no epochs stored yet: " + ", ".join(f"{n} {s}" for s, n in unstored.items())
    return caption + ")", plots.png(plots.trial_paths(paths))


def _by_value_picture(rows: Sequence[TrialRow], param: str) -> Picture | None:
    groups = figures.score_by_value(rows, param)
    if not groups:
        return None
    caption = f"score by {param}: filled, a completed trial; hollow, the last rung of one stopped"
    return caption, plots.png(plots.score_by_value(param, groups))


def _heat_picture(rows: Sequence[TrialRow], pair: tuple[str, str]) -> Picture | None:
    data = figures.heat_map(rows, *pair)
    if not data.x_values:
        return None
    caption = (
        f"best score for {pair[0]} x {pair[1]}; in brackets where no trial completed: "
        "the best last rung"
    )
    return caption, plots.png(plots.heat_map(data))


def _importance_picture(rows: Sequence[TrialRow]) -> Picture:
    data = figures.importances(rows)
    caption = "parameter importance: each parameter's share of the variance of the CV score"
    return caption, plots.png(plots.importances(data))


def _timeline_picture(search: SavedSearch, compare: Sequence[str | Path]) -> Picture | None:
    lines = [_timeline(search), *(_timeline(load_search(other)) for other in compare)]
    lines = [line for line in lines if line.seconds]
    if not lines:
        return None
    caption = (
        "each completed trial's score (dots) and the best so far (line); hollow, the last "
        "rung of a trial stopped early"
    )
    if len(lines) > 1:
        caption += ", one line per search"
    return caption, plots.png(plots.timelines(lines))


def _rungs_picture(rows: Sequence[TrialRow]) -> Picture | None:
    survivors = figures.rung_survivors(rows)
    if not any(r.state == TrialStatus.PRUNED for r in rows) or len(survivors) < 2:
        return None
    caption = "successive halving: trials that reached each rung"
    return caption, plots.png(plots.rungs(survivors))


def _timeline(search: SavedSearch) -> figures.Timeline:
    strategies = "+".join(s["strategy"] for s in search.record["spec"]["stages"])
    return figures.timeline(search.rows, f"{search.run_dir.name} ({strategies})")


def _results_table(rows: Sequence[TrialRow]) -> Section:
    params = list(dict.fromkeys(k for r in rows for k in r.params))
    header = ["rank", "trial", "state", "cv accuracy", "std", "epochs", "seconds", *params]
    body = []
    for rank, r in enumerate(rows[:TABLE_ROWS], start=1):
        score = (
            f"{r.score:.4f}"
            if r.score is not None
            else (f"({r.last_value:.4f})" if r.last_value is not None else "")
        )
        body.append(
            [
                str(rank),
                str(r.number),
                r.state,
                score,
                f"{r.std:.4f}" if r.std is not None else "",
                str(r.epochs) if r.finished else "",  # a running trial stores them at its end
                f"{r.seconds:.0f}" if r.finished else "",
                *(str(r.params.get(p, "")) for p in params),
            ]
        )
    more = f" (the first {TABLE_ROWS} of {len(rows)})" if len(rows) > TABLE_ROWS else ""
    return Section(
        f"results{more}",
        table=(header, body),
        text="In brackets, the score of a trial stopped early (pruned, failed or running): "
        "the last mean validation accuracy it reported.",
    )


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items() if v is not None)
