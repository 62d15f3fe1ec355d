import itertools
import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from deepnet import DataError, RunExistsError, RunFormatError, TrainConfig, load_run, train
from deepnet.data import load_dataset
from deepnet.data.options import LoadOptions, Preprocessing
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
def finished(small27, small27_npz, tmp_path_factory):
    """A run on small27, recorded as loaded from small27_npz (the same images)."""
    run_dir = tmp_path_factory.mktemp("runs") / "r1"
    return train(CONFIG, small27, seed=3, run_dir=run_dir, data_path=small27_npz), run_dir


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


def test_saved_run_records_how_its_data_was_loaded(finished, small27_npz):
    data = load_run(finished[1]).data
    assert data.path == str(small27_npz.absolute())
    assert data.options == LoadOptions()
    assert data.preprocessing == Preprocessing((28, 28), 1)
    assert data.channels == 1 and data.class_names == ("2", "7")


def test_a_run_reloads_its_exact_data(finished, small27):
    again = load_run(finished[1]).data.load()
    assert np.array_equal(again.x_test, small27.x_test)
    assert np.array_equal(again.y_test, small27.y_test)
    assert np.array_equal(again.x_train, small27.x_train)


def test_a_run_on_a_folder_reloads_the_same_held_out_split(small27, tmp_path):
    """A folder has no test split of its own: the one held out by the recorded options
    (test size, split seed) is the one every later command gets."""
    for i, (image, label) in enumerate(
        zip(small27.x_train[:300], small27.y_train[:300], strict=True)
    ):
        folder = tmp_path / "digits" / ("two", "seven")[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[..., 0]).save(folder / f"{i:03d}.png")
    options = LoadOptions(test_size=0.25, split_seed=5)
    data = load_dataset(path=tmp_path / "digits", options=options)
    train(
        CONFIG.replace(epochs=1),
        data,
        run_dir=tmp_path / "run",
        data_path=tmp_path / "digits",
    )
    recorded = load_run(tmp_path / "run").data
    assert recorded.options == options
    again = recorded.load()
    assert len(again.y_test) == 75 and np.array_equal(again.x_test, data.x_test)
    assert again.class_names == data.class_names


def test_data_that_changed_since_the_run_is_named(finished, small27, tmp_path):
    moved = tmp_path / "moved.npz"
    original = np.array(small27.classes)
    np.savez(
        moved,
        x_train=small27.x_train[:, 2:26, 2:26],
        y_train=original[small27.y_train],
        x_test=small27.x_test[:, 2:26, 2:26],
        y_test=original[small27.y_test],
    )
    with pytest.raises(
        DataError,
        match=r"^the data at .*moved\.npz now holds classes 2, 7 in 24x24 images with 1 channel, "
        r"but the run trained on classes 2, 7 in 28x28 images with 1 channel; pass the run's "
        r"data \(e\.g\. --path\) as it was\.$",
    ):
        load_run(finished[1]).data.load(moved)


def test_a_run_from_before_colour_images_still_loads(finished, small27, tmp_path):
    """Run folders written before options and preprocessing were recorded: grey images of
    their image_shape, loaded with the default options."""
    result, run_dir = finished
    copy = tmp_path / "old"
    shutil.copytree(run_dir, copy)
    config = json.loads((copy / "config.json").read_text())
    data = config["data"]
    del data["options"], data["preprocessing"]
    data["image_shape"] = [28, 28]
    (copy / "config.json").write_text(json.dumps(config))
    saved = load_run(copy)
    assert saved.data.preprocessing == Preprocessing((28, 28), 1)
    assert saved.data.options == LoadOptions()
    x = images_to_tensor(small27.x_test)
    assert torch.equal(predict_logits(saved.model(), x), predict_logits(result.model, x))


def test_a_colour_run_rebuilds_its_network_for_colour(small27, tmp_path):
    tint = np.array([1.0, 0.6, 0.3])
    colour = replace(
        small27,
        x_train=np.rint(small27.x_train[:600] * tint).astype(np.uint8),
        y_train=small27.y_train[:600],
        x_test=np.rint(small27.x_test * tint).astype(np.uint8),
        preprocessing=None,
    )
    result = train(CONFIG.replace(epochs=1), colour, run_dir=tmp_path / "rgb")
    saved = load_run(tmp_path / "rgb")
    assert saved.data.channels == 3 and saved.data.preprocessing == Preprocessing((28, 28), 3)
    model = saved.model()
    assert model.conv1.in_channels == 3
    x = images_to_tensor(colour.x_test)
    assert torch.equal(predict_logits(model, x), predict_logits(result.model, x))


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
