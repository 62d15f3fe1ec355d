"""Seconds per CV fit: a plain one-model PyTorch loop vs deepnet's population engine.

Every fit trains the seed's baseline network (Conv 4 -> Conv 8 -> MaxPool -> Dropout -> Dense
16 -> Dropout -> Dense 2, batch 128) on fold 1 of a 3-fold split of MNIST 2 vs 7 (8149
images), in this process with one torch thread (one core). The population engine trains
N members at once (four optimizers in turn, different seeds); its time includes a
validation pass per epoch, which the plain loop skips. Kinds alternate round by round so
that noise on a shared machine falls on all alike. Times are measured over --epochs and
scaled to a 12-epoch fit.

--images picks the images: grey28 (MNIST as it is, 28x28 grey) and rgb32 (the same digits
tinted a random colour each and padded to 32x32 RGB, CIFAR-10's shape: same images and task,
so only the channels and the size differ), side by side in one run. --nets picks the networks
alike: seed (the baseline), blocks2 (a second conv-conv-pool block of 16 filters), bn (batch
normalisation after each convolution), blocks2-bn, and wide-bn (searches/fashion-mnist.toml's
16/32 -> 64 filters with batch norms); the plain loop trains the same network.
--threads also times each population on that many threads (its members split into runs that
the kernels train at once): its seconds per fit beside the one-thread figure show the gain.

With --memory, each population size also trains one epoch in a fresh process, which
reports its peak resident memory (64 members as one population, and 64 in default chunks).

    python benchmarks/bench_fit.py [--sizes 1,3,6,12,24] [--epochs 2] [--rounds 1]
        [--images grey28,rgb32] [--nets seed,blocks2,bn,blocks2-bn,wide-bn] [--threads 1,2]
        [--memory]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# isort: off
import deepnet  # noqa: F401  first: it sets OMP_WAIT_POLICY before torch loads its OpenMP

# isort: on
import numpy as np
import torch
from torch import nn

from bench_cifar10 import cpu_kind
from deepnet import Member, PopulationEngine, TrainConfig, load_dataset, stratified_folds
from deepnet.engine.kernels import native
from deepnet.evaluate import channels_last, images_to_tensor

OPTIMIZERS = ("Adadelta", "Adam", "Nadam", "RMSprop")
NETS = {  # the TrainConfig parameters of each network --nets names
    "seed": {},
    "blocks2": {"conv_blocks": 2},
    "bn": {"batch_norm": True},
    "blocks2-bn": {"conv_blocks": 2, "batch_norm": True},
    # searches/fashion-mnist.toml's network: 16/32 filters, then a block of 64, batch norms
    "wide-bn": {
        "conv_blocks": 2,
        "batch_norm": True,
        "conv1_filters": 16,
        "conv2_filters": 32,
        "block2_filters": 64,
    },
}


@dataclass(frozen=True)
class Images:
    """Training images (n, h, w, c) uint8 and their labels, under a name for the tables."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray

    @property
    def channels(self) -> int:
        return self.x_train.shape[3]


def grey28(x: np.ndarray, y: np.ndarray) -> Images:
    return Images("grey 28x28", x, y)


def rgb32(x: np.ndarray, y: np.ndarray) -> Images:
    """The digits tinted one random colour each (seeded) and padded to 32x32."""
    tint = np.random.default_rng(0).uniform(0.3, 1.0, (len(x), 1, 1, 3))
    rgb = np.pad(x * tint, ((0, 0), (2, 2), (2, 2), (0, 0))).round().astype(np.uint8)
    return Images("RGB 32x32", rgb, y)


IMAGES = {"grey28": grey28, "rgb32": rgb32}


def fold(data: Images):
    return stratified_folds(data.y_train, 3, 0)[0]


def population_fit(
    data: Images,
    size: int,
    epochs: int,
    seed: int,
    max_members: int | None = None,
    net: str = "seed",
    threads: int = 1,
):
    """Seconds per member for ``size`` members trained together for ``epochs`` on
    ``threads`` torch threads."""
    train, val = fold(data)
    members = [
        Member(
            f"m{i}",
            TrainConfig(epochs=epochs, optimizer=OPTIMIZERS[i % len(OPTIMIZERS)], **NETS[net]),
            train,
            val,
            seed * 1000 + i,
        )
        for i in range(size)
    ]
    engine = PopulationEngine(max_members=max_members or size)
    torch.set_num_threads(threads)
    try:
        start = time.perf_counter()
        results = list(engine.train(data.x_train, data.y_train, 2, members))
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(1)
    final = [r.val_accuracy for r in results if r.done]
    return seconds / size, statistics.fmean(final)


def plain_model(data: Images, net: str) -> nn.Sequential:
    """The network ``net`` as torch layers: conv blocks (batch norms without conv biases),
    then Dense 16 -> Dropout -> Dense 2."""
    config, layers, inputs = TrainConfig(**NETS[net]), [], data.channels
    for pair in config.block_filters:
        for filters in pair:
            layers.append(nn.Conv2d(inputs, filters, 3, bias=not config.batch_norm))
            if config.batch_norm:
                layers.append(nn.BatchNorm2d(filters, eps=1e-3, momentum=0.01))
            layers.append(nn.ReLU())
            inputs = filters
        layers += [nn.MaxPool2d(2), nn.Dropout(0.25)]
    layers += [nn.Flatten(), nn.LazyLinear(16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 2)]
    model = nn.Sequential(*layers)
    model(images_to_tensor(data.x_train[:2]))  # sizes the dense layer
    return model


def plain_fit(data: Images, epochs: int, seed: int, net: str = "seed") -> tuple[float, float]:
    """The same network as a textbook PyTorch loop (torch.optim.Adadelta, nn.Dropout)."""
    torch.manual_seed(seed)
    model = plain_model(data, net)
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0, rho=0.95, eps=1e-8)
    train, val = fold(data)
    x, y = images_to_tensor(data.x_train), torch.from_numpy(data.y_train)
    train = torch.from_numpy(train)
    start = time.perf_counter()
    model.train()
    for _ in range(epochs):
        for batch in train[torch.randperm(len(train))].split(128):
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        accuracy = (model(x[val]).argmax(1) == y[val]).double().mean().item()
    return seconds, accuracy


def peak_resident_kib() -> int:
    """This process's peak resident memory (VmHWM), in KiB. Not getrusage's ru_maxrss,
    which Linux carries across exec: a child started from a large parent would report the
    parent's size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise SystemExit("no VmHWM in /proc/self/status: peak memory needs Linux")


def peak_rss_mib(size: int, max_members: int | None, images: str) -> float:
    """Peak resident memory (MiB) of a fresh process training ``size`` members one epoch."""
    args = [sys.executable, __file__, "--peak-rss", str(size), "--images", images]
    if max_members:
        args += ["--max-members", str(max_members)]
    out = subprocess.run(args, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def load_images(names: list[str]) -> list[Images]:
    """MNIST 2 vs 7's training images in each requested form."""
    unknown = sorted(set(names) - set(IMAGES))
    if unknown:
        raise SystemExit(f"unknown --images {unknown}; choose from {sorted(IMAGES)}")
    mnist = load_dataset("mnist", (2, 7))
    return [IMAGES[name](channels_last(mnist.x_train), mnist.y_train) for name in names]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,3,6,12,24", help="population sizes")
    parser.add_argument("--epochs", type=int, default=2, help="epochs measured per fit")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds")
    parser.add_argument("--images", default="grey28", help=f"any of {','.join(IMAGES)}")
    parser.add_argument("--nets", default="seed", help=f"any of {','.join(NETS)}")
    parser.add_argument("--threads", default="1", help="thread counts for the populations")
    parser.add_argument("--memory", action="store_true", help="also measure peak memory")
    parser.add_argument("--peak-rss", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--max-members", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    native()  # compiles the kernels on a first run, before any clock starts
    datasets = load_images(args.images.split(","))
    if args.peak_rss:
        population_fit(datasets[0], args.peak_rss, 1, 0, args.max_members)
        print(peak_resident_kib() / 1024)
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    thread_counts = [int(t) for t in args.threads.split(",")]
    scale = 12 / args.epochs
    print(
        f"{len(fold(datasets[0])[0])} training images, batch 128, 1 torch thread (populations: "
        f"{args.threads}), {args.epochs} epochs measured and scaled to 12, {args.rounds} "
        f"alternating round(s); CPU: {cpu_kind()}"
    )
    nets = args.nets.split(",")
    unknown = sorted(set(nets) - set(NETS))
    if unknown:
        raise SystemExit(f"unknown --nets {unknown}; choose from {sorted(NETS)}")
    kinds = {}
    for data in datasets:
        for net in nets:
            group = f"{data.name} {net}"
            kinds[group, "plain PyTorch loop"] = lambda r, d=data, k=net: plain_fit(
                d, args.epochs, r, k
            )
            for size, threads in itertools.product(sizes, thread_counts):
                name = f"population of {size}" + (f", {threads} threads" if threads > 1 else "")
                kinds[group, name] = lambda r, d=data, n=size, k=net, t=threads: population_fit(
                    d, n, args.epochs, r, None, k, t
                )
    times: dict[tuple[str, str], list[float]] = {k: [] for k in kinds}
    accuracy: dict[tuple[str, str], list[float]] = {k: [] for k in kinds}
    for r in range(args.rounds):
        for (group, name), fit in kinds.items():
            seconds, acc = fit(r)
            times[group, name].append(seconds * scale)
            accuracy[group, name].append(acc)
            print(
                f"  round {r + 1}  {group:<22} {name:<20} {seconds * scale:6.2f} s per 12-epoch "
                "fit",
                flush=True,
            )
    seed_plain = {}  # each image set's seed network in the plain loop, where measured
    print(f"\n{'':<45}{'s per fit':>10}{'s/epoch':>9}{'speed-up':>10}{'val acc':>9}")
    for group in dict.fromkeys(k[0] for k in kinds):
        plain = statistics.median(times[group, "plain PyTorch loop"])
        for _, name in (k for k in kinds if k[0] == group):
            t = statistics.median(times[group, name])
            acc = statistics.fmean(accuracy[group, name])
            label = f"{group}  {name}"
            print(f"{label:<45}{t:>10.2f}{t / 12:>9.3f}{plain / t:>9.2f}x{acc:>9.4f}")
            if group.endswith(" seed"):
                seed_plain[group.removesuffix(" seed"), name] = t
    if len(nets) > 1 and "seed" in nets:
        print("\ncost of each network against the seed's, same images and kind:")
        for (group, name), values in times.items():
            base = seed_plain.get((group.rsplit(" ", 1)[0], name))
            if base and not group.endswith(" seed"):
                print(f"  {group:<22} {name:<20} {statistics.median(values) / base:6.2f}x")
    if args.memory:
        print(f"\npeak resident memory ({datasets[0].name}), one epoch in a fresh process:")
        for size, chunk in [(1, None), (16, None), (64, None), (64, 12)]:
            label = f"{size} members" + (
                f" in chunks of {chunk}" if chunk else " as one population"
            )
            rss = peak_rss_mib(size, chunk, args.images.split(",")[0])
            print(f"  {label:<32} {rss:7.0f} MiB", flush=True)


if __name__ == "__main__":
    main()
