"""Convolution and pooling for a population, images innermost: (P, C, H, W, N) maps.

``conv3x3`` and ``max_pool2x2`` run the C loops of kernels.c, compiled at first use with
the machine's C compiler (``cc -O3 -march=native``) into the cache directory and loaded
with ctypes. Grouped convolutions with 4-16 channels per group are a poor fit for oneDNN's
vector blocking; these loops keep a block of channels in registers and stream the images
(measured here: about 2.8x less time per member for the seed's second convolution). Where
no compiler is found the same functions run as grouped torch convolutions, slower but
with the same results; ``native()`` says which is in use.
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
from pathlib import Path

import torch
from torch.autograd import Function

from deepnet.nn.activations import ACTIVATIONS

SOURCE = Path(__file__).with_name("kernels.c")
FLAGS = ("-O3", "-march=native", "-shared", "-fPIC")
LANES = 16  # floats per vector in kernels.c: the image count must be a multiple of it

_INT = ctypes.c_int
_PTR = ctypes.c_void_p
_SIGNATURES = {
    "conv_forward": [_PTR] * 3 + [_INT, _PTR] + [_INT] * 6,
    "conv_backward_input": [_PTR] * 3 + [_INT, _PTR] + [_INT] * 6,
    "conv_backward_weight": [_PTR] * 4 + [_INT] * 6,
    "pool_forward": [_PTR] * 3 + [_INT] * 4,
    "pool_backward": [_PTR] * 3 + [_INT, _PTR] + [_INT] * 4,
    "stack_forward": [_PTR] * 5 + [_INT] + [_PTR] * 3 + [_INT] * 7,
    "stack_backward": [_PTR] * 7 + [_INT] + [_PTR] * 5 + [_INT] * 7,
}
# kernels.c's codes for the activations it computes inside its loops (derivatives from
# their outputs): every activation but softmax
ACTIVATION_CODES = {
    "linear": 0,
    "relu": 1,
    "tanh": 2,
    "sigmoid": 3,
    "hard_sigmoid": 4,
    "softsign": 5,
    "softplus": 6,
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
            "convolutions, about 2x slower. Install gcc to speed it up.",
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
                "engine uses torch's grouped convolutions instead, about 2x slower.",
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


class _NativeConv(Function):
    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        p, ci, h, w_, n = x.shape
        co = w.shape[1]
        out = torch.empty(p, co, h - 2, w_ - 2, n)
        linear = ACTIVATION_CODES["linear"]
        _library().conv_forward(*_pointers((x, w, b, linear, out)), p, ci, co, h, w_, n)
        return out

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        g = g.contiguous()  # held in a name: the C call must not see freed memory
        p, ci, h, w_, n = x.shape
        co = w.shape[1]
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.empty_like(x)
            args = (g, w, x, ACTIVATION_CODES["linear"], grad_x)
            _library().conv_backward_input(*_pointers(args), p, ci, co, h, w_, n)
        grad_w, grad_b = torch.empty_like(w), torch.empty(p, co)
        args = (g, x, grad_w, grad_b)
        _library().conv_backward_weight(*_pointers(args), p, ci, co, h, w_, n)
        return grad_x, grad_w, grad_b


class _NativePool(Function):
    @staticmethod
    def forward(ctx, x):
        p, c, h, w, n = x.shape
        out = torch.empty(p, c, h // 2, w // 2, n)
        idx = torch.empty(out.shape, dtype=torch.int32)
        _library().pool_forward(*_pointers((x, out, idx)), p * c, h, w, n)
        ctx.save_for_backward(idx)
        return out

    @staticmethod
    def backward(ctx, g):
        (idx,) = ctx.saved_tensors
        g = g.contiguous()
        p, c, h, w, n = g.shape
        grad = torch.empty(p, c, 2 * h, 2 * w, n)
        args = (g, idx, None, ACTIVATION_CODES["linear"], grad)  # linear: no output to read
        _library().pool_backward(*_pointers(args), p * c, 2 * h, 2 * w, n)
        return grad


class _NativeConvStack(Function):
    @staticmethod
    def forward(ctx, x, w1, b1, w2, b2, activation):
        p, c0, h, w, n = x.shape
        c1, c2 = w1.shape[1], w2.shape[1]
        out = torch.empty(p, c2, (h - 4) // 2, (w - 4) // 2, n)
        idx = torch.empty(out.shape, dtype=torch.int32)
        scratch = torch.empty(c1, h - 2, w - 2, n)
        code = ACTIVATION_CODES[activation]
        args = (x, w1, b1, w2, b2, code, out, idx, scratch)
        _library().stack_forward(*_pointers(args), p, c0, c1, c2, h, w, n)
        ctx.save_for_backward(x, w1, b1, w2, idx, out)
        ctx.code = code
        return out

    @staticmethod
    def backward(ctx, g):
        x, w1, b1, w2, idx, out = ctx.saved_tensors
        g = g.contiguous()
        p, c0, h, w, n = x.shape
        c1, c2 = w1.shape[1], w2.shape[1]
        grads = torch.empty_like(w1), torch.empty(p, c1), torch.empty_like(w2), torch.empty(p, c2)
        scratch = torch.empty((2 * c1 * (h - 2) * (w - 2) + c2 * (h - 4) * (w - 4)) * n)
        args = (g, idx, out, x, w1, b1, w2, ctx.code, *grads, scratch)
        _library().stack_backward(*_pointers(args), p, c0, c1, c2, h, w, n)
        return None, *grads, None


def _to_nchw(x: torch.Tensor) -> torch.Tensor:
    """(P, C, H, W, N) -> (N, P*C, H, W), members on the channel axis."""
    p, c, h, w, n = x.shape
    return x.permute(4, 0, 1, 2, 3).reshape(n, p * c, h, w)


def _from_nchw(x: torch.Tensor, p: int) -> torch.Tensor:
    n, pc, h, w = x.shape
    return x.view(n, p, pc // p, h, w).permute(1, 2, 3, 4, 0).contiguous()


def conv3x3_torch(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """conv3x3 as one grouped torch convolution (the fallback, and the tests' reference)."""
    p, co, ci = w.shape[:3]
    out = torch.conv2d(_to_nchw(x), w.reshape(p * co, ci, 3, 3), b.reshape(-1), groups=p)
    return _from_nchw(out, p)


def max_pool2x2_torch(x: torch.Tensor) -> torch.Tensor:
    """max_pool2x2 through torch's max_pool2d (the fallback, and the tests' reference)."""
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
    act = ACTIVATIONS[activation]
    return act(max_pool2x2_torch(conv3x3_torch(act(conv3x3_torch(x, w1, b1)), w2, b2)))


def conv3x3(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Each member's 3x3 valid convolution: x (P, Ci, H, W, N), w (P, Co, Ci, 3, 3), b (P, Co)
    -> (P, Co, H-2, W-2, N). N must be a multiple of LANES."""
    if not native():
        return conv3x3_torch(x, w, b)
    return _NativeConv.apply(x.contiguous(), w.contiguous(), b.contiguous())


def max_pool2x2(x: torch.Tensor) -> torch.Tensor:
    """2x2 max pooling of (P, C, H, W, N) maps -> (P, C, H//2, W//2, N)."""
    if not native():
        return max_pool2x2_torch(x)
    return _NativePool.apply(x.contiguous())


def conv_stack(
    x: torch.Tensor,
    w1: torch.Tensor,
    b1: torch.Tensor,
    w2: torch.Tensor,
    b2: torch.Tensor,
    activation: str,
) -> torch.Tensor:
    """activation(max_pool2x2(conv3x3(activation(conv3x3(x, w1, b1)), w2, b2))), fused.

    A member at a time, the activations run inside the convolution loops and the second
    convolution is pooled as it is computed; the backward pass recomputes the first maps
    and unpools the gradient into scratch space that stays in cache, so nothing but the
    images, the pooled output and the winners' positions is ever stored for all members.
    ``activation`` is any of ACTIVATIONS but softmax, which mixes channels and does not
    commute with pooling (compose conv3x3 and max_pool2x2 for it). x has no gradient.
    """
    if activation == "softmax":
        raise ValueError("conv_stack cannot fuse softmax; compose conv3x3 and max_pool2x2")
    if not native():
        return conv_stack_torch(x, w1, b1, w2, b2, activation)
    tensors = (t.contiguous() for t in (x, w1, b1, w2, b2))
    return _NativeConvStack.apply(*tensors, activation)
