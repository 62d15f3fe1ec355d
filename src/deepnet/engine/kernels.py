"""The seed network's convolutions for a population, images innermost: (P, C, H, W, N) maps.

``conv_stack`` (conv, activation, conv, pooling, activation) runs the C loops of kernels.c,
compiled at first use with the machine's C compiler (``cc -O3 -march=native``) into the
cache directory and loaded with ctypes. Grouped convolutions with 4-16 channels per group
are a poor fit for oneDNN's vector blocking; these loops keep a block of channels in
registers and stream the images, and run the whole stack a member at a time so that its
maps stay in cache. Where no compiler is found the same function runs as grouped torch
convolutions, slower but with the same results; ``native()`` says which is in use.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.autograd import Function

from deepnet.nn.activations import ACTIVATIONS
from deepnet.nn.network import pool_activate

SOURCE = Path(__file__).with_name("kernels.c")
FLAGS = ("-O3", "-march=native", "-shared", "-fPIC")
LANES = 16  # floats per vector in kernels.c: the image count must be a multiple of it

_INT = ctypes.c_int
_PTR = ctypes.c_void_p
_SIGNATURES = {
    "stack_forward": [_PTR] * 5 + [_INT] + [_PTR] * 3 + [_INT] * 7,
    "stack_backward": [_PTR] * 8 + [_INT] + [_PTR] * 5 + [_INT] * 7,
    "gather_images": [_PTR] * 3 + [_INT] * 3,
    "dropout_scales": [_PTR] * 6 + [_INT] * 3,
}
# kernels.c's codes for the activations it computes in its loops
ACTIVATION_CODES = {
    "linear": 0,
    "relu": 1,
    "tanh": 2,
    "sigmoid": 3,
    "hard_sigmoid": 4,
    "softsign": 5,
    "softplus": 6,
    "softmax": 7,
}


def _cpu_id() -> str:
    """What -march=native compiles for: the same source is rebuilt on another CPU."""
    try:
        flags = next(
            line
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("flags")
        )
    except (OSError, StopIteration):
        flags = ""
    return f"{platform.machine()} {platform.processor()} {flags}"


def _build_dir() -> Path:
    from deepnet.data import cache_dir

    return cache_dir() / "kernels"


@functools.cache
def _library() -> ctypes.CDLL | None:
    """The compiled kernels, built once per source, CPU and compiler; None if impossible."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        warnings.warn(
            "no C compiler found (cc or gcc): the population engine uses torch's grouped "
            "convolutions, several times slower. Install gcc to speed it up.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    key = hashlib.sha256(SOURCE.read_bytes() + f"{compiler} {FLAGS} {_cpu_id()}".encode())
    name = f"deepnet-kernels-{key.hexdigest()[:16]}.so"
    for folder in (_build_dir(), Path(tempfile.gettempdir()) / "deepnet-kernels"):
        target = folder / name
        try:
            if not target.is_file():
                folder.mkdir(parents=True, exist_ok=True)
                partial = folder / f"{name}.{os.getpid()}.tmp"
                subprocess.run(
                    [compiler, *FLAGS, "-o", str(partial), str(SOURCE)],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                os.replace(partial, target)  # atomic: a concurrent build never sees half a file
            library = ctypes.CDLL(str(target))
        except subprocess.CalledProcessError as exc:
            warnings.warn(
                f"compiling {SOURCE.name} failed ({exc.stderr.strip()[:300]}); the population "
                "engine uses torch's grouped convolutions instead, several times slower.",
                RuntimeWarning,
                stacklevel=3,
            )
            return None
        except OSError:
            continue  # an unwritable cache: try the temporary directory
        for function, types in _SIGNATURES.items():
            getattr(library, function).argtypes = types
        return library
    return None


def native() -> bool:
    """Whether the compiled kernels are in use (else the torch fallback)."""
    return _library() is not None


def _pointers(args: tuple) -> list:
    """Tensors as their data pointers, the rest as they are, for a C call."""
    return [a.data_ptr() if isinstance(a, torch.Tensor) else a for a in args]


class _NativeConvStack(Function):
    @staticmethod
    def forward(ctx, x, w1, b1, w2, b2, activation):
        p, c0, h, w, n = x.shape
        c1, c2 = w1.shape[1], w2.shape[1]
        out = torch.empty(p, c2, (h - 4) // 2, (w - 4) // 2, n)
        idx = torch.empty(out.shape, dtype=torch.int32)
        scratch = torch.empty(_scratch(c1, c2, h, w, n))
        code = ACTIVATION_CODES[activation]
        args = (x, w1, b1, w2, b2, code, out, idx, scratch)
        _library().stack_forward(*_pointers(args), p, c0, c1, c2, h, w, n)
        ctx.save_for_backward(x, w1, b1, w2, b2, idx, out)
        ctx.code = code
        return out

    @staticmethod
    def backward(ctx, g):
        x, w1, b1, w2, b2, idx, out = ctx.saved_tensors
        g = g.contiguous()  # held in a name: the C call must not see freed memory
        p, c0, h, w, n = x.shape
        c1, c2 = w1.shape[1], w2.shape[1]
        grads = torch.empty_like(w1), torch.empty(p, c1), torch.empty_like(w2), torch.empty(p, c2)
        scratch = torch.empty(2 * _scratch(c1, c2, h, w, n))
        args = (g, idx, out, x, w1, b1, w2, b2, ctx.code, *grads, scratch)
        _library().stack_backward(*_pointers(args), p, c0, c1, c2, h, w, n)
        return None, *grads, None


def _scratch(c1: int, c2: int, h: int, w: int, n: int) -> int:
    """Floats of one member's maps, both layers: stack_forward's scratch, half of backward's."""
    return (c1 * (h - 2) * (w - 2) + c2 * (h - 4) * (w - 4)) * n


def _to_nchw(x: torch.Tensor) -> torch.Tensor:
    """(P, C, H, W, N) -> (N, P*C, H, W), members on the channel axis."""
    p, c, h, w, n = x.shape
    return x.permute(4, 0, 1, 2, 3).reshape(n, p * c, h, w)


def _from_nchw(x: torch.Tensor, p: int) -> torch.Tensor:
    n, pc, h, w = x.shape
    return x.view(n, p, pc // p, h, w).permute(1, 2, 3, 4, 0).contiguous()


def _conv3x3_torch(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Each member's 3x3 valid convolution, as one grouped torch convolution."""
    p, co, ci = w.shape[:3]
    out = torch.conv2d(_to_nchw(x), w.reshape(p * co, ci, 3, 3), b.reshape(-1), groups=p)
    return _from_nchw(out, p)


def _max_pool2x2_torch(x: torch.Tensor) -> torch.Tensor:
    """Each member's 2x2 max pooling, through torch's max_pool2d."""
    return _from_nchw(torch.max_pool2d(_to_nchw(x), 2), x.shape[0])


def conv_stack_torch(
    x: torch.Tensor,
    w1: torch.Tensor,
    b1: torch.Tensor,
    w2: torch.Tensor,
    b2: torch.Tensor,
    activation: str,
) -> torch.Tensor:
    """conv_stack from torch operations (the fallback, and the tests' reference)."""
    h = ACTIVATIONS[activation](_conv3x3_torch(x, w1, b1))
    return pool_activate(_conv3x3_torch(h, w2, b2), activation, _max_pool2x2_torch)


def conv_stack(
    x: torch.Tensor,
    w1: torch.Tensor,
    b1: torch.Tensor,
    w2: torch.Tensor,
    b2: torch.Tensor,
    activation: str,
) -> torch.Tensor:
    """SeedNet's convolutions for each member: x (P, C0, H, W, N) images, w1 (P, C1, C0, 3, 3),
    b1 (P, C1), w2 (P, C2, C1, 3, 3), b2 (P, C2) -> (P, C2, (H-4)//2, (W-4)//2, N), which is
    pool_activate(conv(activation(conv(x, w1, b1)), w2, b2), activation); N a multiple of LANES.

    A member at a time, elementwise activations run inside the convolution loops and the
    second convolution is pooled as it is computed (softmax, which mixes channels, gets
    passes of its own); the backward pass recomputes the maps into scratch space that stays
    in cache, so only the images, the pooled output and the winners' positions are stored
    for the whole population. x gets no gradient (images need none).
    """
    if not native():
        return conv_stack_torch(x, w1, b1, w2, b2, activation)
    tensors = (t.contiguous() for t in (x, w1, b1, w2, b2))
    return _NativeConvStack.apply(*tensors, activation)


def gather_images(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """conv_stack's input (P, 1, H, W, N) from images x (M, H, W): member p's images
    ``index[p]`` (N a multiple of LANES)."""
    if not native():
        return x[index].permute(0, 2, 3, 1).unsqueeze(1).contiguous()
    (p, n), (_, h, w) = index.shape, x.shape
    x, index = x.contiguous(), index.contiguous()  # held in names: the C call reads them
    out = torch.empty(p, 1, h, w, n)
    _library().gather_images(*_pointers((out, x, index)), p, h * w, n)
    return out


def dropout_scales(
    keys: Sequence[int],
    rates: Sequence[float],
    counts: Sequence[int],
    features: Sequence[int],
    width: int,
    n: int,
) -> torch.Tensor:
    """Inverted-dropout multipliers (P, width, n), images innermost: member p's draw with
    64-bit key ``keys[p]`` drops each of its ``counts[p]`` x ``features[p]`` elements with
    probability ``rates[p]`` and scales the rest by 1 / (1 - rate); the rest of its rows
    and columns are 0. Element e = image * features + unit of a draw is a pure function of
    its key and e, so every layout gets the same masks (dropout_scales_numpy: the reference).
    """
    if not native():
        return dropout_scales_numpy(keys, rates, counts, features, width, n)
    out = torch.empty(len(keys), width, n)
    arrays = (
        np.asarray(keys, dtype=np.uint64),
        _thresholds(rates),
        _multipliers(rates),
        np.asarray(counts, dtype=np.int32),
        np.asarray(features, dtype=np.int32),
    )
    pointers = [a.ctypes.data for a in arrays]
    _library().dropout_scales(out.data_ptr(), *pointers, len(keys), width, n)
    return out


def dropout_scales_numpy(
    keys: Sequence[int],
    rates: Sequence[float],
    counts: Sequence[int],
    features: Sequence[int],
    width: int,
    n: int,
) -> torch.Tensor:
    """dropout_scales in numpy: the fallback without a compiler, and the tests' reference."""
    out = np.zeros((len(keys), width, n), dtype=np.float32)
    for p, (key, threshold, scale, count, f) in enumerate(
        zip(keys, _thresholds(rates), _multipliers(rates), counts, features, strict=True)
    ):
        lo, hi = np.uint32(key & 0xFFFFFFFF), np.uint32(key >> 32)
        unit, image = np.arange(f, dtype=np.uint32)[:, None], np.arange(count, dtype=np.uint32)
        e = image * np.uint32(f) + unit  # (f, count): element index of (image, unit)
        kept = _mix32(_mix32(e ^ lo) ^ hi) >= threshold
        out[p, :f, :count] = np.where(kept, scale, np.float32(0.0))
    return torch.from_numpy(out)


def _thresholds(rates: Sequence[float]) -> np.ndarray:
    """The 32-bit hash value below which an element is dropped, for each rate in [0, 1)."""
    return np.asarray([min(round(r * 2**32), 2**32 - 1) for r in rates], dtype=np.uint32)


def _multipliers(rates: Sequence[float]) -> np.ndarray:
    """What inverted dropout scales a kept element by, 1 / (1 - rate), as float32."""
    return np.asarray([1.0 / (1.0 - r) for r in rates], dtype=np.float32)


def _mix32(x: np.ndarray) -> np.ndarray:
    """kernels.c's mix32 (uint32 arithmetic wraps as C's does)."""
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x7FEB352D)
    x = x ^ (x >> np.uint32(15))
    x = x * np.uint32(0x846CA68B)
    return x ^ (x >> np.uint32(16))
