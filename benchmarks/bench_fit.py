"""Seconds per CV fit: a plain one-model PyTorch loop vs deepnet's population engine.

Every fit trains the seed's baseline network (Conv 4 -> Conv 8 -> MaxPool -> Dropout -> Dense
16 -> Dropout -> Dense 2, batch 128) on fold 1 of a 3-fold split of MNIST 2 vs 7 (8149
images), in this process with one torch thread (one core). The population engine trains
N members at once (four optimizers in turn, different seeds); its time includes a
validation pass per epoch, which the plain loop skips. Kinds alternate round by round so
that noise on a shared machine falls on all alike. Times are measured over --epochs and
scaled to a 12-epoch fit.

With --memory, each population size also trains one epoch in a fresh process, which
reports its peak resident memory (64 members as one population, and 64 in default chunks).

    python benchmarks/bench_fit.py [--sizes 1,3,6,12,24] [--epochs 2] [--rounds 1] [--memory]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time

import torch
from torch import nn

from deepnet import Member, PopulationEngine, TrainConfig, load_dataset, stratified_folds
from deepnet.evaluate import images_to_tensor

OPTIMIZERS = ("Adadelta", "Adam", "Nadam", "RMSprop")


def fold(data):
    return stratified_folds(data.y_train, 3, 0)[0]


def population_fit(data, size: int, epochs: int, seed: int, max_members: int | None = None):
    """Seconds per member for ``size`` members trained together for ``epochs``."""
    train, val = fold(data)
    members = [
        Member(
            f"m{i}",
            TrainConfig(epochs=epochs, optimizer=OPTIMIZERS[i % len(OPTIMIZERS)]),
            train,
            val,
            seed * 1000 + i,
        )
        for i in range(size)
    ]
    engine = PopulationEngine(max_members=max_members or size)
    start = time.perf_counter()
    results = list(engine.train(data.x_train, data.y_train, 2, members))
    seconds = time.perf_counter() - start
    final = [r.val_accuracy for r in results if r.done]
    return seconds / size, statistics.fmean(final)


def plain_fit(data, epochs: int, seed: int) -> tuple[float, float]:
    """The same network as a textbook PyTorch loop (torch.optim.Adadelta, nn.Dropout)."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.ReLU(),
        nn.Conv2d(4, 8, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Dropout(0.25),
        nn.Flatten(),
        nn.Linear(8 * 12 * 12, 16),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(16, 2),
    )
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


def peak_rss_mib(size: int, max_members: int | None) -> float:
    """Peak resident memory (MiB) of a fresh process training ``size`` members one epoch."""
    args = [sys.executable, __file__, "--peak-rss", str(size)]
    if max_members:
        args += ["--max-members", str(max_members)]
    out = subprocess.run(args, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,3,6,12,24", help="population sizes")
    parser.add_argument("--epochs", type=int, default=2, help="epochs measured per fit")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds")
    parser.add_argument("--memory", action="store_true", help="also measure peak memory")
    parser.add_argument("--peak-rss", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--max-members", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_dataset("mnist", (2, 7))
    if args.peak_rss:
        population_fit(data, args.peak_rss, 1, 0, args.max_members)
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    scale = 12 / args.epochs
    print(
        f"{len(fold(data)[0])} training images, batch 128, 1 torch thread, {args.epochs} epochs "
        f"measured and scaled to 12, {args.rounds} alternating round(s)"
    )
    kinds = {"plain PyTorch loop": lambda r: plain_fit(data, args.epochs, r)}
    for size in sizes:
        kinds[f"population of {size}"] = lambda r, n=size: population_fit(data, n, args.epochs, r)
    times: dict[str, list[float]] = {k: [] for k in kinds}
    accuracy: dict[str, list[float]] = {k: [] for k in kinds}
    for r in range(args.rounds):
        for name, fit in kinds.items():
            seconds, acc = fit(r)
            times[name].append(seconds * scale)
            accuracy[name].append(acc)
            print(
                f"  round {r + 1}  {name:<20} {seconds * scale:6.2f} s per 12-epoch fit", flush=True
            )
    plain = statistics.median(times["plain PyTorch loop"])
    print(f"\n{'':<22}{'s per fit':>10}{'speed-up':>10}{'val acc':>9}")
    for name in kinds:
        t = statistics.median(times[name])
        acc = statistics.fmean(accuracy[name])
        print(f"{name:<22}{t:>10.2f}{plain / t:>9.2f}x{acc:>9.4f}")
    if args.memory:
        print("\npeak resident memory, one epoch in a fresh process:")
        for size, chunk in [(1, None), (16, None), (64, None), (64, 12)]:
            label = f"{size} members" + (
                f" in chunks of {chunk}" if chunk else " as one population"
            )
            print(f"  {label:<32} {peak_rss_mib(size, chunk):7.0f} MiB", flush=True)


if __name__ == "__main__":
    main()
