"""Where a population trains: ``cpu`` (the compiled kernels) or a CUDA GPU (torch's grouped
convolutions and batched products there: the engine's torch path, on the GPU's memory); and
in what arithmetic (``Precision``): float32, or bf16 products with float32 sums where the
CPU's kernels have them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

import torch

from deepnet.errors import ConfigError

_NAME = re.compile(r"cpu|cuda(:\d+)?")


def parse_device(name: str | torch.device) -> torch.device:
    """The torch device ``name`` names ("cpu", "cuda", "cuda:N", any case), not yet checked
    against this machine (a Ray cluster's GPUs are on other machines); ConfigError else."""
    text = str(name).strip().lower()
    if not _NAME.fullmatch(text):
        raise ConfigError(
            f"device={str(name)!r} is not a device deepnet trains on: use cpu, cuda or "
            "cuda:N (the GPU's index)."
        )
    return torch.device(text)


def resolve_device(name: str | torch.device) -> torch.device:
    """parse_device's device, checked against what this torch build and machine have:
    ConfigError naming the problem and the fix where it has no such GPU."""
    device = parse_device(name)
    text = str(device)
    if device.type == "cpu":
        return device
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
        raise ConfigError(
            f"device={text!r}: torch sees no CUDA GPU here (torch {torch.__version__}, "
            f"{build}). Train on the CPU (device=cpu), or install a CUDA build of torch on "
            "a machine with an NVIDIA GPU and its driver."
        )
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ConfigError(
            f"device={text!r}: this machine has {count} CUDA GPU(s), numbered 0 to "
            f"{count - 1}; choose one of those."
        )
    return device


class Precision(StrEnum):
    FP32 = "fp32"  # float32 throughout
    BF16 = "bf16"  # the convolutions' products in bf16, float32 sums and weights


def parse_precision(name: str) -> Precision:
    """The Precision ``name`` names (any case); ConfigError else."""
    try:
        return Precision(str(name).strip().lower())
    except ValueError:
        raise ConfigError(
            f"precision={str(name)!r} is not known: use fp32 (the default) or bf16."
        ) from None


def check_precision(precision: str, device: torch.device) -> Precision:
    """parse_precision's precision, checked against ``device`` and this machine: bf16 needs
    the compiled kernels on a CPU with AVX512_BF16. ConfigError naming the fix else."""
    from deepnet.engine import kernels

    chosen = parse_precision(precision)
    if chosen is Precision.BF16:
        if device.type != "cpu":
            raise ConfigError(
                f"precision=bf16 runs in the CPU's kernels, not on {device}: train on the "
                "GPU in fp32 (precision=fp32), or on the CPU (device=cpu)."
            )
        if not kernels.bf16_products():
            why = "its kernels are not compiled" if not kernels.native() else "no AVX512_BF16"
            raise ConfigError(
                f"precision=bf16: this CPU has no bf16 products ({why}); use precision=fp32."
            )
    return chosen


@dataclass(frozen=True)
class Compute:
    """Where a worker's populations train and in what arithmetic: a device name ("cpu",
    "cuda[:N]") and a Precision, both checked where the worker runs."""

    device: str = "cpu"
    precision: Precision = Precision.FP32


CPU_FP32 = Compute()  # the default: the CPU's kernels in float32
