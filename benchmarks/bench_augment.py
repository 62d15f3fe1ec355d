"""What data augmentation costs the population engine, as a share of one training step.

A population of --members members (four optimizers in turn, different seeds, batch 128)
trains on fold 1 of a 3-fold split of MNIST 2 vs 7 with one torch thread, its step timed
over an epoch (no validation). Side by side, in the same run and on the same batches: the
plain image gather the step begins with, and the augmented gather that replaces it when
every member augments (shift 2, rotation 10 degrees, scale 0.1; the per-image draws
included), each also as a ratio of the step. Then whole epochs with and without that
augmentation, alternating round by round so that noise on a shared machine falls on both.
--images as in bench_fit.py: grey28 (MNIST as it is) and rgb32 (CIFAR-10's shape).

    python benchmarks/bench_augment.py [--members 16] [--rounds 2] [--images grey28,rgb32]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from bench_cifar10 import cpu_kind
from bench_fit import IMAGES, OPTIMIZERS, Images, fold, load_images
from deepnet import Member, PopulationEngine, TrainConfig
from deepnet.engine.augment import Augmentation, AugmentStream, BatchTransforms, gather_augmented
from deepnet.engine.inputs import pixel_tensors
from deepnet.engine.kernels import gather_images, native

BATCH = 128
AUGMENTED = {"augment_shift": 2, "augment_rotate": 10.0, "augment_scale": 0.1}


def members(data: Images, size: int, config: TrainConfig) -> list[Member]:
    train, _ = fold(data)
    return [
        Member(f"m{i}", config.replace(optimizer=OPTIMIZERS[i % len(OPTIMIZERS)]), train, [], i)
        for i in range(size)
    ]


def epoch_seconds(data: Images, size: int, config: TrainConfig) -> float:
    """Seconds of a population's second epoch (the first warms it up)."""
    training = PopulationEngine(max_members=size).train(
        data.x_train, data.y_train, 2, members(data, size, config.replace(epochs=2))
    )
    training.step()
    start = time.perf_counter()
    training.step()
    return time.perf_counter() - start


def gather_seconds(data: Images, size: int) -> tuple[float, float]:
    """Seconds per step of the plain gather and of the augmented one (draws included), on
    an epoch's batches."""
    x, _ = pixel_tensors(data.x_train, data.y_train)
    train, _ = fold(data)
    rng = np.random.default_rng(0)
    orders = [torch.as_tensor(rng.permutation(train)) for _ in range(size)]
    streams = [AugmentStream(Augmentation(2, 10.0, 0.1), i) for i in range(size)]
    height, width = data.x_train.shape[1:3]
    steps = len(train) // BATCH
    plain = augmented = 0.0
    for step in range(steps):
        index = torch.stack([o[step * BATCH : (step + 1) * BATCH] for o in orders])
        start = time.perf_counter()
        gather_images(x, index)
        middle = time.perf_counter()
        drawn = [s.transforms(1, step * BATCH, BATCH, height, width) for s in streams]
        gather_augmented(x, index, BatchTransforms.of(drawn, BATCH))
        plain, augmented = plain + middle - start, augmented + time.perf_counter() - middle
    return plain / steps, augmented / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=16, help="members in the population")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds")
    parser.add_argument("--images", default="grey28,rgb32", help=f"any of {','.join(IMAGES)}")
    args = parser.parse_args()
    torch.set_num_threads(1)
    native()  # compiles the kernels on a first run, before any clock starts
    datasets = load_images(args.images.split(","))
    steps = -(-len(fold(datasets[0])[0]) // BATCH)
    print(
        f"{cpu_kind()}; C kernels {'compiled' if native() else 'absent (torch fallback)'}\n"
        f"{args.members} members, {len(fold(datasets[0])[0])} training images each, batch "
        f"{BATCH} ({steps} steps an epoch), 1 torch thread, {args.rounds} alternating round(s)"
    )
    base, augmenting = TrainConfig(batch_size=BATCH), TrainConfig(batch_size=BATCH, **AUGMENTED)
    header = f"{'':<12}{'step':>9}{'gather':>9}{'augmented':>11}{'ratio':>8}{'epoch':>9}"
    rows = []
    for data in datasets:
        plain_epochs, augmented_epochs, gathers = [], [], []
        for r in range(args.rounds):
            plain_epochs.append(epoch_seconds(data, args.members, base))
            augmented_epochs.append(epoch_seconds(data, args.members, augmenting))
            gathers.append(gather_seconds(data, args.members))
            print(
                f"  round {r + 1}  {data.name:<11} epoch {plain_epochs[-1]:6.2f} s plain, "
                f"{augmented_epochs[-1]:6.2f} s augmented",
                flush=True,
            )
        step = statistics.median(plain_epochs) / steps
        plain = statistics.median(g[0] for g in gathers)
        augmented = statistics.median(g[1] for g in gathers)
        epochs = statistics.median(augmented_epochs) / statistics.median(plain_epochs)
        rows.append(
            f"{data.name:<12}{step * 1e3:>7.1f}ms{plain * 1e3:>7.2f}ms{augmented * 1e3:>9.2f}ms"
            f"{augmented / step:>8.3f}{epochs:>8.3f}x"
        )
    print(f"\n{header}")
    print("\n".join(rows))
    print(
        "step: one population step; gather, augmented: the plain and the augmented gather of "
        "its images;\nratio: augmented gather / step; epoch: an augmented epoch / a plain one."
    )


if __name__ == "__main__":
    main()
