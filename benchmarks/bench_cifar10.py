"""The seed's network on CIFAR-10 as a plain one-model PyTorch loop: accuracy and seconds.

The reference the population engine is measured against on colour images: SeedNet
(channels 3, 32x32, 10 classes) trained on all 50000 training images with one torch thread,
one model, batches in a shuffled order, deepnet's Keras-rule optimizer and the MaxNorm
constraint after every step, exactly as one member of a search is trained. The
configuration is the default search's space (src/deepnet/search/default.toml) with the
first value of each list; ``--set name=value`` changes one. Each epoch prints its training
seconds (no evaluation inside) and the test accuracy on the 10000 test images.

    python benchmarks/bench_cifar10.py [--epochs 2] [--set optimizer=Nadam] [--seed 0]
"""

from __future__ import annotations

import argparse
import platform
import re
import statistics
import time
import tomllib
from pathlib import Path

import torch
from torch import nn

from deepnet import TrainConfig
from deepnet.config import PARAMS
from deepnet.data.cifar10 import CIFAR10_NAMES, load_cifar10_arrays
from deepnet.evaluate import images_to_tensor
from deepnet.nn import SeedNet
from deepnet.nn.optimizers import OPTIMIZERS
from deepnet.search.spec import DEFAULT_SEARCH

EVAL_BATCH = 1000


def cpu_kind() -> str:
    """The CPU's model name and whether it has AVX-512, which the C kernels use."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown CPU"
    model = re.search(r"^model name\s*:\s*(.+)$", info, re.MULTILINE)
    avx512 = re.search(r"^flags\s*:.*\bavx512f\b", info, re.MULTILINE)
    name = model.group(1).strip() if model else platform.processor() or "unknown CPU"
    return f"{name}, AVX-512 {'yes' if avx512 else 'no'}"


def default_search_config(changes: list[str]) -> TrainConfig:
    """The default search's first choice of every dimension, with ``name=value`` changes."""
    space = tomllib.loads(DEFAULT_SEARCH.read_text())["space"]
    values = {name: choices[0] for name, choices in space.items()}
    for change in changes:
        name, _, text = change.partition("=")
        if name not in PARAMS:
            raise SystemExit(f"--set {change}: {name!r} is not a parameter of TrainConfig")
        values[name] = PARAMS[name].parse(text)
    return TrainConfig.from_dict(values)


@torch.no_grad()
def accuracy(model: SeedNet, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    right = sum(
        (model(x[i : i + EVAL_BATCH]).argmax(1) == y[i : i + EVAL_BATCH]).sum().item()
        for i in range(0, len(x), EVAL_BATCH)
    )
    return right / len(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, help="epochs to train (default: the config's)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = default_search_config(args.set)
    epochs = args.epochs or config.epochs
    x_train, y_train, x_test, y_test = load_cifar10_arrays()
    x, y = images_to_tensor(x_train), torch.from_numpy(y_train)
    xt, yt = images_to_tensor(x_test), torch.from_numpy(y_test)
    generator = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)  # dropout masks
    model = SeedNet(config, len(CIFAR10_NAMES), (32, 32), generator, channels=3)
    optimizer = OPTIMIZERS[config.optimizer](model.parameters(), lr=config.learn_rate)
    print(f"CPU: {cpu_kind()}; torch {torch.__version__}, 1 thread")
    print(f"CIFAR-10: {len(y)} training and {len(yt)} test images, 32x32 RGB")
    print(f"config: {config}")
    seconds = []
    for epoch in range(1, epochs + 1):
        model.train()
        start = time.perf_counter()
        total = 0.0
        for batch in torch.randperm(len(y), generator=generator).split(config.batch_size):
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            model.apply_constraints()
            total += loss.item() * len(batch)
        seconds.append(time.perf_counter() - start)
        print(
            f"epoch {epoch:3d}  {seconds[-1]:7.1f} s  train loss {total / len(y):.4f}  "
            f"test accuracy {accuracy(model, xt, yt):.4f}",
            flush=True,
        )
    print(f"median {statistics.median(seconds):.1f} s per epoch over {epochs} epoch(s)")


if __name__ == "__main__":
    main()
