import json

import numpy as np
import pytest
import torch

from deepnet import RunExistsError, RunFormatError, TrainConfig, load_run, train
from deepnet.evaluate import images_to_tensor, predict_logits
from deepnet.runs import default_run_dir

CONFIG = TrainConfig(
    epochs=2,
    optimizer="Nadam",
    weight_constraint=3,
    neurons=30,
    dense_activation="linear",
    init_mode="lecun_uniform",
)


@pytest.fixture(scope="module")
def finished(small27, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "r1"
    return train(CONFIG, small27, seed=3, run_dir=run_dir), run_dir


def test_run_folder_holds_everything(finished):
    _, run_dir = finished
    names = {p.name for p in run_dir.iterdir()}
    assert names == {
        "run.json",
        "config.json",
        "model.safetensors",
        "history.csv",
        "history.json",
        "metrics.json",
    }
    assert b"pickle" not in (run_dir / "model.safetensors").read_bytes()[:200]
    lines = (run_dir / "history.csv").read_text().splitlines()
    assert lines[0] == "epoch,train_loss,train_accuracy,val_loss,val_accuracy,seconds,status"
    assert len(lines) == 3


def test_saved_run_reads_back(finished, small27):
    result, run_dir = finished
    saved = load_run(run_dir)
    assert saved.status == "finished" and saved.config == CONFIG
    assert saved.options == {"seed": 3, "validation_split": 0.1}
    assert saved.data.classes == (2, 7) and saved.data.image_shape == (28, 28)
    assert saved.metrics == result.metrics
    assert [row["val_loss"] for row in saved.history] == [r.val_loss for r in result.history]


def test_reloaded_model_predicts_identically(finished, small27):
    result, run_dir = finished
    x = images_to_tensor(small27.x_test)
    assert torch.equal(
        predict_logits(load_run(run_dir).model(), x), predict_logits(result.model, x)
    )


def test_existing_run_is_never_overwritten(finished, small27):
    _, run_dir = finished
    before = (run_dir / "metrics.json").read_bytes()
    with pytest.raises(
        RunExistsError,
        match=r"already exists \(finished\); deepnet never "
        r"overwrites a run\. Choose another --out",
    ):
        train(CONFIG, small27, run_dir=run_dir)
    assert (run_dir / "metrics.json").read_bytes() == before


def test_a_non_empty_foreign_folder_is_refused(tmp_path, small27):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RunExistsError, match=r"\(not a deepnet run\)"):
        train(CONFIG, small27, run_dir=tmp_path)


def test_unwritable_run_folder_fails_before_training(tmp_path, small27):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RunExistsError, match="cannot write the run folder"):
        train(CONFIG, small27, run_dir=blocker / "run", on_epoch=pytest.fail)


def test_not_a_run_folder(tmp_path):
    with pytest.raises(RunFormatError, match=r"not a deepnet run folder: it has no run\.json"):
        load_run(tmp_path)


def test_format_from_the_future(finished, tmp_path):
    _, run_dir = finished
    info = json.loads((run_dir / "run.json").read_text())
    (tmp_path / "run.json").write_text(json.dumps({**info, "format": 99}))
    with pytest.raises(RunFormatError, match="format 99; this deepnet reads format 1"):
        load_run(tmp_path)


def test_interrupted_run_keeps_finished_epochs(tmp_path, small27):
    def interrupt(result):
        if result.epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(CONFIG.replace(epochs=5), small27, run_dir=tmp_path / "r", on_epoch=interrupt)
    saved = load_run(tmp_path / "r")
    assert saved.status == "interrupted" and len(saved.history) == 2
    with pytest.raises(RunFormatError, match=r"has no model\.safetensors \(the run is interrupted"):
        saved.model()


def test_diverged_run_is_saved_without_a_model(tmp_path, small27):
    wild = TrainConfig(
        epochs=4, optimizer="Adam", learn_rate=1e8, activation="linear", init_mode="normal"
    )
    result = train(wild, small27, run_dir=tmp_path / "r")
    assert result.status == "diverged" and result.metrics is None
    saved = load_run(tmp_path / "r")
    assert saved.status == "diverged" and saved.metrics is None
    assert not (tmp_path / "r" / "model.safetensors").exists()
    assert np.isnan(saved.history[-1]["train_loss"])


def test_default_run_dirs_do_not_collide(tmp_path):
    first = default_run_dir("train", tmp_path)
    first.mkdir()
    assert default_run_dir("train", tmp_path) != first
