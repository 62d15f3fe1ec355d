"""Populations off the compiled kernels: the torch path a GPU runs, forced onto the CPU here
(no compiler: the kernels fall back to it), and a CUDA GPU where one is present, give every
member what the CPU engine gives it, through joins and resumes; devices are named or
refused clearly."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from deepnet import PopulationEngine
from deepnet.engine import kernels
from deepnet.engine.device import (
    Compute,
    Precision,
    check_precision,
    parse_device,
    parse_precision,
    resolve_device,
)
from deepnet.errors import ConfigError
from deepnet.search.executor import Executor
from tests.engine.fallback import needs_bf16, without_compiler
from tests.engine.test_population import (
    augmented_scheduled_members,
    deep_members,
    mixed_members,
    results_by_key,
)

NO_GPU = not torch.cuda.is_available()


def every_kind_of_member(data):
    """Members covering all a population does: each optimizer and activation, both dropouts,
    MaxNorm, augmentation, schedules, two blocks with batch norms (their own population)."""
    return [
        *mixed_members(data)[:7],
        *augmented_scheduled_members(data)[1:4],
        *deep_members(data, conv_blocks=2, batch_norm=True)[:2],
    ]


def train_joined_and_resumed(data, members, device: str) -> dict:
    """Results by member: the first five start, the rest join after a round; all are
    snapshotted after the second round and resumed in a fresh engine."""
    args = (data.x_train, data.y_train, 2)
    engine = PopulationEngine(device=device)
    training = engine.train(*args, members[:5])
    results = training.step()
    training.extend(engine.train(*args, members[5:]))
    results += training.step()
    live = [m for m in members if m.key in training.active]
    resume = {m.key: training.snapshot(m.key) for m in live}
    resumed = PopulationEngine(device=device).train(*args, live, resume)
    return results_by_key([replace(r, seconds=0.0) for r in results + list(resumed)])


@pytest.fixture(scope="module")
def on_kernels(small27):
    """What the compiled kernels give the same members, joins and resumes."""
    assert kernels.native()
    return train_joined_and_resumed(small27, every_kind_of_member(small27), "cpu")


def assert_same_results(got: dict, expected: dict, rel: float) -> None:
    assert got.keys() == expected.keys()
    for key, runs in expected.items():
        assert [r.epoch for r in got[key]] == [r.epoch for r in runs], key
        for a, b in zip(runs, got[key], strict=True):
            assert b.status == a.status, key
            assert b.train_loss == pytest.approx(a.train_loss, rel=rel, abs=1e-6), key
            assert b.val_loss == pytest.approx(a.val_loss, rel=rel, abs=1e-6), key


def test_the_torch_path_gives_what_the_kernels_give(small27, on_kernels, tmp_path):
    with without_compiler(tmp_path):
        got = train_joined_and_resumed(small27, every_kind_of_member(small27), "cpu")
    assert_same_results(got, on_kernels, rel=3e-4)  # measured: 6e-5 at most


@pytest.mark.skipif(NO_GPU, reason="no CUDA GPU here: the torch path is tested on the CPU")
def test_a_cuda_population_gives_what_the_cpu_gives(small27, on_kernels):
    got = train_joined_and_resumed(small27, every_kind_of_member(small27), "cuda")
    assert_same_results(got, on_kernels, rel=1e-3)


@pytest.mark.skipif(NO_GPU, reason="no CUDA GPU here")
def test_a_cuda_population_keeps_its_tensors_on_the_gpu_and_hands_back_cpu_models(small27):
    member = every_kind_of_member(small27)[0]
    member = replace(member, config=member.config.replace(epochs=1))
    training = PopulationEngine(device="cuda").train(small27.x_train, small27.y_train, 2, [member])
    (group,) = training._groups
    assert group.params.flat.device.type == "cuda" and group.x.device.type == "cuda"
    list(training)
    model = training.model(member.key)
    assert all(p.device.type == "cpu" for p in model.parameters())


@pytest.mark.parametrize(
    ("name", "device"),
    [("cpu", "cpu"), ("CPU", "cpu"), (" cuda ", "cuda"), ("cuda:1", "cuda:1")],
)
def test_device_names_are_parsed(name, device):
    assert parse_device(name) == torch.device(device)


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "mps", "cuda:-1", ""])
def test_unknown_devices_are_refused_naming_the_choices(name):
    with pytest.raises(ConfigError, match=r"is not a device deepnet trains on: use cpu, cuda"):
        parse_device(name)
    with pytest.raises(ConfigError, match="is not a device"):
        PopulationEngine(device=name)


@pytest.mark.skipif(not NO_GPU, reason="this machine has a CUDA GPU")
def test_cuda_without_a_gpu_is_refused_naming_the_fix():
    refusal = r"torch sees no CUDA GPU here .*Train on the CPU \(device=cpu\), or install"
    for name in ("cuda", "cuda:0"):
        with pytest.raises(ConfigError, match=refusal):
            resolve_device(name)
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        Executor("local", device="cuda")


def test_a_ray_executor_takes_cuda_unchecked_here_but_not_a_gpu_index():
    """The cluster's GPUs are on its nodes: the driver does not need one."""
    executor = Executor("ray", "127.0.0.1:6380", "CUDA")
    assert executor.device == "cuda"
    assert str(executor) == "the Ray cluster at 127.0.0.1:6380 (cuda)"
    with pytest.raises(ConfigError, match="a GPU of its own; give --device cuda, without"):
        Executor("ray", device="cuda:1")
    assert str(Executor("local", device="cpu")) == "this machine"


@pytest.mark.parametrize(("name", "precision"), [("fp32", "fp32"), (" BF16", "bf16")])
def test_precisions_are_parsed(name, precision):
    assert parse_precision(name) is Precision(precision)


@pytest.mark.parametrize("name", ["fp16", "float32", "", "bfloat16"])
def test_unknown_precisions_are_refused_naming_the_choices(name):
    with pytest.raises(ConfigError, match=r"is not known: use fp32 \(the default\) or bf16\."):
        parse_precision(name)
    with pytest.raises(ConfigError, match="is not known"):
        PopulationEngine(precision=name)


def test_bf16_is_refused_off_the_cpus_kernels_naming_the_fix(tmp_path):
    with pytest.raises(ConfigError, match=r"runs in the CPU's kernels, not on cuda: train on"):
        check_precision("bf16", torch.device("cuda"))
    with without_compiler(tmp_path):
        with pytest.raises(ConfigError, match=r"\(its kernels are not compiled\); use precision"):
            PopulationEngine(precision="bf16")
        assert PopulationEngine(precision="fp32").precision is Precision.FP32


@needs_bf16
def test_an_executor_checks_its_precision_here_and_hands_it_to_its_workers():
    local = Executor("local", precision="BF16")
    assert local.compute == Compute("cpu", Precision.BF16)
    assert str(local) == "this machine (bf16)"
    ray = Executor("ray", "127.0.0.1:6380", "cuda", "bf16")  # checked by each worker there
    assert ray.compute == Compute("cuda", Precision.BF16)
    assert str(ray) == "the Ray cluster at 127.0.0.1:6380 (cuda, bf16)"
    with pytest.raises(ConfigError, match="precision='half' is not known"):
        Executor("ray", precision="half")


def test_a_gpu_out_of_memory_is_one_line_naming_the_fixes(small27, small27_npz, tmp_path):
    """No GPU here to fill: torch's out-of-memory error is raised where a step computes."""
    from click.testing import CliRunner

    from deepnet.cli import main
    from deepnet.engine.population import Population

    def full(*_: object, **__: object) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Population, "_logits", full)
        result = CliRunner().invoke(
            main, ["train", "--path", str(small27_npz), "--out", str(tmp_path / "run")]
        )
    assert result.exit_code == 1
    assert (
        "Error: cpu ran out of memory training a population of 1 at batch size 128 (CUDA out of "
        "memory. Tried to allocate 2.00 GiB): use fewer workers on it (--n-jobs) or a smaller "
        "batch_size, or train on the CPU (--device cpu)." in " ".join(result.output.split())
    ), result.output
    assert "Traceback" not in result.output
