"""Seconds per 12-epoch fit of the seed's baseline: deepnet's engine vs a plain PyTorch loop.

Both train the same network (Conv 4 -> Conv 8 -> MaxPool -> Dropout -> Dense 16 -> Dropout
-> Dense 2) on the full MNIST 2-vs-7 training split with batch 128, in the same process
and the same thread count. The runs alternate (engine, loop, engine, loop, ...) so that
noise from a shared machine falls on both alike; the ratio of medians is what to quote.

    python benchmarks/bench_fit.py [--rounds 3] [--epochs 12]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from torch import nn

from deepnet import Member, SequentialEngine, TrainConfig, evaluate, load_dataset
from deepnet.evaluate import images_to_tensor


def engine_fit(data, epochs: int, seed: int) -> tuple[float, float]:
    """One fit through deepnet's engine; returns (seconds, test accuracy)."""
    member = Member(
        "m", TrainConfig(epochs=epochs), np.arange(len(data.y_train)), np.arange(0), seed
    )
    start = time.perf_counter()
    training = SequentialEngine().train(data.x_train, data.y_train, 2, [member])
    for _ in training:
        pass
    seconds = time.perf_counter() - start
    return seconds, evaluate(training.model("m"), data.x_test, data.y_test).accuracy


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
    x, y = images_to_tensor(data.x_train), torch.from_numpy(data.y_train)
    start = time.perf_counter()
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(y)).split(128):
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        accuracy = (model(images_to_tensor(data.x_test)).argmax(1).numpy() == data.y_test).mean()
    return seconds, float(accuracy)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="fits of each kind (alternating)")
    parser.add_argument("--epochs", type=int, default=12)
    args = parser.parse_args()
    data = load_dataset("mnist", (2, 7))
    print(
        f"{len(data.y_train)} training images, {args.epochs} epochs, batch 128, "
        f"{torch.get_num_threads()} torch threads, {args.rounds} alternating rounds"
    )
    results: dict[str, list[tuple[float, float]]] = {"deepnet engine": [], "plain PyTorch": []}
    for r in range(args.rounds):
        for name, fit in (("deepnet engine", engine_fit), ("plain PyTorch", plain_fit)):
            seconds, accuracy = fit(data, args.epochs, seed=r)
            results[name].append((seconds, accuracy))
            print(f"  round {r + 1}  {name:<15} {seconds:6.1f} s  test accuracy {accuracy:.4f}")
    medians = {name: statistics.median(s for s, _ in runs) for name, runs in results.items()}
    print(f"\n{'':<16}{'s/fit (median)':>15}{'s/epoch':>9}{'mean test acc':>15}")
    for name, runs in results.items():
        mean_acc = statistics.mean(a for _, a in runs)
        print(
            f"{name:<16}{medians[name]:>15.1f}{medians[name] / args.epochs:>9.2f}{mean_acc:>15.4f}"
        )
    ratio = medians["deepnet engine"] / medians["plain PyTorch"]
    print(f"\nratio deepnet engine / plain PyTorch: {ratio:.2f}x the time per fit")


if __name__ == "__main__":
    main()
