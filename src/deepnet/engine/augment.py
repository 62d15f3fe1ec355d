"""Data augmentation of training batches: a random affine transform per image, per member and
per epoch, sampled bilinearly inside the image gather.

A member's transforms are a pure function of (its seed, its own epoch, an image's position in
that epoch's order), as its dropout masks are of their keys: a member in a population draws
what it draws alone, and a resumed member what it would have drawn, so checkpoints hold no
new state. Each image takes one uniform per component (shift x, shift y, rotation, scale,
flip), a SplitMix64 hash of that triple and the component's number, so switching one
component on never moves another's draws. ``gather_augmented`` resamples in augment.c (the
kernels' library), reading uint8 or float32 images as ``gather_images`` does; without a
compiler the same arithmetic runs in torch (``gather_augmented_torch``, also the tests'
reference). Validation, evaluation and prediction never augment.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from deepnet.config import TrainConfig
from deepnet.engine.kernels import (
    LANES,
    Scratch,
    Whole,
    call_by_members,
    checked_images,
    expect,
    gather_images,
    native_for,
)
from deepnet.engine.member import Member
from deepnet.errors import ConfigError

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_SALT = 0x6A09E667F3BCC908  # sets a seed's augmentation stream apart from its dropout stream
_MASK = 2**64 - 1
_COMPONENTS = 5  # uniforms per image: shift x, shift y, rotation, scale, flip
_C_INT = 2**31


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's output for uint64 states ``x`` (arrays: their arithmetic wraps silently)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def uniforms(seed: int, epoch: int, start: int, n: int) -> np.ndarray:
    """(5, n) float64 uniforms in [0, 1): each component of the images at positions
    ``start`` .. ``start + n - 1`` of the member's epoch ``epoch`` order."""
    key = _splitmix64(np.array([(seed ^ _SALT) & _MASK], dtype=np.uint64))
    key = _splitmix64(key + np.array([epoch], dtype=np.uint64) * _GOLDEN)
    positions = np.arange(start, start + n, dtype=np.uint64)
    counters = (
        positions * np.uint64(_COMPONENTS) + np.arange(1, _COMPONENTS + 1, dtype=np.uint64)[:, None]
    )
    bits = _splitmix64(key + counters * _GOLDEN) >> np.uint64(11)
    return bits.astype(np.float64) * 2.0**-53


@dataclass(frozen=True)
class Augmentation:
    """How far a member's training images are moved: shift up to ``shift`` pixels each way,
    rotation up to ``rotate`` degrees about the centre, scale by a factor in [1 - scale,
    1 + scale], a horizontal flip with probability 1/2 when ``flip``."""

    shift: int = 0
    rotate: float = 0.0
    scale: float = 0.0
    flip: bool = False

    @classmethod
    def of(cls, config: TrainConfig) -> Augmentation:
        return cls(
            config.augment_shift, config.augment_rotate, config.augment_scale, config.augment_flip
        )

    @property
    def active(self) -> bool:
        return bool(self.shift or self.rotate or self.scale or self.flip)

    def check(self, height: int, width: int) -> None:
        """ConfigError if a shift could move most of a ``height`` x ``width`` image out of
        view (more than half its shorter side)."""
        limit = min(height, width) // 2
        if self.shift > limit:
            raise ConfigError(
                f"augment_shift={self.shift} could move {height}x{width} images more than half "
                f"their side out of view; use augment_shift={limit} or less"
            )

    def affine(self, u: np.ndarray, height: int, width: int) -> np.ndarray:
        """(6, n) float32 maps from an output pixel (y, x) to its source point, sx = a0 x +
        a1 y + a2 and sy = a3 x + a4 y + a5, from ``uniforms`` ``u`` (5, n): the inverse of
        flip, then scale and rotation about the centre, then shift."""
        u = 2.0 * u - 1.0  # in [-1, 1)
        dx, dy = u[0] * self.shift, u[1] * self.shift
        angle = np.radians(u[2] * self.rotate)
        factor = 1.0 + u[3] * self.scale
        mirror = np.where(self.flip & (u[4] < 0.0), -1.0, 1.0)
        cos, sin = np.cos(angle) / factor, np.sin(angle) / factor
        cx, cy = (width - 1) / 2, (height - 1) / 2
        ux, uy = cx + dx, cy + dy
        rows = (
            mirror * cos,
            mirror * sin,
            cx - mirror * (cos * ux + sin * uy),
            -sin,
            cos,
            cy + sin * ux - cos * uy,
        )
        return np.stack(rows).astype(np.float32)


@dataclass(frozen=True)
class AugmentStream:
    """A member's transforms: its Augmentation, drawn from its seed's counter-based stream."""

    augmentation: Augmentation
    seed: int

    @classmethod
    def of(cls, member: Member) -> AugmentStream:
        return cls(Augmentation.of(member.config), member.seed)

    @property
    def active(self) -> bool:
        return self.augmentation.active

    def transforms(
        self, epoch: int, start: int, n: int, height: int, width: int
    ) -> np.ndarray | None:
        """(6, n) affine maps of the images at positions ``start`` .. of its own epoch
        ``epoch`` (Augmentation.affine); None if it does not augment."""
        if not self.active:
            return None
        return self.augmentation.affine(uniforms(self.seed, epoch, start, n), height, width)


@dataclass(frozen=True)
class BatchTransforms:
    """One step's transforms for a population's P members of N images each."""

    affine: torch.Tensor  # (P, 6, N) float32, Augmentation.affine's maps per image
    augmented: torch.Tensor  # (P,) int32: 0 where a member's images are gathered as they are

    @classmethod
    def of(cls, drawn: Sequence[np.ndarray | None], n: int) -> BatchTransforms | None:
        """Each member's (6, k <= n) maps, or None where it does not augment; None if none
        does (the plain gather then does it all)."""
        if all(d is None for d in drawn):
            return None
        affine = torch.zeros(len(drawn), 6, n)
        for p, d in enumerate(drawn):
            if d is not None:
                affine[p, :, : d.shape[1]] = torch.from_numpy(d)
        augmented = torch.tensor([d is not None for d in drawn], dtype=torch.int32)
        return cls(affine, augmented)

    def to(self, device: torch.device) -> BatchTransforms:
        """These transforms on ``device``."""
        return BatchTransforms(self.affine.to(device), self.augmented.to(device))


def gather_augmented(
    x: torch.Tensor, index: torch.Tensor, transforms: BatchTransforms
) -> torch.Tensor:
    """gather_images' (P, C, H, W, N) from images x (M, C, H, W) or (M, H, W), uint8 (scaled
    by 1/255) or float32, with each augmenting member's images resampled bilinearly through
    ``transforms`` (zero outside the image); the others' exactly as gather_images gives them."""
    fn = "gather_augmented"
    x = checked_images(fn, x, index)
    (c, h, w), (p, n), dtype = x.shape[1:], index.shape, x.dtype
    affine = expect(fn, "affine", transforms.affine, torch.float32, (p, 6, n))
    augmented = expect(fn, "augmented", transforms.augmented, torch.int32, (p,))
    if c * h * w >= _C_INT:
        raise ValueError(f"{fn}: images of {c}x{h}x{w} values are too large for the kernels")
    if not torch.isfinite(affine).all():
        raise ValueError(f"{fn}: affine must hold finite numbers")
    if not native_for(x):
        return gather_augmented_torch(x, index, transforms)
    x, index = x.contiguous(), index.contiguous()  # held in names: the C call reads them
    affine, augmented = affine.contiguous(), augmented.contiguous()
    out = torch.empty(p, c, h, w, n)
    row = 4 * math.ceil(w / LANES) * LANES  # a row's neighbours, whole vectors of them
    scratch = Scratch((n + 1) * c * h * w + row)  # resampled images, one image, a row
    offsets = Scratch(row, torch.int32)
    order = Whole(torch.arange(n))
    name = "gather_augmented_pixels" if dtype == torch.uint8 else fn
    args = (out, Whole(x), index, affine, augmented, scratch, offsets, order)
    call_by_members(name, args, p, c, h, w, n)
    return out


def gather_augmented_torch(
    x: torch.Tensor, index: torch.Tensor, transforms: BatchTransforms
) -> torch.Tensor:
    """gather_augmented from torch operations (the fallback, and the tests' reference)."""
    if x.ndim == 3:
        x = x.unsqueeze(1)
    out = gather_images(x, index)
    rows = transforms.augmented.nonzero().flatten()
    if len(rows):
        out[rows] = _resample(x, index[rows], transforms.affine[rows])
    return out


def _resample(x: torch.Tensor, index: torch.Tensor, affine: torch.Tensor) -> torch.Tensor:
    """Images ``index`` (R, N) of x (M, C, H, W) through ``affine`` (R, 6, N), as augment.c
    computes them, laid out (R, C, H, W, N)."""
    _, c, h, w = x.shape
    r, n = index.shape
    src = x[index].flatten(3)  # (R, N, C, H*W)
    if src.dtype == torch.uint8:
        src = src.to(torch.float32).div_(255.0)
    a = affine.transpose(1, 2)[..., None, None]  # (R, N, 6, 1, 1)
    xs = torch.arange(w, dtype=torch.float32, device=x.device)
    ys = torch.arange(h, dtype=torch.float32, device=x.device)[:, None]
    c0, c1, wc0, wc1 = _neighbours(a[:, :, 0] * xs + a[:, :, 1] * ys + a[:, :, 2], w)
    r0, r1, wr0, wr1 = _neighbours(a[:, :, 3] * xs + a[:, :, 4] * ys + a[:, :, 5], h)

    def at(row: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
        q = (row * w + col).flatten(2)[:, :, None].expand(r, n, c, h * w)
        return torch.gather(src, 3, q).view(r, n, c, h, w)

    top = wc0[:, :, None] * at(r0, c0) + wc1[:, :, None] * at(r0, c1)
    bottom = wc0[:, :, None] * at(r1, c0) + wc1[:, :, None] * at(r1, c1)
    return (wr0[:, :, None] * top + wr1[:, :, None] * bottom).permute(0, 2, 3, 4, 1)


def _neighbours(s: torch.Tensor, side: int) -> tuple[torch.Tensor, ...]:
    """A coordinate's two neighbours (clamped indices) and their weights (0 outside)."""
    s = s.clamp(-2.0, side + 1.0)
    t = s.floor()
    f = s - t
    t = t.to(torch.int64)
    zero = torch.zeros((), device=s.device)
    w0 = torch.where((t >= 0) & (t < side), 1.0 - f, zero)
    w1 = torch.where((t + 1 >= 0) & (t + 1 < side), f, zero)
    return t.clamp(0, side - 1), (t + 1).clamp(0, side - 1), w0, w1


def augment_images(x: torch.Tensor, batch: torch.Tensor, affine: np.ndarray) -> torch.Tensor:
    """Images ``batch`` (b,) of x (n, C, H, W) through ``affine`` (6, b), as (b, C, H, W):
    the sequential engine's batch, the numbers gather_augmented gives a population."""
    b = len(batch)
    n = math.ceil(b / LANES) * LANES
    index = torch.zeros(1, n, dtype=torch.int64)
    index[0, :b] = batch
    transforms = BatchTransforms.of([affine], n)
    return gather_augmented(x, index, transforms)[0].permute(3, 0, 1, 2)[:b].contiguous()
