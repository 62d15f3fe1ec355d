"""Labelling new images with a saved run: arrays and files, sizes and channels checked against
what the run trained on, converted where the run recorded --resize / --grayscale."""

import csv
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from deepnet import ConfigError, DataError, TrainConfig, load_run, train
from deepnet.data.options import Preprocessing
from deepnet.predict import Guess, PredictionRow, predict_files, write_csv

CONFIG = TrainConfig(epochs=1, batch_size=64, optimizer="Nadam")


@pytest.fixture(scope="module")
def run(small27, tmp_path_factory):
    """A run trained on 28x28 grey digits, with no conversions recorded."""
    run_dir = tmp_path_factory.mktemp("runs") / "plain"
    train(CONFIG, small27, run_dir=run_dir)
    return load_run(run_dir)


@pytest.fixture(scope="module")
def converting(small27, tmp_path_factory):
    """A run that recorded --resize 28x28 and --grayscale: it converts what it is given."""
    run_dir = tmp_path_factory.mktemp("runs") / "converting"
    recorded = Preprocessing((28, 28), 1, resize=True, grayscale=True)
    train(CONFIG, replace(small27, preprocessing=recorded), run_dir=run_dir)
    return load_run(run_dir)


def rgb(images):
    """Grey images as RGB ones of the same luma (Pillow's 'L' of (v, v, v) is v)."""
    return np.repeat(images, 3, axis=3)


def upscaled(images, side):
    return np.stack(
        [
            np.asarray(Image.fromarray(x[..., 0]).resize((side, side), Image.Resampling.BILINEAR))
            for x in images
        ]
    )[..., np.newaxis]


def accuracy(predictions, labels):
    return float(np.mean(predictions.indices == labels))


def test_predictions_on_the_test_split_give_the_saved_accuracy(run, small27):
    predictions = run.predict(small27.x_test)
    assert accuracy(predictions, small27.y_test) == run.metrics.accuracy
    assert predictions.probabilities.shape == (400, 2) and len(predictions) == 400
    assert np.allclose(predictions.probabilities.sum(axis=1), 1, atol=1e-6)
    assert predictions.names[:3] == tuple(("2", "7")[i] for i in predictions.indices[:3])
    assert np.array_equal(predictions.confidence, predictions.probabilities.max(axis=1))


def test_grey_images_without_channels_and_scaled_floats_predict_alike(run, small27):
    expected = run.predict(small27.x_test).probabilities
    assert np.array_equal(run.predict(small27.x_test[..., 0]).probabilities, expected)
    floats = small27.x_test.astype(np.float32) / 255
    assert np.allclose(run.predict(floats).probabilities, expected, atol=1e-6)


def test_top_lists_the_most_probable_classes_first(run, small27):
    predictions = run.predict(small27.x_test[:20])
    for row, guesses in zip(predictions.probabilities, predictions.top(2), strict=True):
        assert [g.index for g in guesses] == list(np.argsort(-row, kind="stable"))
        assert [g.name for g in guesses] == [("2", "7")[g.index] for g in guesses]
        assert guesses[0].probability >= guesses[1].probability
        assert sum(g.probability for g in guesses) == pytest.approx(1, abs=1e-6)
    with pytest.raises(ConfigError, match=r"^top=3 is not allowed: the run tells 2 classes apart"):
        predictions.top(3)


def test_images_of_another_size_are_refused_with_the_fix(run, small27):
    with pytest.raises(
        DataError,
        match=r"^the images are 32x32 pixels but the run .*plain takes 28x28; pass images "
        r"resized to 28x28, or train again with --resize 28x28",
    ):
        run.predict(upscaled(small27.x_test[:5], 32))


def test_colour_images_are_refused_by_a_grey_run_with_the_fix(run, small27):
    with pytest.raises(
        DataError,
        match=r"^the images have 3 channels \(RGB\) but the run .* takes 1 channel \(grey\); "
        r"pass grey images, or train again with --grayscale",
    ):
        run.predict(rgb(small27.x_test[:5]))


def test_a_run_that_recorded_resize_converts_other_sizes(converting, small27):
    predictions = converting.predict(upscaled(small27.x_test, 40))
    assert accuracy(predictions, small27.y_test) >= converting.metrics.accuracy - 0.02


def test_a_run_that_recorded_grayscale_makes_colour_grey(converting, small27):
    grey = converting.predict(small27.x_test).probabilities
    assert np.array_equal(converting.predict(rgb(small27.x_test)).probabilities, grey)


def write_pngs(folder, images, transform=lambda x: x):
    """Each image as folder/NNN.png; NNN is its index, to find its label again."""
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(transform(image[..., 0])).save(folder / f"{i:03d}.png")


def labels_of(rows, labels):
    return np.array([labels[int(row.name.rsplit("/", 1)[1][:3])] for row in rows])


def test_predict_on_files_gives_the_accuracy_of_evaluate(run, small27, tmp_path):
    write_pngs(tmp_path / "test", small27.x_test)
    found = predict_files(run.path, [tmp_path / "test"])
    assert len(found.rows) == 400 and found.skipped == ()
    truth = labels_of(found.rows, small27.y_test)
    correct = np.array([row.guesses[0].index for row in found.rows]) == truth
    assert float(np.mean(correct)) == run.metrics.accuracy
    assert all(len(row.guesses) == 1 for row in found.rows)


def test_predict_on_files_of_another_size_converts_when_recorded(converting, small27, tmp_path):
    big = upscaled(small27.x_test[:100], 36)
    write_pngs(tmp_path / "big", big)
    found = predict_files(converting.path, [tmp_path / "big"], top=2)
    assert all(len(row.guesses) == 2 for row in found.rows)
    by_array = converting.predict(big).top(2)
    order = [int(row.name.rsplit("/", 1)[1][:3]) for row in found.rows]
    assert [row.guesses for row in found.rows] == [by_array[i] for i in order]


def test_predict_on_files_of_another_size_is_refused_without_resize(run, small27, tmp_path):
    write_pngs(tmp_path / "big", upscaled(small27.x_test[:3], 30))
    with pytest.raises(DataError, match=r"30x30"):
        predict_files(run.path, [tmp_path / "big"])


def test_csv_holds_one_line_per_image(tmp_path):
    rows = [
        PredictionRow("a.png", (Guess(1, "7", 0.75), Guess(0, "2", 0.25))),
        PredictionRow("b.png", (Guess(0, "2", 0.5), Guess(1, "7", 0.5))),
    ]
    write_csv(rows, tmp_path / "out.csv")
    with (tmp_path / "out.csv").open() as f:
        lines = list(csv.reader(f))
    assert lines == [
        ["file", "class", "probability", "class_2", "probability_2"],
        ["a.png", "7", "0.75", "2", "0.25"],
        ["b.png", "2", "0.5", "7", "0.5"],
    ]
    assert rows[0].text() == "a.png  7 0.7500  2 0.2500"


def test_an_unwritable_csv_is_named(tmp_path):
    with pytest.raises(DataError, match=r"cannot write .*nowhere/out\.csv: .* writable --csv"):
        write_csv([], tmp_path / "nowhere" / "out.csv")
