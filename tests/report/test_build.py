"""Reports of complete and partial run folders: what is drawn, and what is said to be missing."""

import base64
import io
import json
import re
import shutil
import socket

import numpy as np
import pytest
from PIL import Image

from deepnet import SearchSpec, Space, Stage, TrainConfig, train, tune
from deepnet.errors import RunExistsError, RunFormatError, SearchError
from deepnet.report import REPORT_FILE, figures, plots, report
from deepnet.report.build import build_report
from deepnet.runs import load_run
from deepnet.tune import load_search
from tests.test_lock import hold_in_another_process


def titles(rep):
    return [s.title for s in rep.sections]


def headline(rep):
    return dict(rep.headline)


def copy(run_dir, tmp_path):
    return shutil.copytree(run_dir, tmp_path / run_dir.name)


def test_a_train_run_report_has_every_picture(train_run):
    rep = build_report(train_run)
    assert rep.missing == []
    assert titles(rep) == [
        "learning curves",
        "the data as the network sees it",
        "what the network learned",
        "test results",
    ]
    pictures = {c for s in rep.sections for c, _ in s.pictures}
    assert "one test image through each convolution" in pictures
    assert any("most confident" in c for c in pictures)
    metrics = load_run(train_run).metrics
    assert headline(rep)["test accuracy"].startswith(f"{metrics.accuracy:.4f}")
    for section in rep.sections:
        for _, png in section.pictures:
            assert png.startswith(b"\x89PNG")


def page_picture(html: str, caption_start: str) -> np.ndarray:
    """The RGB pixels (h, w, 3) of the page's picture whose caption starts so."""
    found = re.search(
        rf'<img alt="{re.escape(caption_start)}[^"]*" src="data:image/png;base64,([^"]+)"', html
    )
    assert found, f"no picture captioned {caption_start!r}"
    png = Image.open(io.BytesIO(base64.b64decode(found.group(1))))
    return np.asarray(png.convert("RGB")).astype(int)


def not_grey(rgb: np.ndarray) -> int:
    """Pixels whose red and green differ clearly."""
    return int((np.abs(rgb[..., 0] - rgb[..., 1]) > 30).sum())


def test_a_run_on_colour_images_reports_them_in_colour(rgb_run, train_run, tmp_path):
    rep = build_report(rgb_run)
    assert rep.missing == []
    assert titles(rep) == titles(build_report(train_run))
    assert "test images per class (28x36 RGB, scaled to [0, 1])" in captions(rep)
    html = report(rgb_run, out=tmp_path / "rgb.html").read_text()
    assert not_grey(page_picture(html, "test images per class")) > 1000
    assert not_grey(page_picture(html, "the ")) > 200  # the most confident mistakes
    grey_html = report(train_run, out=tmp_path / "grey.html").read_text()
    assert not_grey(page_picture(grey_html, "test images per class")) == 0


def test_colour_first_layer_filters_are_drawn_per_channel(rgb_run):
    first, second = figures.conv_filters(load_run(rgb_run).model())
    assert first.weights.shape == (4, 3, 3, 3) and second.weights.shape == (8, 4, 3, 3)
    fig = plots.first_filters(first.weights)
    top = [ax.get_title() for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]
    assert top[:4] == ["R", "G", "B", "colour"]
    assert any(
        c.startswith("first convolution: a row per filter, its 3x3 kernels on the R, G")
        for c in captions(build_report(rgb_run))
    )


def pictures(rep, title="the search landscape"):
    """A section's pictures by the start of their caption (up to its first ':' or '(')."""
    section = next(s for s in rep.sections if s.title == title)
    return {caption.split(":")[0].split(" (")[0]: png for caption, png in section.pictures}


def captions(rep):
    return [c for s in rep.sections for c, _ in s.pictures]


def test_a_search_report_matches_the_results(search_run):
    rep = build_report(search_run)
    assert rep.missing == [
        "parameter importance: needs at least 8 completed trials in which at least 2 "
        "parameters vary (this search has 2 completed, 1 varying)"
    ]
    saved = load_search(search_run)
    best = saved.rows[0]
    assert headline(rep)["best CV accuracy"].startswith(f"{best.score:.4f} ± {best.std:.4f}")
    assert headline(rep)["refit test accuracy"].startswith(f"{saved.refit.metrics.accuracy:.4f}")
    assert headline(rep)["trials"] == "2 complete, 2 pruned"
    assert titles(rep)[:3] == [
        "learning curves of the chosen configuration",
        "the search landscape",
        "results",
    ]
    assert set(pictures(rep)) == {
        "each trial's mean validation accuracy over its folds per epoch, to where it stopped",
        "score by optimizer",
        "score by neurons",
        "best score for optimizer x neurons; in brackets where no trial completed",
        "each completed trial's score",
        "successive halving",
    }
    header, rows = rep.sections[2].table
    assert header[:4] == ["rank", "trial", "state", "cv accuracy"]
    assert [r[1] for r in rows] == [str(r.number) for r in saved.rows]
    assert "refit: test results" in titles(rep)


def test_the_landscape_draws_every_trial_not_only_the_completed(search_run):
    rep = build_report(search_run)
    rows = load_search(search_run).rows
    assert sum(r.ok for r in rows) < len(rows)  # halving pruned some
    assert f"({len(rows)} of {len(rows)} trials)" in " ".join(captions(rep))


def test_parameter_importance_is_drawn_once_enough_trials_completed(wide_search):
    rep = build_report(wide_search)
    assert rep.missing == []
    importance = pictures(rep)["parameter importance"]
    assert importance.startswith(b"\x89PNG")
    header, _ = next(s.table for s in rep.sections if s.table)
    assert len(header) == 7 + 14  # every parameter is a column


def test_report_writes_one_self_contained_file(search_run, tmp_path):
    run_dir = copy(search_run, tmp_path)
    path = report(run_dir)
    assert path == run_dir / REPORT_FILE
    html = path.read_text()
    assert html.count("data:image/png;base64,") >= 10
    assert "<script" not in html and "http://" not in html and "https://" not in html


def test_a_search_still_running_says_what_is_missing(search_run, tmp_path):
    run_dir = copy(search_run, tmp_path)
    shutil.rmtree(run_dir / "refit")
    info = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**info, "status": "running"}))
    holder = hold_in_another_process(run_dir)  # as the searching process would
    try:
        rep = build_report(run_dir)
    finally:
        holder.kill()
        holder.wait()
    assert headline(rep)["status"].startswith(f"running (process {holder.pid} ")
    assert any(m.startswith("refit:") for m in rep.missing)
    assert "the search landscape" in titles(rep)
    assert not any(t.startswith("refit:") for t in titles(rep))


def test_a_search_stopped_by_ctrl_c(interrupted_search):
    rep = build_report(interrupted_search)
    saved = load_search(interrupted_search)
    assert saved.status == "interrupted" and len(saved.rows) == 2
    assert headline(rep)["status"] == "interrupted"
    assert headline(rep)["trials"] == "2 pruned"
    assert "started" in headline(rep)
    assert "best configuration: no trial has completed yet" in rep.missing
    assert "refit: the best configuration has not been refit and tested yet" in rep.missing
    assert "(2 of 2 trials)" in " ".join(captions(rep))
    varying = {f"score by {p}" for p in figures.varying_params(saved.rows)}
    assert varying and varying <= set(pictures(rep))
    _, rows = rep.sections[-1].table
    assert [(r[2], r[3]) for r in rows] == [("pruned", f"({t.last_value:.4f})") for t in saved.rows]
    assert report(interrupted_search).is_file()


def test_a_search_killed_midway(killed_search):
    saved = load_search(killed_search)
    running = [r for r in saved.rows if r.state == "running"]
    assert saved.status == "running" and running and sum(r.ok for r in saved.rows) >= 4
    rep = build_report(killed_search)
    assert headline(rep)["status"] == (
        "killed (recorded as running, but no process holds the run folder)"
    )
    assert f"{len(running)} running" in headline(rep)["trials"]
    best = saved.rows[0]
    assert headline(rep)["best CV accuracy"] == (
        f"{best.score:.4f} ± {best.std:.4f} (trial {best.number})"
    )
    assert "refit: the best configuration has not been refit and tested yet" in rep.missing
    paths = next(c for c in captions(rep) if c.startswith("each trial's mean validation"))
    assert f"; no epochs stored yet: {len(running)} running" in paths
    _, rows = rep.sections[-1].table
    assert [r[5:7] for r in rows if r[2] == "running"] == [["", ""]] * len(running)
    assert report(killed_search).is_file()


def test_a_search_whose_every_trial_failed(small_data, small27_npz, tmp_path):
    space = {  # diverges in its first epochs (as in tests/search/test_runner.py)
        "optimizer": ["Adam"],
        "learn_rate": [1e8, 1e9],
        "activation": ["linear"],
        "init_mode": ["normal"],
        "epochs": [4],
        "batch_size": [64],
    }
    spec = SearchSpec((Stage(Space.from_dict(space), "grid"),), cv=2, seed=0)
    with pytest.raises(SearchError, match="every trial failed"):
        tune(spec, small_data, tmp_path / "run", n_jobs=1, data_path=small27_npz)
    rep = build_report(tmp_path / "run")
    assert headline(rep)["status"] == "failed"
    assert headline(rep)["trials"] == "2 failed"
    assert headline(rep)["failures"].startswith("2 x fold 0 diverged")
    assert "best configuration: no trial has completed yet" in rep.missing
    assert titles(rep)[-1] == "results"


def test_a_train_run_stopped_by_ctrl_c(small_data, small27_npz, tmp_path):
    def ctrl_c_in_epoch_3(result):
        if result.epoch == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(
            TrainConfig(epochs=5, batch_size=64),
            small_data,
            run_dir=tmp_path / "run",
            data_path=small27_npz,
            on_epoch=ctrl_c_in_epoch_3,
        )
    rep = build_report(tmp_path / "run")
    assert headline(rep)["status"] == "interrupted"
    assert headline(rep)["epochs trained"] == "3 of 5"  # the third was recorded
    assert "training time" in headline(rep)
    assert titles(rep) == ["learning curves", "the data as the network sees it"]
    missing = " ".join(rep.missing)
    assert "model" in missing and "metrics.json" in missing
    assert report(tmp_path / "run").is_file()


def test_a_train_run_killed_midway(killed_train):
    rep = build_report(killed_train)
    assert headline(rep)["status"] == (
        "killed (recorded as running, but no process holds the run folder)"
    )
    assert headline(rep)["epochs trained"] == "0 of 30"
    assert "started" in headline(rep) and "training time" not in headline(rep)
    assert "learning curves: no epochs were recorded" in rep.missing
    assert titles(rep) == ["the data as the network sees it"]
    assert report(killed_train).is_file()


def test_a_crashed_train_run_draws_what_it_can(train_run, tmp_path):
    run_dir = copy(train_run, tmp_path)
    (run_dir / "model.safetensors").unlink()
    (run_dir / "metrics.json").unlink()
    rep = build_report(run_dir)
    assert "learning curves" in titles(rep)
    missing = " ".join(rep.missing)
    assert "model" in missing and "metrics.json" in missing


def test_a_run_with_no_epochs_and_an_unreadable_dataset(train_run, tmp_path):
    run_dir = copy(train_run, tmp_path)
    (run_dir / "history.json").write_text("[]")
    config = json.loads((run_dir / "config.json").read_text())
    config["data"]["path"] = str(tmp_path / "gone.npz")
    (run_dir / "config.json").write_text(json.dumps(config))
    rep = build_report(run_dir)
    missing = " ".join(rep.missing)
    assert "learning curves: no epochs were recorded" in missing
    assert "test images" in missing
    assert "what the network learned" in titles(rep)  # the weights are still there


def test_an_older_format_is_named(train_run, tmp_path):
    run_dir = copy(train_run, tmp_path)
    info = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**info, "format": 0}))
    rep = build_report(run_dir)
    assert rep.sections == [] and "format 0" in rep.missing[0]
    assert report(run_dir).is_file()


def test_a_folder_that_is_not_a_run_is_an_error(tmp_path):
    with pytest.raises(RunFormatError, match="not a deepnet run folder"):
        build_report(tmp_path / "nowhere")


def test_a_run_still_going_names_its_process(killed_train):
    holder = hold_in_another_process(killed_train)  # as the live training process would
    try:
        status = headline(build_report(killed_train))["status"]
    finally:
        holder.kill()
        holder.wait()
    assert status.startswith(f"running (process {holder.pid} on {socket.gethostname()} since ")


def test_the_report_goes_where_out_says(train_run, tmp_path):
    out = tmp_path / "elsewhere.html"
    assert report(train_run, out=out) == out and "<html" in out.read_text()


def test_a_report_that_cannot_be_written_is_one_error(train_run, tmp_path):
    with pytest.raises(RunExistsError, match=r"cannot write the report to .* --out"):
        report(train_run, out=tmp_path / "no" / "such" / "folder" / "report.html")
    assert not list(tmp_path.rglob("*.tmp"))


def test_an_ensemble_refit_reports_both_models_side_by_side(small_data, small27_npz, tmp_path):
    from deepnet import EnsemblePlan, train_ensemble

    run_dir = tmp_path / "refit"
    config = TrainConfig(epochs=1, batch_size=64, optimizer="Adam")
    result = train_ensemble(
        config, small_data, EnsemblePlan.parse(2), run_dir=run_dir, data_path=small27_npz
    )
    rep = build_report(run_dir)
    assert rep.missing == []
    shown = headline(rep)
    test = result.record.test
    assert shown["test accuracy"].startswith(f"{result.metrics.accuracy:.4f} (95% CI")
    assert shown["single model test accuracy"].startswith(f"{test.single.accuracy:.4f} (95% CI")
    assert shown["ensemble of 2 test accuracy"].startswith(f"{test.ensemble.accuracy:.4f} (95%")
    assert shown["ensemble"].startswith("2 seeds; uses ")
    assert "on the validation share (10% of the training images" in shown["ensemble"]
    assert shown["epochs trained"] == "1 of 1"
    assert "learning curves" in titles(rep)
    assert "what the ensemble's first member learned" in titles(rep)
    assert "test results" in titles(rep)
    shutil.rmtree(run_dir / "members" / "seed-1")  # a damaged ensemble: drawn as far as it goes
    damaged = build_report(run_dir)
    assert any(m.startswith("model:") for m in damaged.missing)
    assert "learning curves" in titles(damaged)  # the first member is still there
