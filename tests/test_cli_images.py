"""The command line on people's own images: a folder of colour PNGs of another size is
searched, evaluated, reported, labelled with `deepnet predict` and exported to ONNX, and
every bad input along the way is one line."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from deepnet.cli import main
from tests.data.image_files import tinted, write_folder

NAMES = ("two", "seven")


@pytest.fixture
def cli():
    runner = CliRunner()
    return lambda *args: runner.invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def photos(small27, tmp_path_factory) -> Path:
    """Class folders of RGB 28x28 PNGs: 300 tinted digits (train/ and test/ of their own)."""
    root = tmp_path_factory.mktemp("photos")
    for split, x, y in (
        ("train", small27.x_train[:240], small27.y_train[:240]),
        ("test", small27.x_test[:60], small27.y_test[:60]),
    ):
        write_folder(root / split, tinted(x), [NAMES[label] for label in y])
    return root


@pytest.fixture(scope="module")
def searched(photos, tmp_path_factory) -> Path:
    """A small search on the photos, resized to 24x24, refit included."""
    run = tmp_path_factory.mktemp("search") / "run"
    grid = ["--param", "optimizer=Adam,Nadam", "--param", "epochs=2", "--cv", "2"]
    result = CliRunner().invoke(
        main,
        ["search", *grid, "--path", str(photos), "--resize", "24x24", "--out", str(run)],
    )
    assert result.exit_code == 0, result.output
    return run


def test_data_on_a_folder_of_colour_images(cli, photos):
    result = cli("data", "--path", photos)
    assert result.exit_code == 0, result.output
    assert "seven" in result.output and "two" in result.output
    assert "28x28 RGB uint8" in result.output
    resized = cli("data", "--path", photos, "--resize", "20x24", "--grayscale")
    assert "20x24 grey uint8 (resized, made grey on load)" in resized.output


def test_a_search_on_a_folder_then_evaluate_and_report(cli, searched):
    from deepnet import load_run

    refit = searched / "refit"
    data = load_run(refit).data
    assert data.class_names == ("seven", "two") and data.channels == 3
    assert data.preprocessing.image_shape == (24, 24) and data.preprocessing.resize
    evaluated = cli("evaluate", refit)
    assert evaluated.exit_code == 0, evaluated.output
    assert "matches the evaluation saved at training time" in evaluated.output
    assert (searched / "report.html").is_file()


def test_predict_labels_the_test_files_with_the_evaluated_accuracy(cli, searched, photos, tmp_path):
    from deepnet import load_run

    files = sorted((photos / "test").rglob("*.png"))
    out = tmp_path / "predictions.csv"
    result = cli("predict", searched, photos / "test", "--top", 2, "--csv", out)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.endswith(tuple("0123456789"))]
    assert len(lines) == len(files)
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(files) and set(rows[0]) >= {"file", "class", "probability"}
    truth = [Path(r["file"]).parent.name for r in rows]
    accuracy = np.mean([r["class"] == t for r, t in zip(rows, truth, strict=True)])
    assert accuracy == pytest.approx(load_run(searched / "refit").metrics.accuracy)


def test_predict_refuses_a_bad_file_by_name_and_skips_it_when_told(cli, searched, photos, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    good = next((photos / "test").rglob("*.png"))
    refused = cli("predict", searched, good, bad)
    assert refused.exit_code == 1 and "notes.png" in refused.output
    assert "Traceback" not in refused.output
    skipped = cli("predict", searched, good, bad, "--skip-bad")
    assert skipped.exit_code == 0, skipped.output
    assert "skipped 1 unreadable file(s)" in skipped.output and str(good) in skipped.output


def test_export_to_onnx_gives_deepnets_probabilities(cli, searched, photos, tmp_path):
    import onnxruntime

    from deepnet import load_run
    from deepnet.data import read_images

    out = tmp_path / "model.onnx"
    result = cli("export", searched, "--out", out)
    assert result.exit_code == 0, result.output
    run = load_run(searched / "refit")
    images = read_images([photos / "test"], run.data.preprocessing).images
    session = onnxruntime.InferenceSession(str(out))
    (probabilities,) = session.run(None, {session.get_inputs()[0].name: images})
    np.testing.assert_allclose(probabilities, run.predict(images).probabilities, atol=1e-5)
    again = cli("export", searched, "--out", out)
    assert again.exit_code == 1 and "already exists" in again.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["data", "--resize", "3x"], "'3x' is not an image size"),
        (["data", "--test-size", "1.5"], "--test-size"),
        (["predict", "/nonexistent/run", "x.png"], "not a deepnet run folder"),
        (["export", "/nonexistent/run"], "not a deepnet run folder"),
    ],
)
def test_bad_input_is_one_clear_line(cli, args, message):
    result = cli(*args)
    assert result.exit_code != 0
    assert message in result.output and "Traceback" not in result.output


def test_a_search_without_refit_has_no_model_to_predict_with(cli, photos, tmp_path):
    run = tmp_path / "run"
    grid = ["--param", "optimizer=Adam", "--param", "epochs=1", "--cv", "2", "--no-refit"]
    assert cli("search", *grid, "--path", photos, "--out", run).exit_code == 0
    result = cli("predict", run, photos / "test")
    assert result.exit_code == 1 and "has no refit model" in result.output
