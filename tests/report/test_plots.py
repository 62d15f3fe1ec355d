"""The drawn figures: layout (titles clear of panels, axes that fit the data) and markings."""

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from deepnet.report import figures, plots
from deepnet.search.records import TrialStatus


def drawn(fig):
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def title_clashes(fig) -> list[str]:
    """Panel titles and panels that the figure's own title overlaps."""
    renderer = drawn(fig)
    top = fig._suptitle.get_window_extent(renderer)
    return [
        ax.get_title() or "a panel"
        for ax in fig.axes
        if top.overlaps(ax.get_window_extent(renderer))
        or (ax.get_title() and top.overlaps(ax.title.get_window_extent(renderer)))
    ]


@pytest.mark.parametrize("n", [1, 3, 8, 9, 24])
def test_the_mistakes_title_clears_the_images_and_their_titles(n):
    images = np.random.default_rng(0).integers(0, 256, (n, 28, 28), dtype=np.uint8)
    found = [figures.Mistake(i, 0, 1, 0.9) for i in range(n)]
    fig = plots.mistake_grid(images, found, ["2", "7"])
    assert title_clashes(fig) == []


def test_every_titled_grid_keeps_its_title_clear(small_data):
    samples = figures.samples_per_class(small_data.x_test, small_data.y_test, 2)
    weights = np.random.default_rng(0).normal(size=(8, 4, 3, 3))
    layers = [np.ones((4, 26, 26)), np.ones((8, 24, 24))]
    for fig in (
        plots.image_grid(samples, ["2", "7"], "samples"),
        plots.kernels(weights[:4, :1], "conv1 filters"),
        plots.kernels(weights, "conv2 filters"),
        plots.maps(small_data.x_test[0], layers, "feature maps"),
    ):
        assert title_clashes(fig) == [], fig._suptitle.get_text()


def test_scores_over_time_6_ms_apart_do_not_fill_the_axis():
    line = figures.Timeline("grid", [3.000, 3.006], [0.95, 0.96], [0.95, 0.96])
    ax = plots.timelines([line]).axes[0]
    low, high = ax.get_xlim()
    assert low == 0 and high >= plots.MIN_SPAN_S
    assert ax.get_xlabel() == "seconds since the search started"


def test_a_long_search_is_plotted_in_minutes():
    line = figures.Timeline("halving", [60.0, 600.0], [0.95, 0.96], [0.95, 0.96])
    ax = plots.timelines([line]).axes[0]
    assert ax.get_xlabel() == "minutes since the search started"
    assert 10 <= ax.get_xlim()[1] <= 11


def test_trial_paths_mark_where_each_trial_stopped_by_its_state():
    paths = [
        figures.TrialPath(0, TrialStatus.COMPLETE, [1, 2, 3], [0.9, 0.95, 0.97]),
        figures.TrialPath(1, TrialStatus.PRUNED, [1], [0.8]),
        figures.TrialPath(2, TrialStatus.PRUNED, [1], [0.85]),
        figures.TrialPath(3, TrialStatus.FAILED, [1, 2], [0.7, 0.5]),
    ]
    ax = plots.trial_paths(paths).axes[0]
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == [
        "complete (1)",
        "pruned (2)",
        "failed (1)",
    ]
    assert [h.get_marker() for h in legend.legend_handles] == ["o", "v", "X"]
    ends = {(m.get_xdata()[0], m.get_ydata()[0]) for m in ax.lines if len(m.get_xdata()) == 1}
    assert ends == {(3, 0.97), (1, 0.8), (1, 0.85), (2, 0.5)}


def test_score_by_value_draws_last_rungs_hollow():
    groups = [
        ("Adam", [figures.TrialScore(0, 0.9, True), figures.TrialScore(1, 0.7, False)]),
        ("Nadam", [figures.TrialScore(2, 0.8, False)]),
    ]
    ax = plots.score_by_value("optimizer", groups).axes[0]
    dots = {
        float(c.get_offsets()[0, 1]): "filled" if len(c.get_facecolor()) else "hollow"
        for c in ax.collections
    }
    assert dots == {0.9: "filled", 0.7: "hollow", 0.8: "hollow"}
    best = [line.get_ydata()[0] for line in ax.lines]
    assert best == [0.9]  # the best line marks completed trials only
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == [plots.FINAL, plots.LAST_RUNG, "best completed"]
