import itertools
import json
import shutil

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


def assert_only_tensors(path):
    """A safetensors file is an 8-byte header length, a JSON header, then the tensors' bytes:
    every header entry must be a tensor record, and together they must cover the data
    exactly, so that nothing else (no pickle, no code) can hide in the file."""
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + size])
    assert header.pop("__metadata__") == {"format": "1"}
    spans = []
    for name, entry in header.items():
        assert set(entry) == {"dtype", "shape", "data_offsets"}, name
        assert entry["dtype"] == "F32" and all(isinstance(n, int) for n in entry["shape"])
        start, end = entry["data_offsets"]
        assert end - start == 4 * int(np.prod(entry["shape"])), name
        spans.append((start, end))
    spans.sort()
    assert spans[0][0] == 0 and spans[-1][1] == len(raw) - 8 - size
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))


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
    assert_only_tensors(run_dir / "model.safetensors")
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


def test_a_truncated_model_file_is_a_damaged_run(finished, tmp_path):
    _, run_dir = finished
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(RunFormatError, match=r"model\.safetensors is damaged \(.*\): the run "):
        load_run(copy).model()


def test_a_config_without_data_is_a_damaged_run(finished, tmp_path):
    _, run_dir = finished
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    config = json.loads((copy / "config.json").read_text())
    del config["data"]
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        RunFormatError, match=r"config\.json is damaged \(no 'data'\): the run folder .*copy"
    ):
        load_run(copy)
