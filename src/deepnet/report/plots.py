"""Drawing: each function turns plot data (see ``figures``) into PNG bytes with matplotlib.

Figures are made with matplotlib's object API on the Agg canvas, so nothing needs a screen
and no global pyplot state is touched.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from deepnet.report.figures import Curves, FoldCurves, HeatMap, Mistake, Timeline

TRAIN, VAL = "#1f77b4", "#d62728"


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return buffer.getvalue()


def learning_curves(curves: Curves, title: str) -> bytes:
    """Accuracy and loss per epoch, training vs validation."""
    fig = Figure(figsize=(9, 3.4))
    for ax, metric in zip(fig.subplots(1, 2), ("accuracy", "loss"), strict=True):
        for split, color in (("train", TRAIN), ("val", VAL)):
            name = f"{split}_{metric}"
            if curves.has(name):
                label = "training" if split == "train" else "validation"
                ax.plot(curves.epochs, curves.series[name], "o-", ms=3, color=color, label=label)
        ax.set(xlabel="epoch", ylabel=metric, title=f"{title}: {metric}")
        ax.grid(alpha=0.3)
        ax.legend()
    return _png(fig)


def fold_learning_curves(data: FoldCurves, title: str) -> bytes:
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
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _png(fig)


def image_grid(images: np.ndarray, row_labels: Sequence[str], title: str) -> bytes:
    """Images (rows, cols, H, W) in a grid, one labelled row per class."""
    rows, cols = images.shape[:2]
    fig = Figure(figsize=(cols * 0.9, rows * 0.95 + 0.4))
    axes = np.atleast_2d(fig.subplots(rows, cols, squeeze=False))
    for i in range(rows):
        for j in range(cols):
            ax = axes[i, j]
            ax.imshow(images[i, j], cmap="gray_r", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[i, 0].set_ylabel(row_labels[i], rotation=0, ha="right", va="center")
    fig.suptitle(title)
    return _png(fig)


def kernels(weights: np.ndarray, title: str, row_label: str = "filter") -> bytes:
    """Kernels (rows, cols, k, k) on a shared diverging colour scale (blue -, red +)."""
    rows, cols = weights.shape[:2]
    limit = float(np.abs(weights).max()) or 1.0
    fig = Figure(figsize=(max(cols, 2) * 0.8 + 0.8, rows * 0.8 + 0.5))
    axes = fig.subplots(rows, cols, squeeze=False)
    for i in range(rows):
        for j in range(cols):
            ax = axes[i, j]
            image = ax.imshow(weights[i, j], cmap="RdBu_r", vmin=-limit, vmax=limit)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[i, 0].set_ylabel(
            f"{row_label} {i + 1}", rotation=0, ha="right", va="center", fontsize=8
        )
    fig.colorbar(image, ax=axes, shrink=0.8)
    fig.suptitle(title)
    return _png(fig)


def maps(image: np.ndarray, layers: Sequence[np.ndarray], title: str) -> bytes:
    """The input image, then each layer's feature maps (channels, h, w) in a row."""
    width = max(len(m) for m in layers)
    fig = Figure(figsize=(width * 1.1 + 1.2, (len(layers) + 1) * 1.2))
    axes = fig.subplots(len(layers) + 1, width, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    axes[0, 0].imshow(image, cmap="gray_r")
    axes[0, 0].set_title("input", fontsize=8)
    for i, layer in enumerate(layers, start=1):
        for j, channel in enumerate(layer):
            axes[i, j].imshow(channel, cmap="viridis")
            axes[i, j].set_title(f"conv{i} #{j + 1}", fontsize=7)
    fig.suptitle(title)
    return _png(fig)


def confusion(matrix: np.ndarray, names: Sequence[str]) -> bytes:
    """Counts of true (rows) vs predicted (columns) test labels."""
    k = len(names)
    fig = Figure(figsize=(1.2 + 0.7 * k, 1.0 + 0.6 * k))
    ax = fig.subplots()
    ax.imshow(matrix, cmap="Blues")
    for i in range(k):
        for j in range(k):
            color = "white" if matrix[i, j] > matrix.max() / 2 else "black"
            ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", color=color)
    ax.set_xticks(range(k), names)
    ax.set_yticks(range(k), names)
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix (test split)")
    return _png(fig)


def mistake_grid(images: np.ndarray, found: Sequence[Mistake], names: Sequence[str]) -> bytes:
    """Misclassified test images with true label, predicted label and confidence."""
    cols = min(8, len(found))
    rows = -(-len(found) // cols)
    fig = Figure(figsize=(cols * 1.25, rows * 1.5))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, m in zip(axes.flat, found, strict=False):
        ax.imshow(images[m.index], cmap="gray_r", vmin=0, vmax=255)
        ax.set_title(
            f"#{m.index} true {names[m.true]}\npred {names[m.predicted]} {m.confidence:.2f}",
            fontsize=7,
        )
    fig.suptitle("misclassified test images, most confident first")
    return _png(fig)


def score_by_value(param: str, groups: Sequence[tuple[object, list[float]]]) -> bytes:
    """CV score of every completed trial against the value of one parameter."""
    fig = Figure(figsize=(max(3.5, 0.7 * len(groups) + 1.5), 3))
    ax = fig.subplots()
    for i, (_, scores) in enumerate(groups):
        ax.scatter([i] * len(scores), scores, s=14, alpha=0.6, color=TRAIN)
        ax.plot([i - 0.25, i + 0.25], [max(scores)] * 2, color=VAL)
    ax.set_xticks(range(len(groups)), [str(v) for v, _ in groups], rotation=30, ha="right")
    ax.set(xlabel=param, ylabel="CV accuracy", title=f"score by {param} (red: best)")
    ax.grid(alpha=0.3)
    return _png(fig)


def heat_map(data: HeatMap) -> bytes:
    """Best CV score for each pair of values of two parameters."""
    fig = Figure(figsize=(1.5 + 0.8 * len(data.x_values), 1.2 + 0.45 * len(data.y_values)))
    ax = fig.subplots()
    image = ax.imshow(np.ma.masked_invalid(data.scores), cmap="viridis", aspect="auto")
    for i in range(len(data.y_values)):
        for j in range(len(data.x_values)):
            if not np.isnan(data.scores[i, j]):
                ax.text(j, i, f"{data.scores[i, j]:.4f}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(data.x_values)), [str(v) for v in data.x_values], rotation=30)
    ax.set_yticks(range(len(data.y_values)), [str(v) for v in data.y_values])
    ax.set(xlabel=data.x_param, ylabel=data.y_param, title="best CV accuracy")
    fig.colorbar(image, ax=ax)
    return _png(fig)


def timelines(lines: Sequence[Timeline]) -> bytes:
    """Each search's trial scores (dots) and best so far (line) against elapsed time."""
    fig = Figure(figsize=(7, 3.4))
    ax = fig.subplots()
    for line in lines:
        dots = ax.scatter(line.seconds, line.scores, s=10, alpha=0.4)
        ax.step(
            line.seconds, line.best, where="post", color=dots.get_facecolor()[0], label=line.label
        )
    ax.set(
        xlabel="seconds since the search started", ylabel="CV accuracy", title="scores over time"
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def rungs(survivors: Sequence[tuple[int, int]]) -> bytes:
    """How many trials trained at least e epochs, at each epoch count where some stopped."""
    fig = Figure(figsize=(5, 3))
    ax = fig.subplots()
    epochs = [str(e) for e, _ in survivors]
    counts = [n for _, n in survivors]
    ax.bar(epochs, counts, color=TRAIN)
    for i, n in enumerate(counts):
        ax.text(i, n, str(n), ha="center", va="bottom")
    ax.set(xlabel="epochs trained (rung)", ylabel="trials", title="trials promoted to each rung")
    return _png(fig)
