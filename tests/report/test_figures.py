"""Plot data, checked as numbers before anything is drawn."""

import numpy as np
import pytest

from deepnet import TrainConfig
from deepnet.errors import RunFormatError
from deepnet.nn import SeedNet
from deepnet.report import figures
from deepnet.runs import load_run
from deepnet.search.results import TrialRow
from deepnet.tune import load_search


def row(number, score, epochs=3, state="complete", started=0.0, finished=None, last=None, **params):
    return TrialRow(
        0,
        number,
        state,
        score,
        0.0,
        (),
        epochs,
        1.0,
        params,
        last_value=last if last is not None else score,
        started_at=started,
        finished_at=finished if finished is not None else 10.0 + number,
    )


def test_run_curves_follow_the_history(train_run):
    run = load_run(train_run)
    curves = figures.run_curves(run.history)
    assert curves.epochs == [1, 2]
    assert curves.series["val_accuracy"] == [h["val_accuracy"] for h in run.history]
    assert curves.has("train_loss") and curves.has("val_loss")


def test_fold_curves_mean_and_spread(search_run):
    best = load_search(search_run).rows[0]
    data = figures.fold_curves(best.history)
    assert sorted(data.folds) == ["0", "1", "2"] and data.epochs == [1, 2, 3]
    finals = [c.series["val_accuracy"][-1] for c in data.folds.values()]
    assert data.mean["val_accuracy"][-1] == pytest.approx(np.mean(finals))
    assert data.mean["val_accuracy"][-1] == pytest.approx(best.score)
    assert data.std["val_accuracy"][-1] == pytest.approx(np.std(finals))


def test_samples_are_the_first_images_of_each_class(small_data):
    grid = figures.samples_per_class(small_data.x_test, small_data.y_test, 2, per_class=5)
    assert grid.shape == (2, 5, 28, 28, 1)
    first_seven = np.flatnonzero(small_data.y_test == 1)[0]
    assert np.array_equal(grid[1, 0], small_data.x_test[first_seven])


def test_filters_and_feature_maps_have_the_layer_shapes(train_run, small_data):
    model = load_run(train_run).model()
    first, second = figures.conv_filters(model)
    assert first.weights.shape == (4, 1, 3, 3) and second.weights.shape == (8, 4, 3, 3)
    assert first.note == second.note == ""
    a, b = figures.feature_maps(model, small_data.x_test[0])
    assert a.shape == (4, 26, 26) and b.shape == (8, 24, 24)


def test_rgb_filters_and_feature_maps_of_a_non_square_image_keep_their_channels():
    model = SeedNet(TrainConfig(), 2, image_shape=(20, 36), channels=3)
    first, second = figures.conv_filters(model)
    assert first.weights.shape == (4, 3, 3, 3) and second.weights.shape == (8, 4, 3, 3)
    assert np.array_equal(first.weights, model.conv1.weight.detach().numpy())
    image = np.random.default_rng(0).integers(0, 256, (20, 36, 3), dtype=np.uint8)
    a, b = figures.feature_maps(model, image)
    assert a.shape == (4, 18, 34) and b.shape == (8, 16, 32)
    red = image.copy()
    red[..., 1:] = 0  # conv1 reads every channel: dropping two changes its maps
    assert not np.allclose(figures.feature_maps(model, red)[0], a)


def test_wide_layers_draw_their_first_kernels_and_say_so():
    model = SeedNet(TrainConfig(conv1_filters=20, conv2_filters=40), 2, channels=3)
    first, second = figures.conv_filters(model)
    assert first.weights.shape == (16, 3, 3, 3) and second.weights.shape == (16, 16, 3, 3)
    assert first.note == " (the first 16 of 20 filters)"
    assert second.note == " (the first 16 of 40 filters, the first 16 of 20 inputs)"
    a, b = figures.feature_maps(model, np.zeros((28, 28, 3), dtype=np.uint8))
    assert a.shape == (20, 26, 26) and b.shape == (figures.MAX_MAPS, 24, 24)


def test_colour_patches_scale_each_filter_to_its_largest_weight_around_grey():
    weights = np.zeros((3, 3, 3, 3))
    weights[0, 0, 1, 1], weights[0, 2, 0, 0] = 0.2, -0.1  # R at the centre, less B at a corner
    weights[1, 1] = 4.0  # green everywhere
    patches = figures.colour_patches(weights)  # filter 2 is all zero
    assert patches.shape == (3, 3, 3, 3)
    assert patches[0, 1, 1].tolist() == [1.0, 0.5, 0.5]
    assert patches[0, 0, 0].tolist() == [0.5, 0.5, 0.25]
    assert np.all(patches[1] == [0.5, 1.0, 0.5]) and np.all(patches[2] == 0.5)


def test_mistakes_are_wrong_and_most_confident_first():
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.2, 0.8], [0.6, 0.4], [0.05, 0.95]])
    labels = np.array([0, 0, 1, 1, 0])
    found = figures.mistakes(probs, labels)
    assert [m.index for m in found] == [4, 1, 3]
    assert [m.confidence for m in found] == [0.95, 0.7, 0.6]
    assert (found[0].true, found[0].predicted) == (0, 1)


def test_score_by_value_and_heat_map_show_every_trial_at_its_last_rung():
    rows = [
        row(0, 0.90, optimizer="Adam", neurons=16),
        row(1, 0.95, optimizer="Adam", neurons=32),
        row(2, 0.97, optimizer="Nadam", neurons=32),
        row(3, None, state="pruned", last=0.80, optimizer="Nadam", neurons=16),
        row(4, None, state="pruned", last=0.99, optimizer="Nadam", neurons=32),
        row(5, None, state="running", optimizer="Adam", neurons=64),  # reported nothing yet
    ]
    assert figures.varying_params(rows) == ["optimizer", "neurons"]
    final, stopped = figures.TrialScore(0, 0.90, True), figures.TrialScore(3, 0.80, False)
    assert figures.score_by_value(rows, "neurons") == [
        (16, [final, stopped]),
        (32, [figures.TrialScore(n, s, n != 4) for n, s in ((1, 0.95), (2, 0.97), (4, 0.99))]),
    ]
    hm = figures.heat_map(rows, "optimizer", "neurons")
    assert hm.x_values == ["Adam", "Nadam"] and hm.y_values == [16, 32]
    assert hm.scores.tolist() == [[0.90, 0.80], [0.95, 0.97]]  # 0.99 is only a last rung
    assert hm.final.tolist() == [[True, False], [True, True]]


def test_trial_paths_average_the_folds_up_to_where_each_trial_stopped(search_run):
    rows = load_search(search_run).rows
    paths = {p.number: p for p in figures.trial_paths(rows)}
    assert sorted(paths) == sorted(r.number for r in rows)
    for r in rows:
        path = paths[r.number]
        assert path.state == r.state and path.epochs == list(range(1, r.epochs + 1))
        assert path.val_accuracy[-1] == pytest.approx(r.score if r.ok else r.last_value)
    assert {p.state for p in paths.values()} == {"complete", "pruned"}


def test_importance_ranks_the_parameter_the_score_follows():
    rows = [
        row(i, 0.5 + 0.1 * rate + 0.001 * (i % 2), learn_rate=rate, optimizer=opt)
        for i, (rate, opt) in enumerate((r, o) for r in (0.5, 1.0, 2.0, 3.0) for o in "AB")
    ]
    found = figures.importances(rows)
    assert found.n_trials == 8 and [n for n, _ in found.values] == ["learn_rate", "optimizer"]
    assert found.values[0][1] > 0.9 and sum(v for _, v in found.values) == pytest.approx(1)


def test_importance_needs_enough_completed_trials():
    rows = [row(i, 0.9, neurons=i, optimizer="AB"[i % 2]) for i in range(7)]
    rows.append(row(7, None, state="pruned", last=0.5, neurons=7, optimizer="A"))
    with pytest.raises(RunFormatError, match=r"needs at least 8 completed trials.*has 7 completed"):
        figures.importances(rows)


def test_timeline_orders_by_finish_and_tracks_the_best():
    rows = [row(0, 0.9, finished=30.0), row(1, 0.95, finished=20.0), row(2, 0.8, finished=40.0)]
    line = figures.timeline(rows, "grid")
    assert line.seconds == [20.0, 30.0, 40.0]
    assert line.scores == [0.95, 0.9, 0.8] and line.best == [0.95, 0.95, 0.95]


def test_rung_survivors_count_promotions():
    rows = [row(i, None, epochs=e, state="pruned") for i, e in enumerate([1, 1, 1, 1, 3, 3])]
    rows.append(row(9, 0.9, epochs=9))
    assert figures.rung_survivors(rows) == [(1, 7), (3, 3), (9, 1)]
