"""Drawing: each function turns plot data (see ``figures``) into a matplotlib Figure, and
``png`` turns a Figure into the bytes a report inlines.

Figures are made with matplotlib's object API on the Agg canvas, so nothing needs a screen
and no global pyplot state is touched. Returning the Figure lets tests check its layout.
Grids of small images use the constrained layout, which keeps a figure's title clear of
its panels' titles.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Sequence
from textwrap import wrap

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from deepnet.errors import DataError
from deepnet.report.figures import (
    RGB,
    Curves,
    FoldCurves,
    HeatMap,
    Importances,
    Mistake,
    Timeline,
    TrialPath,
    TrialScore,
    colour_patches,
)
from deepnet.search.records import TrialStatus

TRAIN, VAL = "#1f77b4", "#d62728"
FINAL, LAST_RUNG = "completed (final CV accuracy)", "stopped early (last rung)"


def _legend(ax: Axes) -> None:
    """A legend beside the axes, so that it never hides a point, with one entry per label
    (plots draw a label once per group)."""
    handles = dict(zip(*reversed(ax.get_legend_handles_labels()), strict=True))
    if handles:
        ax.legend(
            handles.values(), handles.keys(), fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1)
        )


def png(fig: Figure) -> bytes:
    """The figure as PNG bytes, cropped to what was drawn."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return buffer.getvalue()


def learning_curves(curves: Curves, title: str) -> Figure:
    """Accuracy and loss per epoch, training vs validation."""
    fig = Figure(figsize=(9, 3.4))
    for ax, metric in zip(fig.subplots(1, 2), ("accuracy", "loss"), strict=True):
        for split, color in (("train", TRAIN), ("val", VAL)):
            name = f"{split}_{metric}"
            if curves.has(name):
                label = "training" if split == "train" else "validation"
                ax.plot(curves.epochs, curves.series[name], "o-", ms=3, color=color, label=label)
        ax.set(xlabel="epoch", ylabel=metric, title=f"{title}: {metric}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


def fold_learning_curves(data: FoldCurves, title: str) -> Figure:
    """Each fold's validation and training curves (thin) with the mean and a ±1 std band."""
    fig = Figure(figsize=(9, 3.4))
    for ax, metric in zip(fig.subplots(1, 2), ("accuracy", "loss"), strict=True):
        for split, color in (("train", TRAIN), ("val", VAL)):
            name = f"{split}_{metric}"
            for curves in data.folds.values():
                if curves.has(name):
                    ax.plot(curves.epochs, curves.series[name], color=color, alpha=0.3, lw=1)
            if name in data.mean:
                mean, std = np.array(data.mean[name]), np.array(data.std[name])
                label = f"{'training' if split == 'train' else 'validation'} (mean of folds)"
                ax.plot(data.epochs, mean, "o-", ms=3, color=color, label=label)
                ax.fill_between(data.epochs, mean - std, mean + std, color=color, alpha=0.15)
        ax.set(xlabel="epoch", ylabel=metric, title=f"{title}: {metric}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def _show(ax: Axes, image: np.ndarray) -> None:
    """A uint8 image (h, w, c) without ticks: grey (c 1) dark on white, as digits are
    printed; RGB (c 3) in its colours."""
    channels = image.shape[-1]
    if channels == 1:
        ax.imshow(image[..., 0], cmap="gray_r", vmin=0, vmax=255)
    elif channels == 3:
        ax.imshow(image)
    else:
        raise DataError(
            f"images with {channels} channels cannot be drawn; deepnet draws grey (1 channel) "
            "or RGB (3 channels) images."
        )
    ax.set_xticks([])
    ax.set_yticks([])


PANEL_IN = 0.9  # the longer side of a small image's panel, in inches
LARGE_PX = 48  # images with a longer side than this get larger panels...
MAX_ZOOM = 2.0  # ...up to this many times PANEL_IN


def _panel(shape: tuple[int, ...], scale: float = 1.0) -> tuple[float, float]:
    """(width, height) in inches of a panel that shows an image of ``shape`` (h, w, ...)
    with its aspect ratio kept, larger for large images (photos) than for digits."""
    height, width = shape[:2]
    longer = max(height, width)
    side = scale * PANEL_IN * min(MAX_ZOOM, max(1.0, longer / LARGE_PX))
    return side * width / longer, side * height / longer


def _label(name: str, width: int = 12, lines: int = 2) -> str:
    """A class name wrapped to fit beside or above a small panel; longer ones end in '…'."""
    parts = wrap(name, width)
    if len(parts) > lines:
        parts = [*parts[: lines - 1], parts[lines - 1][: width - 1] + "…"]
    return "\n".join(parts)


def image_grid(images: np.ndarray, row_labels: Sequence[str], title: str) -> Figure:
    """Images (rows, cols, H, W, C) in a grid, one labelled row per class."""
    rows, cols = images.shape[:2]
    width, height = _panel(images.shape[2:])
    fig = Figure(figsize=(cols * width + 1.2, rows * (height + 0.05) + 0.4), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for i in range(rows):
        for j in range(cols):
            _show(axes[i, j], images[i, j])
        axes[i, 0].set_ylabel(
            _label(row_labels[i]), rotation=0, ha="right", va="center", fontsize=9
        )
    fig.suptitle(title)
    return fig


def kernels(
    weights: np.ndarray,
    title: str,
    row_label: str = "filter",
    columns: Sequence[str] = (),
    patches: np.ndarray | None = None,
) -> Figure:
    """Kernels (rows, cols, k, k) on a shared diverging colour scale (blue -, red +), under
    ``columns`` titles if given; ``patches`` (rows, k, k, 3): a last column showing each
    row's kernels together as one colour image."""
    rows, cols = weights.shape[:2]
    panels = cols + (patches is not None)
    limit = float(np.abs(weights).max()) or 1.0
    fig = Figure(figsize=(max(panels, 2) * 0.8 + 0.8, rows * 0.8 + 0.5), layout="constrained")
    axes = fig.subplots(rows, panels, squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for i in range(rows):
        for j in range(cols):
            image = axes[i, j].imshow(weights[i, j], cmap="RdBu_r", vmin=-limit, vmax=limit)
        if patches is not None:
            axes[i, -1].imshow(patches[i])
        axes[i, 0].set_ylabel(
            f"{row_label} {i + 1}", rotation=0, ha="right", va="center", fontsize=8
        )
    titles = [*(columns or [""] * cols), *(["colour"] if patches is not None else [])]
    for ax, name in zip(axes[0], titles, strict=True):
        ax.set_title(name, fontsize=8)
    fig.colorbar(image, ax=axes[:, :cols], shrink=0.8)
    fig.suptitle(title)
    return fig


def first_filters(weights: np.ndarray, title: str = "conv1 filters") -> Figure:
    """conv1's kernels (filters, C, k, k): a row per filter, a kernel per input channel; on
    RGB images the columns are R, G and B, then the filter as a colour patch."""
    if weights.shape[1] != len(RGB):
        return kernels(weights, title)
    return kernels(weights, title, columns=RGB, patches=colour_patches(weights))


MAPS_PER_ROW = 8  # wider layers wrap, so the maps stay large enough to read


def maps(image: np.ndarray, layers: Sequence[np.ndarray], title: str) -> Figure:
    """The input image (H, W, C), then each layer's feature maps (channels, h, w),
    MAPS_PER_ROW a row."""
    cols = min(MAPS_PER_ROW, max(len(m) for m in layers))
    starts = np.cumsum([1, *(-(-len(m) // cols) for m in layers)])  # first row of each layer
    width, height = _panel(image.shape, scale=1.2)
    fig = Figure(
        figsize=(cols * width + 0.4, starts[-1] * (height + 0.3) + 0.4), layout="constrained"
    )
    axes = fig.subplots(starts[-1], cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    _show(axes[0, 0], image)
    axes[0, 0].set_title("input", fontsize=8)
    for i, (layer, start) in enumerate(zip(layers, starts, strict=False), start=1):
        for j, channel in enumerate(layer):
            ax = axes[start + j // cols, j % cols]
            ax.imshow(channel, cmap="viridis")
            ax.set_title(f"conv{i} #{j + 1}", fontsize=8)
    fig.suptitle(title)
    return fig


CELL_IN = 0.7  # a confusion matrix cell, in inches, up to MAX_MATRIX_IN for the whole matrix
MAX_MATRIX_IN = 9.0
NAME_CHARS = 16  # class names on the matrix's axes are shortened to this many characters


def confusion(matrix: np.ndarray, names: Sequence[str]) -> Figure:
    """Counts of true (rows) vs predicted (columns) test labels; cells shrink with many
    classes (their counts are written while they still fit)."""
    k = len(names)
    cell = min(CELL_IN, MAX_MATRIX_IN / k)
    labels = [_label(n, NAME_CHARS, lines=1) for n in names]
    fig = Figure(figsize=(1.2 + cell * k + 0.06 * max(map(len, labels)), 1.0 + cell * k))
    ax = fig.subplots()
    ax.imshow(matrix, cmap="Blues")
    if cell >= 0.3:
        size = 10 if cell == CELL_IN else 6
        for i in range(k):
            for j in range(k):
                color = "white" if matrix[i, j] > matrix.max() / 2 else "black"
                text = str(int(matrix[i, j]))
                ax.text(j, i, text, ha="center", va="center", color=color, fontsize=size)
    long = max(map(len, labels)) > 2
    ax.set_xticks(range(k), labels, rotation=45 if long else 0, ha="right" if long else "center")
    ax.set_yticks(range(k), labels)
    ax.tick_params(labelsize=8 if k > 10 else 10)
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix (test split)")
    return fig


MISTAKE_NAME_CHARS = 11  # a class name in a mistake's title (two names share its width)


def mistake_grid(images: np.ndarray, found: Sequence[Mistake], names: Sequence[str]) -> Figure:
    """Misclassified test images (n, H, W, C) with true label, predicted label and
    confidence."""
    cols = min(8, len(found))
    rows = -(-len(found) // cols)
    width, height = _panel(images.shape[1:], scale=1.1)
    fig = Figure(
        figsize=(cols * max(width, 1.25), rows * (height + 0.55) + 0.4), layout="constrained"
    )
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, m in zip(axes.flat, found, strict=False):
        _show(ax, images[m.index])
        true, predicted = (
            _label(names[c], MISTAKE_NAME_CHARS, lines=1) for c in (m.true, m.predicted)
        )
        ax.set_title(f"#{m.index} true {true}\npred {predicted} {m.confidence:.2f}", fontsize=7)
    fig.suptitle("misclassified test images, most confident first")
    return fig


def score_by_value(param: str, groups: Sequence[tuple[object, list[TrialScore]]]) -> Figure:
    """Every trial's last-rung score against the value of one parameter: filled dots for
    completed trials' CV accuracy, hollow ones for trials stopped earlier."""
    fig = Figure(figsize=(max(4.5, 0.7 * len(groups) + 2.5), 3.2))
    ax = fig.subplots()
    for i, (_, scores) in enumerate(groups):
        for final in (True, False):
            ys = [s.score for s in scores if s.final is final]
            if ys:
                ax.scatter(
                    [i] * len(ys),
                    ys,
                    s=18,
                    alpha=0.7,
                    facecolors=TRAIN if final else "none",
                    edgecolors=TRAIN,
                    label=FINAL if final else LAST_RUNG,
                )
        finals = [s.score for s in scores if s.final]
        if finals:
            ax.plot([i - 0.25, i + 0.25], [max(finals)] * 2, color=VAL, label="best completed")
    ax.set_xticks(range(len(groups)), [str(v) for v, _ in groups], rotation=30, ha="right")
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.set(xlabel=param, ylabel="mean validation accuracy", title=f"score by {param}")
    ax.grid(alpha=0.3)
    _legend(ax)
    return fig


def heat_map(data: HeatMap) -> Figure:
    """Best score for each pair of values of two parameters; a cell no trial completed in
    shows its best last rung in brackets."""
    fig = Figure(figsize=(1.8 + 0.9 * len(data.x_values), 1.4 + 0.45 * len(data.y_values)))
    ax = fig.subplots()
    image = ax.imshow(np.ma.masked_invalid(data.scores), cmap="viridis", aspect="auto")
    for i in range(len(data.y_values)):
        for j in range(len(data.x_values)):
            score = data.scores[i, j]
            if not np.isnan(score):
                text = f"{score:.4f}" if data.final[i, j] else f"({score:.4f})"
                color = "black" if image.norm(score) > 0.6 else "white"  # dark on yellow
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color=color)
    ax.set_xticks(range(len(data.x_values)), [str(v) for v in data.x_values], rotation=30)
    ax.set_yticks(range(len(data.y_values)), [str(v) for v in data.y_values])
    ax.set(xlabel=data.x_param, ylabel=data.y_param, title="best score (bracketed: last rung)")
    fig.colorbar(image, ax=ax)
    return fig


MIN_SPAN_S = 10.0  # a time axis never spans less, however close the points are
MINUTES_FROM_S = 180.0  # longer searches are plotted in minutes


def timelines(lines: Sequence[Timeline]) -> Figure:
    """Each search's completed trials' scores (dots), best so far (line) and trials stopped
    early (hollow, at their last rung) against the time since the search started, over at
    least MIN_SPAN_S."""
    times = [s for line in lines for s in (*line.seconds, *(t for t, _ in line.stopped))]
    span = max([MIN_SPAN_S, *times])
    scale, unit = (60.0, "minutes") if span > MINUTES_FROM_S else (1.0, "seconds")
    fig = Figure(figsize=(7, 3.4))
    ax = fig.subplots()
    for i, line in enumerate(lines):
        color = f"C{i}"
        ax.scatter([s / scale for s in line.seconds], line.scores, s=14, color=color)
        ax.step(
            [s / scale for s in line.seconds],
            line.best,
            where="post",
            color=color,
            label=line.label,
        )
        if line.stopped:
            ax.scatter(
                [t / scale for t, _ in line.stopped],
                [v for _, v in line.stopped],
                s=14,
                facecolors="none",
                edgecolors=color,
                alpha=0.6,
                label=f"{line.label}: {LAST_RUNG}",
            )
    ax.set_xlim(0, span / scale * 1.05)
    if ax.get_ylim()[1] > 1:
        ax.set_ylim(top=1.002)  # an accuracy: nothing lies above 1
    ax.set(
        xlabel=f"{unit} since the search started",
        ylabel="mean validation accuracy",
        title="scores over time",
    )
    ax.grid(alpha=0.3)
    _legend(ax)
    return fig


STATE_STYLES = {  # colour, marker of where a trial stopped
    TrialStatus.COMPLETE: ("#2ca02c", "o"),
    TrialStatus.PRUNED: ("#7f7f7f", "v"),
    TrialStatus.FAILED: ("#d62728", "X"),
    TrialStatus.RUNNING: ("#ff7f0e", ">"),
    TrialStatus.WAITING: ("#ff7f0e", ">"),
}


def trial_paths(paths: Sequence[TrialPath]) -> Figure:
    """Every trial's mean validation accuracy per epoch, with a marker where it stopped."""
    counts = Counter(p.state for p in paths)
    fig = Figure(figsize=(7, 3.6))
    ax = fig.subplots()
    for path in paths:
        color, marker = STATE_STYLES[path.state]
        ax.plot(path.epochs, path.val_accuracy, color=color, alpha=0.45, lw=1)
        ax.plot(
            path.epochs[-1:],
            path.val_accuracy[-1:],
            marker,
            color=color,
            ms=6,
            label=f"{path.state} ({counts[path.state]})",
        )
    ax.set(
        xlabel="epoch",
        ylabel="mean validation accuracy",
        title="every trial, stopped where the marker is",
    )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs
    ax.grid(alpha=0.3)
    _legend(ax)
    return fig


def importances(data: Importances) -> Figure:
    """Each parameter's share of the score's variance (fANOVA), most important on top."""
    names = [n for n, _ in reversed(data.values)]
    shares = [v for _, v in reversed(data.values)]
    fig = Figure(figsize=(6, 0.8 + 0.35 * len(names)))
    ax = fig.subplots()
    ax.barh(names, shares, color=TRAIN)
    for i, v in enumerate(shares):
        ax.text(v, i, f" {v:.2f}", va="center", fontsize=8)
    ax.set_xlim(0, max(shares) * 1.2 or 1.0)
    ax.set(
        xlabel="importance (fANOVA, sums to 1)",
        title=f"parameter importance over {data.n_trials} completed trials",
    )
    return fig


def rungs(survivors: Sequence[tuple[int, int]]) -> Figure:
    """How many trials trained at least e epochs, at each epoch count where some stopped."""
    fig = Figure(figsize=(5, 3))
    ax = fig.subplots()
    epochs = [str(e) for e, _ in survivors]
    counts = [n for _, n in survivors]
    ax.bar(epochs, counts, color=TRAIN)
    for i, n in enumerate(counts):
        ax.text(i, n, str(n), ha="center", va="bottom")
    ax.set(xlabel="epochs trained (rung)", ylabel="trials", title="trials promoted to each rung")
    return fig
