"""Collect a report from a run folder: headline numbers, pictures, the results table.

Reads only what runs and searches saved (run.json, config, histories, weights, metrics, the
study) plus the test split named in the run's config, which it reloads to show images.
Each picture is drawn under a guard: what a partial run (a search still running, a run
that crashed or diverged, an older format) cannot provide becomes a note saying what is
missing, and the rest of the report is still drawn.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepnet import runs
from deepnet.data import load_dataset
from deepnet.errors import DeepNetError, RunFormatError
from deepnet.evaluate import images_to_tensor, predict_logits
from deepnet.nn import SeedNet
from deepnet.report import figures, plots
from deepnet.runs import SavedRun
from deepnet.search.results import TrialRow
from deepnet.tune import SEARCH_FILE, SavedSearch, load_search

TABLE_ROWS = 50


@dataclass
class Section:
    title: str
    pictures: list[tuple[str, bytes]] = field(default_factory=list)  # (caption, PNG)
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
    curves = report.guard("learning curves", lambda: _train_curves(run))
    if curves:
        report.sections.append(curves)
    _model_sections(report, run)
    return report


# --- training runs -----------------------------------------------------------------


def _train_headline(report: Report, run: SavedRun, prefix: str = "") -> None:
    report.headline.append((f"{prefix}status", run.status))
    if run.metrics:
        m = run.metrics
        low, high = m.interval_95
        report.headline.append(
            (
                f"{prefix}test accuracy",
                f"{m.accuracy:.4f} (95% CI {low:.4f}-{high:.4f}, {m.correct}/{m.n})",
            )
        )
    else:
        report.missing.append(
            f"{prefix}test metrics: the run has no metrics.json (it is {run.status})"
        )
    if "seconds" in run.info:
        report.headline.append((f"{prefix}training time", f"{run.info['seconds']:.0f} s"))
    report.headline.append((f"{prefix}parameters", _params(run.config.to_dict())))


def _train_curves(run: SavedRun, title: str = "learning curves") -> Section:
    if not run.history:
        raise RunFormatError("no epochs were recorded")
    curves = figures.run_curves(run.history)
    caption = "accuracy and loss per epoch, training vs validation"
    if not curves.has("val_accuracy"):
        caption += " (this run held out no validation images)"
    return Section(title, [(caption, plots.learning_curves(curves, title))])


def _model_sections(report: Report, run: SavedRun, label: str = "") -> None:
    """Data, filters, feature maps, confusion and mistakes of one trained model."""
    data = report.guard(f"{label}test images", lambda: _load_test(run))
    model = report.guard(f"{label}model", run.model)
    names = list(run.data.class_names)
    if data is not None:
        images, labels = data
        samples = figures.samples_per_class(images, labels, len(names))
        report.sections.append(
            Section(
                f"{label}the data as the network sees it",
                [
                    (
                        "test images per class (28x28, scaled to [0, 1])",
                        plots.image_grid(samples, names, "samples"),
                    )
                ],
            )
        )
    if model is not None:
        first, second = figures.conv_filters(model)
        pictures = [
            (
                "first convolution: one 3x3 kernel per filter",
                plots.kernels(first[:, None], "conv1 filters"),
            ),
            (
                "second convolution: a row per filter, a column per input channel",
                plots.kernels(second, "conv2 filters"),
            ),
        ]
        if data is not None:
            image = data[0][0]
            pictures.append(
                (
                    "one test image through each convolution",
                    plots.maps(image, figures.feature_maps(model, image), "feature maps"),
                )
            )
        report.sections.append(Section(f"{label}what the network learned", pictures))
    pictures = []
    if run.metrics:
        pictures.append(
            ("true vs predicted", plots.confusion(np.array(run.metrics.confusion), names))
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
                    plots.mistake_grid(images, found, names),
                )
            )
    if pictures:
        report.sections.append(Section(f"{label}test results", pictures))


def _load_test(run: SavedRun) -> tuple[np.ndarray, np.ndarray]:
    d = run.data
    dataset = load_dataset(d.name, list(d.classes), d.path)
    return dataset.x_test, dataset.y_test


@torch.no_grad()
def _probabilities(model: SeedNet, images: np.ndarray) -> np.ndarray:
    return torch.softmax(predict_logits(model, images_to_tensor(images)), 1).numpy()


# --- searches ------------------------------------------------------------------------


def _search_report(run_dir: Path, compare: Sequence[str | Path]) -> Report:
    report = Report(f"deepnet search {run_dir.name}", run_dir)
    search = report.guard("the search", lambda: load_search(run_dir))
    if search is None:
        return report
    rows = search.rows
    done = [r for r in rows if r.ok]
    report.headline.append(("status", search.status))
    states = {}
    for r in rows:
        states[r.state] = states.get(r.state, 0) + 1
    report.headline.append(("trials", ", ".join(f"{n} {s}" for s, n in sorted(states.items()))))
    info = runs.read_json(run_dir / runs.RUN_FILE)
    if "seconds" in info:
        report.headline.append(("search time", f"{info['seconds']:.0f} s"))
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
    else:
        report.missing.append("refit: the best configuration has not been refit and tested yet")
    if done and done[0].history:
        fold_data = figures.fold_curves(done[0].history)
        pictures = [
            (
                f"trial {done[0].number}: each fold (thin) and their mean ± 1 std",
                plots.fold_learning_curves(fold_data, "best trial, per fold"),
            )
        ]
        if search.refit is not None and search.refit.history:
            curves = figures.run_curves(search.refit.history)
            pictures.append(
                ("the refit on the whole training split", plots.learning_curves(curves, "refit"))
            )
        report.sections.append(Section("learning curves of the chosen configuration", pictures))
    report.guard("the search landscape", lambda: _landscape(report, search, compare))
    report.sections.append(_results_table(rows))
    if search.refit is not None:
        _model_sections(report, search.refit, label="refit: ")
    return report


def _landscape(report: Report, search: SavedSearch, compare: Sequence[str | Path]) -> None:
    rows = search.rows
    pictures = []
    for param in figures.varying_params(rows):
        groups = figures.score_by_value(rows, param)
        if groups:
            pictures.append((f"CV accuracy by {param}", plots.score_by_value(param, groups)))
    pair = figures.heat_map_params(rows)
    if pair:
        pictures.append(
            (
                f"best CV accuracy for {pair[0]} x {pair[1]}",
                plots.heat_map(figures.heat_map(rows, *pair)),
            )
        )
    lines = [_timeline(search)]
    for other in compare:
        lines.append(_timeline(load_search(other)))
    lines = [line for line in lines if line.seconds]
    if lines:
        caption = "each trial's score (dots) and the best so far (line)"
        if len(lines) > 1:
            caption += ", one line per search"
        pictures.append((caption, plots.timelines(lines)))
    survivors = figures.rung_survivors(rows)
    if any(r.state == "pruned" for r in rows) and len(survivors) > 1:
        pictures.append(
            ("successive halving: trials that reached each rung", plots.rungs(survivors))
        )
    if pictures:
        report.sections.append(Section("the search landscape", pictures))


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
                str(r.epochs),
                f"{r.seconds:.0f}",
                *(str(r.params.get(p, "")) for p in params),
            ]
        )
    more = f" (the first {TABLE_ROWS} of {len(rows)})" if len(rows) > TABLE_ROWS else ""
    return Section(
        f"results{more}",
        table=(header, body),
        text="A pruned trial's score in brackets: its mean validation accuracy when stopped.",
    )


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items() if v is not None)
