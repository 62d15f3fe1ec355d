"""Exported runs run without deepnet: ONNX through onnxruntime, TorchScript through
torch.jit.load, both giving deepnet's own probabilities and stating their preprocessing."""

import subprocess
import sys
from dataclasses import replace

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from deepnet import ConfigError, RunExistsError, TrainConfig, load_run, train
from deepnet.export import ExportFormat, ExportMetadata, export_run, read_metadata

TINT = np.array([1.0, 0.6, 0.3])


def tinted(images):
    """Grey digits as colour images: each channel a different share of the grey."""
    return np.rint(images * TINT).astype(np.uint8)


@pytest.fixture(scope="module")
def grey_run(small27, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "grey"
    train(TrainConfig(epochs=1, batch_size=64, optimizer="Nadam"), small27, run_dir=run_dir)
    return load_run(run_dir), small27.x_test


@pytest.fixture(scope="module")
def colour_run(small27, tmp_path_factory):
    """RGB images of an odd size (26x24), through the less common activations."""
    crop = np.s_[:, 1:27, 2:26]
    data = replace(
        small27,
        x_train=tinted(small27.x_train[crop]),
        x_test=tinted(small27.x_test[crop]),
        preprocessing=None,
    )
    config = TrainConfig(
        epochs=1, conv_activation="hard_sigmoid", dense_activation="softsign", neurons=20
    )
    run_dir = tmp_path_factory.mktemp("runs") / "colour"
    train(config, data, run_dir=run_dir)
    return load_run(run_dir), data.x_test


@pytest.fixture(params=["grey_run", "colour_run"])
def trained(request):
    return request.getfixturevalue(request.param)


def test_onnx_export_gives_deepnets_probabilities_in_onnxruntime(trained, tmp_path):
    run, images = trained
    path = export_run(run, tmp_path / "model.onnx", ExportFormat.ONNX)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = run.predict(images).probabilities
    (got,) = session.run(None, {"images": images})
    assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-5
    (one,) = session.run(None, {"images": images[:1]})  # the batch dimension is dynamic
    assert np.abs(one - expected[:1]).max() < 1e-5


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_torchscript_export_gives_deepnets_probabilities(trained, tmp_path):
    run, images = trained
    path = export_run(run, tmp_path / "model.pt", "torchscript")
    model = torch.jit.load(str(path))
    with torch.no_grad():
        got = model(torch.from_numpy(images)).numpy()
    assert np.abs(got - run.predict(images).probabilities).max() < 1e-5


@pytest.mark.parametrize("format", list(ExportFormat))
def test_metadata_states_classes_and_preprocessing(colour_run, tmp_path, format):
    run, _ = colour_run
    path = export_run(run, None if format is ExportFormat.ONNX else tmp_path / "m.pt", format)
    metadata = read_metadata(path)
    assert metadata == ExportMetadata(("2", "7"), run.data.preprocessing)
    assert metadata.preprocessing.image_shape == (26, 24)
    assert metadata.preprocessing.channels == 3
    assert metadata.preprocessing.scale == 1 / 255
    if format is ExportFormat.ONNX:
        assert path == run.path / "model.onnx"
        props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        assert props["deepnet.class_names"] == '["2", "7"]'
        assert props["deepnet.input"].startswith("images: uint8 (batch, 26, 24, 3) pixels")


def test_an_existing_file_is_never_overwritten(grey_run, tmp_path):
    run, _ = grey_run
    out = tmp_path / "model.onnx"
    out.write_text("mine")
    with pytest.raises(RunExistsError, match=r"model\.onnx already exists; deepnet never"):
        export_run(run, out, ExportFormat.ONNX)
    assert out.read_text() == "mine"


def test_an_unknown_format_is_named(grey_run, tmp_path):
    with pytest.raises(ConfigError, match=r"^format='keras' is not an export format: choose onnx"):
        export_run(grey_run[0], tmp_path / "m", "keras")


MISSING_ONNX = """
import sys
sys.modules["onnx"] = None  # as if not installed
from deepnet import DeepNetError
from deepnet.export import ExportFormat, export_run
print(export_run(sys.argv[1], sys.argv[2] + ".pt", ExportFormat.TORCHSCRIPT).name)
try:
    export_run(sys.argv[1], sys.argv[2] + ".onnx", ExportFormat.ONNX)
except DeepNetError as exc:
    print(exc)
"""


def test_without_onnx_the_error_names_the_extra_to_install(grey_run, tmp_path):
    run, _ = grey_run
    done = subprocess.run(
        [sys.executable, "-c", MISSING_ONNX, str(run.path), str(tmp_path / "m")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == [
        "m.pt",
        "exporting to ONNX needs the onnx package, which is not installed: "
        "pip install 'deepnet[export]'.",
    ]
    assert not (tmp_path / "m.onnx").exists()
