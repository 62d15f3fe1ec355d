import json

import pytest

from deepnet import RunExistsError, RunFormatError, SearchSpec, load_search, tune

SPEC = SearchSpec.from_mapping(
    {
        "strategy": "grid",
        "space": {"optimizer": ["Adam", "Nadam"], "epochs": [1], "batch_size": [64]},
    }
)


@pytest.fixture(scope="module")
def searched(small27, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("search") / "run"
    return tune(SPEC, small27, run_dir, n_jobs=1), run_dir


def test_search_run_folder(searched):
    _, run_dir = searched
    assert {p.name for p in run_dir.iterdir()} >= {
        "run.json",
        "search.json",
        "study.db",
        "results.csv",
        "refit",
    }
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"
    lines = (run_dir / "results.csv").read_text().splitlines()
    assert lines[0].startswith("rank,stage,trial,state,mean_cv_accuracy,std,split0_accuracy")
    assert len(lines) == 3


def test_refit_is_the_best_configuration_tested_once(searched):
    result, _ = searched
    refit = result.refit
    assert refit.config.optimizer == result.outcome.best.params["optimizer"]
    assert refit.options["validation_split"] == 0.0  # all the training images
    assert refit.metrics.n == 400 and refit.metrics.accuracy > 0.9


def test_load_search_reads_it_back(searched):
    result, run_dir = searched
    saved = load_search(run_dir)
    assert saved.status == "finished" and len(saved.rows) == 2
    assert saved.rows[0].params == result.outcome.best.params
    assert saved.refit.metrics == result.refit.metrics


def test_running_again_resumes_and_retrains_nothing(searched, small27):
    _, run_dir = searched
    refit_weights = (run_dir / "refit" / "model.safetensors").read_bytes()
    trained = []
    again = tune(
        SPEC, small27, run_dir, n_jobs=1, on_trial=trained.append, on_refit_epoch=trained.append
    )
    assert trained == []
    assert (run_dir / "refit" / "model.safetensors").read_bytes() == refit_weights
    assert len(again.outcome.rows) == 2


def test_a_different_search_in_the_same_folder_is_refused(searched, small27):
    _, run_dir = searched
    other = SearchSpec.from_mapping({"space": {"optimizer": ["SGD"], "epochs": [1]}})
    with pytest.raises(RunExistsError, match="holds a different search"):
        tune(other, small27, run_dir, n_jobs=1)


def test_a_folder_that_is_not_a_search(tmp_path, small27):
    (tmp_path / "x.txt").write_text("mine")
    with pytest.raises(RunExistsError, match="not a deepnet run"):
        tune(SPEC, small27, tmp_path, n_jobs=1)
    with pytest.raises(RunFormatError, match="not a search run folder"):
        load_search(tmp_path)


def test_low_disk_space_is_refused_before_training(tmp_path, small27, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9, 10**6))
    with pytest.raises(RunExistsError, match=r"only 1 MB free"):
        tune(SPEC, small27, tmp_path / "run", n_jobs=1, on_trial=pytest.fail)


def test_a_moved_search_folder_still_reads(searched, tmp_path):
    import shutil

    _, run_dir = searched
    moved = tmp_path / "moved"
    shutil.copytree(run_dir, moved)
    assert [r.params for r in load_search(moved).rows] == [
        r.params for r in load_search(run_dir).rows
    ]
