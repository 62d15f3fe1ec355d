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
    "conv_pool_forward": [_PTR] * 3 + [_INT] + [_PTR] * 2 + [_INT] * 6,
    "conv_backward_input": [_PTR] * 3 + [_INT, _PTR] + [_INT] * 6,
    "conv_backward_weight": [_PTR] * 4 + [_INT] * 6,
    "pool_forward": [_PTR] * 3 + [_INT] * 4,
    "pool_backward": [_PTR] * 3 + [_INT, _PTR] + [_INT] * 4,
    "conv_pool_backward": [_PTR] * 3 + [_INT] + [_PTR] * 2 + [_INT] + [_PTR] * 4 + [_INT] * 6,
}
# the activations kernels.c computes inside its loops (derivatives from their outputs);
# conv_stack runs softplus through torch
ACTIVATION_CODES = {
    "linear": 0,
    "relu": 1,
    "tanh": 2,
    "sigmoid": 3,
    "hard_sigmoid": 4,
    "softsign": 5,
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


def _ptr(t: torch.Tensor) -> int:
    return t.data_ptr()


def _conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, activation: int) -> torch.Tensor:
    p, ci, h, w_, n = x.shape
    co = w.shape[1]
    out = torch.empty(p, co, h - 2, w_ - 2, n)
    _library().conv_forward(_ptr(x), _ptr(w), _ptr(b), activation, _ptr(out), p, ci, co, h, w_, n)
    return out


def _conv_backward(
    g: torch.Tensor, x: torch.Tensor, w: torch.Tensor, input_grad: bool
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """Gradients of x (if ``input_grad``), w and b from the output's gradient g."""
    lib = _library()
    p, ci, h, w_, n = x.shape
    co = w.shape[1]
    grad_x = None
    if input_grad:
        grad_x = torch.empty_like(x)
        lib.conv_backward_input(_ptr(g), _ptr(w), _ptr(x), 0, _ptr(grad_x), p, ci, co, h, w_, n)
    grad_w, grad_b = torch.empty_like(w), torch.empty(p, co)
    lib.conv_backward_weight(_ptr(g), _ptr(x), _ptr(grad_w), _ptr(grad_b), p, ci, co, h, w_, n)
    return grad_x, grad_w, grad_b


class _NativeConv(Function):
    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        return _conv(x, w, b, ACTIVATION_CODES["linear"])

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        g = g.contiguous()  # held in a name: the C call must not see freed memory
        return _conv_backward(g, x, w, ctx.needs_input_grad[0])


class _NativePool(Function):
    @staticmethod
    def forward(ctx, x):
        p, c, h, w, n = x.shape
        out = torch.empty(p, c, h // 2, w // 2, n)
        idx = torch.empty(out.shape, dtype=torch.int32)
        _library().pool_forward(_ptr(x), _ptr(out), _ptr(idx), p * c, h, w, n)
        ctx.save_for_backward(idx)
        return out

    @staticmethod
    def backward(ctx, g):
        (idx,) = ctx.saved_tensors
        g = g.contiguous()
        p, c, h, w, n = g.shape
        grad = torch.empty(p, c, 2 * h, 2 * w, n)
        linear = ACTIVATION_CODES["linear"]
        _library().pool_backward(_ptr(g), _ptr(idx), 0, linear, _ptr(grad), p * c, 2 * h, 2 * w, n)
        return grad


class _NativeConvStack(Function):
    """activation(pool(conv(activation(conv(x))))) for a coded activation; for another
    (softplus) the same without the last activation, which the caller applies."""

    @staticmethod
    def forward(ctx, x, w1, b1, w2, b2, activation):
        code = ACTIVATION_CODES.get(activation, ACTIVATION_CODES["linear"])
        h = _conv(x, w1, b1, code)
        if activation not in ACTIVATION_CODES:
            h = ACTIVATIONS[activation](h)
        p, ci, side, side_, n = h.shape
        co = w2.shape[1]
        out = torch.empty(p, co, (side - 2) // 2, (side_ - 2) // 2, n)
        idx = torch.empty(out.shape, dtype=torch.int32)
        _library().conv_pool_forward(
            _ptr(h), _ptr(w2), _ptr(b2), code, _ptr(out), _ptr(idx), p, ci, co, side, side_, n
        )
        ctx.save_for_backward(x, w1, h, w2, idx, out)
        ctx.activation, ctx.code = activation, code
        return out

    @staticmethod
    def backward(ctx, g):
        x, w1, h, w2, idx, out = ctx.saved_tensors
        g = g.contiguous()
        p, ci, side, side_, n = h.shape
        co = w2.shape[1]
        grad_h, grad_w2, grad_b2 = torch.empty_like(h), torch.empty_like(w2), torch.empty(p, co)
        scratch = torch.empty(co, side - 2, side_ - 2, n)
        _library().conv_pool_backward(
            *(_ptr(g), _ptr(idx), _ptr(out), ctx.code, _ptr(w2), _ptr(h), ctx.code),
            *map(_ptr, (grad_h, grad_w2, grad_b2, scratch)),
            *(p, ci, co, side, side_, n),
        )
        if ctx.activation == "softplus":  # softplus'(z) = 1 - exp(-softplus(z))
            grad_h *= -torch.expm1(-h)
        _, grad_w1, grad_b1 = _conv_backward(grad_h, x, w1, False)
        return None, grad_w1, grad_b1, grad_w2, grad_b2, None


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
    """activation(max_pool2x2(conv3x3(activation(conv3x3(x, w1, b1)), w2, b2))) in fused
    kernels: the activations run inside the convolution loops and their derivatives inside
    the gradient loops (softplus aside), the second convolution is pooled as it is computed,
    and its full-size gradient lives only in cache, a member at a time. ``activation`` is
    any of ACTIVATIONS but softmax, which mixes channels and does not commute with pooling
    (compose conv3x3 and max_pool2x2 for it); x has no gradient, as images have none.
    """
    if activation == "softmax":
        raise ValueError("conv_stack cannot fuse softmax; compose conv3x3 and max_pool2x2")
    if not native():
        return conv_stack_torch(x, w1, b1, w2, b2, activation)
    tensors = (t.contiguous() for t in (x, w1, b1, w2, b2))
    out = _NativeConvStack.apply(*tensors, activation)
    return out if activation in ACTIVATION_CODES else ACTIVATIONS[activation](out)
