"""The drawn figures: layout (titles clear of panels, axes that fit the data) and markings."""

import io

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image

from deepnet.errors import DataError
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
    images = np.random.default_rng(0).integers(0, 256, (n, 28, 28, 1), dtype=np.uint8)
    found = [figures.Mistake(i, 0, 1, 0.9) for i in range(n)]
    fig = plots.mistake_grid(images, found, ["2", "7"])
    assert title_clashes(fig) == []


def test_every_titled_grid_keeps_its_title_clear(small_data):
    samples = figures.samples_per_class(small_data.x_test, small_data.y_test, 2)
    weights = np.random.default_rng(0).normal(size=(8, 4, 3, 3))
    rgb = weights[:4, :3]  # conv1 on colour images
    layers = [np.ones((4, 26, 26)), np.ones((8, 24, 24))]
    for fig in (
        plots.image_grid(samples, ["2", "7"], "samples"),
        plots.kernels(weights[:4, :1], "conv1 filters"),
        plots.kernels(weights, "conv2 filters"),
        plots.first_filters(rgb),
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


def tinted(n: int, shape: tuple[int, int]) -> np.ndarray:
    """n RGB images (n, h, w, 3): a red-to-blue gradient across each image, none grey."""
    h, w = shape
    ramp = np.linspace(0, 255, w, dtype=np.float32)[None, :].repeat(h, 0)
    image = np.stack([255 - ramp, np.full_like(ramp, 60), ramp], axis=-1).astype(np.uint8)
    return np.repeat(image[None], n, axis=0)


def pixels(fig) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(plots.png(fig))).convert("RGB")).astype(int)


def coloured(rgb: np.ndarray) -> int:
    """How many pixels are not grey (their red and green differ clearly)."""
    return int((np.abs(rgb[..., 0] - rgb[..., 1]) > 30).sum())


def test_grey_images_stay_grey_and_rgb_images_are_drawn_in_colour():
    grey = np.random.default_rng(0).integers(0, 256, (2, 4, 28, 28, 1), dtype=np.uint8)
    assert coloured(pixels(plots.image_grid(grey, ["2", "7"], "samples"))) == 0
    rgb = tinted(8, (32, 32)).reshape(2, 4, 32, 32, 3)
    assert coloured(pixels(plots.image_grid(rgb, ["cat", "dog"], "samples"))) > 1000
    found = [figures.Mistake(i, 0, 1, 0.9) for i in range(3)]
    assert coloured(pixels(plots.mistake_grid(tinted(3, (32, 32)), found, ["cat", "dog"]))) > 500
    layers = [np.ones((4, 30, 30)), np.ones((8, 28, 28))]
    fig = plots.maps(tinted(1, (32, 32))[0], layers, "feature maps")
    assert fig.axes[0].images[0].get_array().shape == (32, 32, 3)


def test_images_of_another_channel_count_are_refused():
    with pytest.raises(DataError, match="2 channels cannot be drawn"):
        plots.image_grid(np.zeros((1, 1, 28, 28, 2), np.uint8), ["a"], "samples")


@pytest.mark.parametrize("shape", [(20, 36), (40, 12), (96, 128)])
def test_non_square_images_keep_their_aspect_and_titles_stay_clear(shape):
    h, w = shape
    images = tinted(8, shape)
    found = [figures.Mistake(i, 0, 1, 0.9) for i in range(8)]
    layers = [np.ones((4, h - 2, w - 2)), np.ones((8, h - 4, w - 4))]
    for fig, panel in (
        (plots.image_grid(images.reshape(2, 4, h, w, 3), ["a", "b"], "samples"), 0),
        (plots.mistake_grid(images, found, ["a", "b"]), 0),
        (plots.maps(images[0], layers, "feature maps"), 0),
    ):
        assert title_clashes(fig) == [], fig._suptitle.get_text()
        box = fig.axes[panel].get_window_extent(drawn(fig))
        assert box.width / box.height == pytest.approx(w / h, rel=0.05)


def overlapping_titles(fig) -> list[tuple[str, str]]:
    renderer = drawn(fig)
    titled = [ax for ax in fig.axes if ax.get_title()]
    boxes = [(ax.get_title(), ax.title.get_window_extent(renderer)) for ax in titled]
    return [(a, b) for i, (a, x) in enumerate(boxes) for b, y in boxes[i + 1 :] if x.overlaps(y)]


def test_long_class_names_are_wrapped_and_shortened_not_drawn_over_each_other():
    names = ["a very long class name taken from a folder", "pneumonoultramicroscopic-x"]
    found = [figures.Mistake(i, i % 2, 1 - i % 2, 0.9) for i in range(8)]
    fig = plots.mistake_grid(tinted(8, (28, 28)), found, names)
    assert overlapping_titles(fig) == [] and title_clashes(fig) == []
    assert all(len(line) <= 30 for ax in fig.axes for line in ax.get_title().split("\n"))
    grid = plots.image_grid(tinted(8, (28, 28)).reshape(2, 4, 28, 28, 3), names, "samples")
    labels = [ax.get_ylabel() for ax in grid.axes if ax.get_ylabel()]
    assert labels == ["a very long\nclass name…", "pneumonoultr\namicroscopi…"]
    matrix = plots.confusion(np.array([[5, 1], [2, 7]]), names)
    ticks = [t.get_text() for t in matrix.axes[0].get_xticklabels()]
    assert ticks == ["a very long…", "pneumonoultrami…"]


def test_rgb_first_layer_filters_show_a_column_per_channel_and_a_colour_patch():
    weights = np.random.default_rng(0).normal(size=(4, 3, 3, 3))
    fig = plots.first_filters(weights)
    panels = [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]
    assert len(panels) == 4 * 4
    assert [ax.get_title() for ax in panels[:4]] == ["R", "G", "B", "colour"]
    assert panels[0].images[0].get_array().shape == (3, 3)
    assert panels[3].images[0].get_array().shape == (3, 3, 3)
    grey = plots.first_filters(weights[:, :1])
    assert len([ax for ax in grey.axes if ax.get_label() != "<colorbar>"]) == 4
