"""This machine's limit, and how near deepnet's kernels, layer by layer and a whole epoch,
come to it.

The peak is measured, not taken from a data sheet or a library: a C loop of independent
fused multiply-adds (12 accumulators of 16 and of 8 floats, compiled with -O3 -march=native,
so AVX-512 where the CPU has it and AVX2 elsewhere) on one core and on every core at once,
and torch's best fp32 matrix product (2048 x 2048) on one thread; with AVX512_BF16, a loop
of bf16 dot products (vdpbf16ps) on one core too. Then, on one thread, at a
population's batch of 128 images, each timed and its arithmetic counted (GFLOP/s and the share
of one core's FMA peak): each convolution block the engine runs (kernels.conv_stack and
norm_stack, forward and backward); the dense layers' batched products (hidden and output, as
the population runs them per run of members); and a whole epoch (training steps, optimizer and
validation) of the peers' grid's members as one of a search's two workers trains them.

    python benchmarks/roofline.py [--seconds 0.5]
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench_cifar10 import cpu_kind
from deepnet import Member, PopulationEngine, TrainConfig, load_dataset, stratified_folds
from deepnet.engine import kernels
from deepnet.engine.allocator import keep_freed_memory
from deepnet.engine.population import affine

FMA_LOOP = r"""
#include <stdint.h>
#define LOOP(name, lanes)                                                              \
  typedef float name##_v __attribute__((vector_size(lanes * 4)));                      \
  float name(int64_t iterations) {                                                     \
    name##_v acc[12], m = (name##_v){} + 0.999999f, a = (name##_v){} + 1e-7f;          \
    for (int k = 0; k < 12; k++) acc[k] = (name##_v){} + (float)k;                     \
    for (int64_t i = 0; i < iterations; i++)                                           \
      for (int k = 0; k < 12; k++) acc[k] = acc[k] * m + a;                            \
    float s = 0;                                                                       \
    for (int k = 0; k < 12; k++)                                                       \
      for (int l = 0; l < lanes; l++) s += acc[k][l];                                  \
    return s;                                                                          \
  }
LOOP(fma16, 16)
LOOP(fma8, 8)
#ifdef __AVX512BF16__
#include <immintrin.h>
/* 12 chains of vdpbf16ps: 32 multiply-adds each (bf16 pairs into 16 float lanes) */
float dot_bf16(int64_t iterations) {
  __m512 acc[12];
  const __m512bh m = (__m512bh)_mm512_set1_epi16(0x3f80), a = (__m512bh)_mm512_set1_epi16(0x3380);
  for (int k = 0; k < 12; k++) acc[k] = _mm512_set1_ps((float)k);
  for (int64_t i = 0; i < iterations; i++)
    for (int k = 0; k < 12; k++) acc[k] = _mm512_dpbf16_ps(acc[k], m, a);
  float s = 0;
  for (int k = 0; k < 12; k++) s += _mm512_reduce_add_ps(acc[k]);
  return s;
}
#endif
"""
ACCUMULATORS = 12


def _fma_library() -> ctypes.CDLL:
    """The FMA loops, compiled for this CPU into a temporary folder (cached by source)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise SystemExit("no C compiler (cc or gcc): the peak loop cannot be built")
    folder = Path(tempfile.gettempdir()) / "deepnet-roofline"
    folder.mkdir(exist_ok=True)
    library = folder / f"fma-{hashlib.sha256(FMA_LOOP.encode()).hexdigest()[:12]}.so"
    if not library.is_file():
        source = folder / "fma.c"
        source.write_text(FMA_LOOP)
        flags = ["-O3", "-march=native", "-ffp-contract=fast", "-shared", "-fPIC"]
        subprocess.run([compiler, *flags, "-o", str(library), str(source)], check=True)
    loaded = ctypes.CDLL(str(library))
    for name in ("fma16", "fma8", "dot_bf16"):
        if hasattr(loaded, name):
            getattr(loaded, name).argtypes = [ctypes.c_int64]
            getattr(loaded, name).restype = ctypes.c_float
    return loaded


@dataclass(frozen=True)
class Peak:
    """Measured GFLOP/s: the fp32 FMA loop on one core and on all, torch's matmul on one,
    and the bf16 dot-product loop on one core where the CPU has AVX512_BF16 (else None)."""

    fma_one: float
    fma_all: float
    cores: int
    matmul_one: float
    bf16_one: float | None

    def lines(self) -> list[str]:
        lines = [
            f"fp32 peak, FMA loop: {self.fma_one:.0f} GFLOP/s on one core, "
            f"{self.fma_all:.0f} on all {self.cores} at once",
            f"torch fp32 matmul 2048x2048, one thread: {self.matmul_one:.0f} GFLOP/s "
            f"({self.matmul_one / self.fma_one:.0%} of the loop's peak)",
        ]
        if self.bf16_one:
            lines.append(f"bf16 peak, dot-product loop: {self.bf16_one:.0f} GFLOP/s on one core")
        return lines


def _fma_rate(seconds: float, threads: int, loops=(("fma16", 16), ("fma8", 8))) -> float:
    """GFLOP/s of ``threads`` copies of a loop running at once (ctypes lets go of the GIL),
    the best of ``loops`` (name, multiply-adds per accumulator and iteration)."""
    library = _fma_library()
    best = 0.0
    for name, lanes in loops:
        loop = getattr(library, name)
        iterations = 1 << 16
        while True:  # grow until one run takes a tenth of the time asked for
            start = time.perf_counter()
            loop(iterations)
            if time.perf_counter() - start > seconds / 10:
                break
            iterations *= 2
        iterations = int(iterations * 10)
        workers = [threading.Thread(target=loop, args=(iterations,)) for _ in range(threads)]
        start = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        elapsed = time.perf_counter() - start
        flops = threads * iterations * ACCUMULATORS * lanes * 2
        best = max(best, flops / elapsed / 1e9)
    return best


def _matmul_rate(seconds: float) -> float:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
        torch.mm(a, b)
        runs, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            torch.mm(a, b)
            runs += 1
        return runs * 2 * 2048**3 / (time.perf_counter() - start) / 1e9
    finally:
        torch.set_num_threads(before)


def measure_peak(seconds: float = 0.5) -> Peak:
    cores = os.cpu_count() or 1
    bf16 = None
    if hasattr(_fma_library(), "dot_bf16"):
        bf16 = _fma_rate(seconds, 1, (("dot_bf16", 32),))
    fma = _fma_rate(seconds, 1), _fma_rate(seconds, cores)
    return Peak(*fma, cores, _matmul_rate(seconds), bf16)


@dataclass(frozen=True)
class Block:
    """One conv-conv-pool block of a network the engine trains."""

    name: str
    channels: tuple[int, int, int]  # input, first conv's, second conv's
    size: int  # the input maps' side
    norm: bool = False

    def convolutions(self, images: int) -> tuple[float, float]:
        """Forward multiply-adds x 2 of the first convolution and of the second."""
        c0, c1, c2 = self.channels
        s = self.size
        return 2 * 9 * images * c0 * c1 * (s - 2) ** 2, 2 * 9 * images * c1 * c2 * (s - 4) ** 2

    def flops(self, images: int) -> tuple[float, float]:
        """(forward, backward) flops: the backward pass computes both convolutions' weight
        gradients and the second's input gradient, not the first's (the block's input, as
        in a first block, wants none)."""
        first, second = self.convolutions(images)
        return first + second, first + 2 * second


BLOCKS = (
    Block("seed: 1 -> 4 -> 8, 28x28", (1, 4, 8), 28),
    Block("default 1st: 1 -> 16 -> 32, 28x28", (1, 16, 32), 28),
    Block("default 2nd: 32 -> 32 -> 32, 12x12", (32, 32, 32), 12),
    Block("cifar 1st: 3 -> 32 -> 32, 32x32, norm", (3, 32, 32), 32, norm=True),
    Block("cifar 2nd: 32 -> 64 -> 64, 14x14, norm", (32, 64, 64), 14, norm=True),
)


def time_block(
    block: Block, members: int, images: int, seconds: float, bf16: bool = False
) -> tuple[float, float]:
    """Seconds per forward and per backward call of one block for ``members`` at once, on
    one thread (work counted as Block.flops counts it), with bf16 products or not. The
    backward pass reads the maps the forward pass kept (kernels.MAPS_KEPT)."""
    c0, c1, c2 = block.channels
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(members, c0, block.size, block.size, images, generator=generator)
    w1 = (torch.randn(members, c1, c0, 3, 3, generator=generator) * 0.1).requires_grad_()
    w2 = (torch.randn(members, c2, c1, 3, 3, generator=generator) * 0.1).requires_grad_()
    b1 = torch.zeros(members, c1, requires_grad=True)
    b2 = torch.zeros(members, c2, requires_grad=True)
    counts = torch.full((members,), images, dtype=torch.int32)

    def forward():
        if block.norm:
            be1, be2 = torch.zeros(members, c1), torch.zeros(members, c2)
            return kernels.norm_stack(x, w1, b1, be1, w2, b2, be2, "relu", counts, bf16)[0]
        return kernels.conv_stack(x, w1, b1, w2, b2, "relu", bf16)

    g = torch.ones_like(forward())
    forward_s = timed(forward, seconds)
    both_s = timed(lambda: torch.autograd.grad(forward(), (w1, b1, w2, b2), g), seconds)
    return forward_s, both_s - forward_s


@dataclass(frozen=True)
class Dense:
    """A network's hidden and output layers: ``features`` in, ``units`` hidden, 2 classes."""

    name: str
    features: int
    units: int
    classes: int = 2

    def flops(self, images: int) -> tuple[float, float]:
        """(forward, backward) flops: the backward pass computes each layer's weight gradient
        and its input's (the features' gradient goes on to the convolutions)."""
        forward = 2 * images * (self.features * self.units + self.units * self.classes)
        return forward, 2 * forward


DENSE = (
    Dense("seed, 25 units: 1152 -> 25 -> 2", 1152, 25),
    Dense("seed, 125 units: 1152 -> 125 -> 2", 1152, 125),
    Dense("default, 128 units: 512 -> 128 -> 2", 512, 128),
)


def timed(fn, seconds: float) -> float:
    """Seconds per call of ``fn``, after one call to warm it."""
    fn()
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        runs += 1
    return (time.perf_counter() - start) / runs


def time_dense(
    dense: Dense, members: int, images: int, seconds: float, bf16: bool = False
) -> tuple[float, float]:
    """Seconds per forward and per backward call of the hidden and output layers for
    ``members`` at once (one run: the same width and activation), as the population engine
    computes them: a batched product per layer, features (P, F, images), images innermost;
    the hidden layer's with bf16 products or not."""
    generator = torch.Generator().manual_seed(0)
    h = torch.rand(members, dense.features, images, generator=generator).requires_grad_()
    w1 = torch.randn(members, dense.units, dense.features, generator=generator) * 0.05
    b1 = torch.zeros(members, dense.units)
    w2 = torch.randn(members, dense.classes, dense.units, generator=generator) * 0.1
    b2 = torch.zeros(members, dense.classes)
    leaves = [t.requires_grad_() for t in (w1, b1, w2, b2)]

    def forward() -> torch.Tensor:
        return affine(w2, b2, torch.relu(affine(w1, b1, h, bf16)), False)

    g = torch.ones(members, dense.classes, images)
    forward_s = timed(forward, seconds)
    both_s = timed(lambda: torch.autograd.grad(forward(), (h, *leaves), g), seconds)
    return forward_s, both_s - forward_s


def epoch_rate(seconds_per_epoch: float, members: list[Member]) -> float:
    """GFLOP/s of an epoch of the seed's network for ``members``: each training image
    counted at its forward and backward flops, each validation image at its forward's."""
    seed = Block("seed", (1, 4, 8), 28)
    work = 0.0
    for member in members:
        conv_forward, conv_backward = seed.flops(1)
        dense_forward, dense_backward = Dense("", 1152, member.config.neurons).flops(1)
        train = conv_forward + conv_backward + dense_forward + dense_backward
        work += len(member.train_idx) * train + len(member.val_idx) * (conv_forward + dense_forward)
    return work / seconds_per_epoch / 1e9


def time_epoch(precision: str = "fp32") -> tuple[float, list[Member]]:
    """Seconds of a warm epoch (the second) of the README's grid's members as one of a
    search's two workers trains them: every other (optimizer, neurons, fold) of Adam, Nadam
    and RMSprop x 25 and 125 units x 3 folds, 9 members, MNIST 2 vs 7, one thread."""
    data = load_dataset("mnist", (2, 7))
    folds = stratified_folds(data.y_train, 3, 0)
    grid = [
        (optimizer, units, fold)
        for optimizer in ("Adam", "Nadam", "RMSprop")
        for units in (25, 125)
        for fold in range(3)
    ]
    members = []
    for i, (optimizer, units, fold) in enumerate(grid[::2]):
        config = TrainConfig(epochs=2, optimizer=optimizer, neurons=units, batch_size=128)
        train, val = folds[fold]
        members.append(Member(f"m{i}", config, np.asarray(train), np.asarray(val), i))
    training = PopulationEngine(max_members=len(members), precision=precision).train(
        data.x_train, data.y_train, data.n_classes, members
    )
    training.step()
    start = time.perf_counter()
    training.step()
    return time.perf_counter() - start, members


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="time per measurement")
    parser.add_argument("--members", type=int, default=4, help="members per block call")
    args = parser.parse_args()
    torch.set_num_threads(1)
    keep_freed_memory()  # as the engine runs: buffers are not mapped afresh every call
    print(f"CPU: {cpu_kind()}; torch {torch.__version__}")
    peak = measure_peak(args.seconds)
    for line in peak.lines():
        print(line)
    images = 128
    precisions = ("fp32", "bf16") if peak.bf16_one else ("fp32",)
    layers = (
        ("convolution blocks", "block", BLOCKS, time_block, "first convolutions: 2+ channels in"),
        ("dense layers", "layers", DENSE, time_dense, "the hidden layer's"),
    )
    for title, column, shapes, timer, which in layers:
        for precision in precisions:
            bf16 = precision == "bf16"
            print(
                f"\n{title}, {args.members} members x {images} images, one thread"
                + (f", bf16 products ({which}), of the bf16 peak:" if bf16 else ":")
            )
            print(f"{column:<42}{'pass':>9}{'ms':>9}{'GFLOP/s':>9}{'of peak':>9}")
            for shape in shapes:
                times = timer(shape, args.members, images, args.seconds, bf16)
                limit = peak.bf16_one if bf16 else peak.fma_one
                print_passes(shape.name, times, shape.flops(images * args.members), limit)
    print(
        "\na whole epoch of the README's grid's members as one of a search's two workers "
        "trains them (MNIST 2 vs 7, 3-fold: training, optimizer steps, validation), one thread:"
    )
    for precision in precisions:
        seconds, members = time_epoch(precision)
        rate = epoch_rate(seconds, members)
        limit = peak.bf16_one if precision == "bf16" else peak.fma_one
        print(
            f"{precision}: {len(members)} members, {seconds:.2f} s, {rate:.1f} GFLOP/s, "
            f"{rate / limit:.0%} of the {precision} peak"
        )


def print_passes(
    name: str, seconds: tuple[float, float], flops: tuple[float, float], peak: float
) -> None:
    """A layer's forward and backward lines: time, GFLOP/s and share of one core's ``peak``."""
    for pass_name, s, work in zip(("forward", "backward"), seconds, flops, strict=True):
        rate = work / s / 1e9
        print(f"{name:<42}{pass_name:>9}{s * 1e3:>9.2f}{rate:>9.1f}{rate / peak:>9.0%}")


if __name__ == "__main__":
    main()
