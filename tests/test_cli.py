import json
import platform
import shutil

import pytest
import torch
from click.testing import CliRunner

from deepnet import PARAMS
from deepnet.cli import main
from tests.engine.fallback import built_for, needs_bf16


@pytest.fixture
def cli():
    runner = CliRunner()
    return lambda *args: runner.invoke(main, [str(a) for a in args])


def test_help_explains_the_commands(cli):
    out = cli("--help").output
    for command in ("data", "train", "evaluate"):
        assert command in out


def test_train_help_lists_every_seed_parameter(cli):
    out = cli("train", "--help").output
    for name in PARAMS:
        assert f"--{name.replace('_', '-')}" in out
    assert "Adadelta" in out and "hard_sigmoid" in out


def test_data_shows_counts_and_source(cli):
    result = cli("data")
    assert result.exit_code == 0
    assert "5958" in result.output and "6265" in result.output and "12223" in result.output
    assert "source" in result.output and "cache" in result.output


def test_train_then_evaluate(cli, tmp_path):
    run_dir = tmp_path / "run"
    result = cli(
        "train",
        "--epochs",
        1,
        "--optimizer",
        "nadam",
        "--learn_rate",
        "0.002",
        "--classes",
        "2,7",
        "--out",
        run_dir,
    )
    assert result.exit_code == 0, result.output
    assert "epoch 1/1" in result.output and "accuracy" in result.output
    assert str(run_dir) in result.output.replace("\n", "")
    assert (run_dir / "report.html").is_file() and "report" in result.output
    evaluated = cli("evaluate", run_dir)
    assert evaluated.exit_code == 0, evaluated.output
    assert "matches the evaluation saved at training time" in evaluated.output
    again = cli("train", "--epochs", 1, "--out", run_dir)
    assert again.exit_code == 1 and "already exists (finished)" in again.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--activation", "rel"], "did you mean 'relu'?"),
        (["train", "--dropout-rate", "1.5"], ">= 0 and < 1"),
        (["train", "--learning-rate", "0.1"], "--learn-rate"),
        (["train", "--neurons", "many"], "neurons='many' is not allowed"),
        (["train", "--classes", "2,11"], "unknown class '11'"),
        (["data", "--path", "/nonexistent/mnist"], "does not exist"),
        (["evaluate", "/nonexistent/run"], "not a deepnet run folder"),
    ],
)
def test_bad_input_is_one_clear_line(cli, args, message):
    result = cli(*args)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("name", ["m[/]x", "[red]run", "a[bold]b[/bold]c"])
def test_markup_in_a_run_folder_is_printed_as_written(cli, small27_npz, tmp_path, name):
    run_dir = tmp_path / name
    result = cli(
        "train", "--epochs", 1, "--batch-size", 64, "--path", small27_npz, "--out", run_dir
    )
    assert result.exit_code == 0, result.output
    assert (run_dir / "run.json").is_file()
    assert f"run saved to {run_dir}" in result.output.replace("\n", "")


@pytest.mark.parametrize("name", ["d[/]x", "[red]data"])
def test_markup_in_a_data_path_is_printed_as_written(cli, small27_npz, tmp_path, name):
    path = tmp_path / name / "mnist.npz"
    path.parent.mkdir(parents=True)
    shutil.copy(small27_npz, path)
    result = cli("data", "--path", path)
    assert result.exit_code == 0, result.output
    assert str(path) in result.output.replace("\n", "")


@pytest.mark.parametrize("command", ["train", "search"])
def test_a_negative_seed_is_refused_naming_seed(cli, command):
    result = cli(command, "--seed", -1)
    assert result.exit_code == 2
    assert "Invalid value for '--seed': -1 is not in the range 0<=x<=2147483647" in result.output
    assert "Traceback" not in result.output


def test_a_seed_past_the_range_is_refused_naming_seed(cli, small27_npz):
    result = cli("train", "--epochs", 1, "--path", small27_npz, "--seed", 99999999999)
    assert result.exit_code == 2 and "--seed" in result.output
    assert "validation_split" not in result.output


def test_a_path_the_system_refuses_is_one_line(cli, small27_npz, tmp_path):
    too_long = tmp_path / ("x" * 300)
    for args in (
        ("train", "--epochs", 1, "--path", small27_npz, "--out", too_long),
        ("results", too_long),
        ("report", too_long),
        ("data", "--path", f"{too_long}.npz"),
    ):
        result = cli(*args)
        assert result.exit_code == 1, (args, result.output)
        assert "File name too long" in result.output and "Traceback" not in result.output


def test_evaluate_on_a_search_folder_points_to_its_refit(cli, tmp_path):
    search = tmp_path / "search"
    search.mkdir()
    (search / "run.json").write_text('{"format": 1, "kind": "search", "status": "finished"}')
    (search / "search.json").write_text("{}")
    result = cli("evaluate", search)
    assert result.exit_code == 1 and f"deepnet evaluate {search / 'refit'}" in result.output


@pytest.mark.parametrize("command", ["train", "search"])
@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("gpu", "device='gpu' is not a device deepnet trains on: use cpu, cuda or cuda:N"),
        pytest.param(
            "cuda",
            "device='cuda': torch sees no CUDA GPU here",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is here"),
        ),
    ],
)
def test_a_device_this_machine_lacks_is_one_line_before_anything_is_made(
    cli, small27_npz, tmp_path, command, device, message
):
    run_dir = tmp_path / "run"
    result = cli(command, "--device", device, "--path", small27_npz, "--out", run_dir)
    assert result.exit_code == 1, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not run_dir.exists()


@pytest.mark.parametrize("command", ["train", "search"])
def test_an_unknown_precision_is_one_line_before_anything_is_made(
    cli, small27_npz, tmp_path, command
):
    run_dir = tmp_path / "run"
    result = cli(command, "--precision", "fp16", "--path", small27_npz, "--out", run_dir)
    assert result.exit_code == 1, result.output
    assert "precision='fp16' is not known: use fp32 (the default) or bf16." in result.output
    assert "Traceback" not in result.output and not run_dir.exists()


@pytest.mark.skipif(platform.machine() != "x86_64", reason="an x86-64 CPU level")
@pytest.mark.parametrize("command", ["train", "search"])
def test_bf16_on_a_cpu_without_it_is_one_line_naming_the_fix(cli, small27_npz, tmp_path, command):
    run_dir = tmp_path / "run"
    with built_for("x86-64-v3", tmp_path / "cache"):  # kernels as for an AVX2-only CPU
        result = cli(command, "--precision", "bf16", "--path", small27_npz, "--out", run_dir)
    assert result.exit_code == 1, result.output
    assert "no bf16 products (no AVX512_BF16); use precision=fp32." in result.output
    assert "Traceback" not in result.output and not run_dir.exists()


@needs_bf16
def test_train_with_bf16_products(cli, small27_npz, tmp_path):
    run_dir = tmp_path / "run"
    args = ("--epochs", 2, "--precision", "bf16", "--path", small27_npz, "--out", run_dir)
    result = cli("train", *args)
    assert result.exit_code == 0, result.output
    assert "seed 0, bf16 products" in result.output
    assert json.loads((run_dir / "metrics.json").read_text())["accuracy"] > 0.9
