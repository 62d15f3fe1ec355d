"""Where a population trains: ``cpu`` (the compiled kernels) or a CUDA GPU (torch's grouped
convolutions and batched products there: the engine's torch path, on the GPU's memory)."""

from __future__ import annotations

import re

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
