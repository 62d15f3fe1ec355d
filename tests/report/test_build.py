"""Reports of complete and partial run folders: what is drawn, and what is said to be missing."""

import json
import shutil

import pytest

from deepnet.errors import RunFormatError
from deepnet.report import REPORT_FILE, report
from deepnet.report.build import build_report
from deepnet.runs import load_run
from deepnet.tune import load_search


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


def test_a_search_report_matches_the_results(search_run):
    rep = build_report(search_run)
    assert rep.missing == []
    saved = load_search(search_run)
    best = saved.rows[0]
    assert headline(rep)["best CV accuracy"].startswith(f"{best.score:.4f} ± {best.std:.4f}")
    assert headline(rep)["refit test accuracy"].startswith(f"{saved.refit.metrics.accuracy:.4f}")
    assert titles(rep)[:3] == [
        "learning curves of the chosen configuration",
        "the search landscape",
        "results",
    ]
    landscape = dict(rep.sections[1].pictures)
    assert {"CV accuracy by optimizer", "CV accuracy by neurons"} <= set(landscape)
    assert "best CV accuracy for optimizer x neurons" in landscape
    assert "successive halving: trials that reached each rung" in landscape
    header, rows = rep.sections[2].table
    assert header[:4] == ["rank", "trial", "state", "cv accuracy"]
    assert [r[1] for r in rows] == [str(r.number) for r in saved.rows]
    assert "refit: test results" in titles(rep)


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
    rep = build_report(run_dir)
    assert headline(rep)["status"] == "running"
    assert any(m.startswith("refit:") for m in rep.missing)
    assert "the search landscape" in titles(rep)
    assert not any(t.startswith("refit:") for t in titles(rep))


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
