"""The seed network's convolutions for a population, images innermost: (P, C, H, W, N) maps.

``conv_stack`` (conv, activation, conv, pooling, activation: one block) and ``norm_stack``
(the same with a batch norm after each convolution; ``norm_stack_eval`` at evaluation) run
the C loops of kernels.c, compiled at first use with the machine's C compiler (``cc -O3
-march=native``, or for $DEEPNET_MARCH's CPU) into the cache directory and loaded with
ctypes; deeper networks chain them, a block's input gradient passed back to the block
before. Grouped convolutions with 4-16 channels per group are a poor fit for oneDNN's
vector blocking; these loops keep a block of channels in registers and stream the images,
and run the whole stack a member at a time so that its maps stay in cache. Where the CPU
has AVX512_BF16, the stacks can take their convolutions' products from bf16 operands
(``bf16_products()``; their ``bf16`` argument). ``gather_images`` lays out each member's
batch for it, from float32 images or from uint8 pixels that it scales as it reads them.
Where no compiler is found the same functions run as grouped torch convolutions and
indexing, slower but with the same results; ``native()`` says which is in use. Tensors on
a GPU take that torch path there (``native_for``: the C loops only ever see CPU memory).
Every entry point checks dtypes, shapes and index bounds before C sees a pointer, and
``call`` refuses strided memory: no argument Python passes makes C read past a buffer."""

from __future__ import annotations

import ctypes
import functools
import hashlib
import itertools
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.autograd import Function

from deepnet.nn.activations import ACTIVATIONS
from deepnet.nn.functional import BN_EPSILON
from deepnet.nn.network import pool_activate

SOURCES = tuple(sorted(Path(__file__).parent.glob("*.c")))  # compiled into one library


def sources_digest() -> bytes:
    """The C sources' bytes, in order: what a build is keyed by."""
    return b"".join(path.name.encode() + path.read_bytes() for path in SOURCES)


MARCH = "DEEPNET_MARCH"  # the CPU the kernels are built for: -march=$DEEPNET_MARCH, else native


def flags() -> tuple[str, ...]:
    """The compiler's flags: for this CPU (-march=native), or the one $DEEPNET_MARCH names
    (x86-64-v3: AVX2 without AVX-512, as older machines have it). No errno: vector sqrt."""
    march = os.environ.get(MARCH) or "native"
    return ("-O3", f"-march={march}", "-fno-math-errno", "-shared", "-fPIC")


LANES = 16  # floats per vector in kernels.c: the image count must be a multiple of it
_MIN_SIDE = 6  # kernels.c's two valid 3x3 convolutions and 2x2 pooling leave a pixel

_TYPES = {"p": ctypes.c_void_p, "i": ctypes.c_int}


def _arguments(spec: str) -> list[type]:
    """A C function's argument types from runs of pointers and ints: "5p 2i" is five
    pointers, then two ints; a stack kernel's end with its thread's rank and team ("i p")."""
    return [_TYPES[run[-1]] for run in spec.split() for _ in range(int(run[:-1] or 1))]


_SIGNATURES = {
    "stack_forward": _arguments("5p 2i 3p i 3p 7i i p"),
    "stack_backward": _arguments("2p i 7p 2i 7p 7i i p"),
    "stack_scratch": _arguments("9i"),
    "bf16_products": [],
    "norm_stack_forward": _arguments("7p 2i 8p i 3p 7i i p"),
    "norm_stack_backward": _arguments("2p i 9p 2i 14p 7i i p"),
    "team_bytes": [],
    "team_init": _arguments("p i"),
    "team_destroy": _arguments("p"),
    "gather_images": _arguments("3p 3i"),
    "gather_pixels": _arguments("3p 3i"),
    "dropout_scales": _arguments("6p 3i"),
    "optimizer_step": _arguments("6p 3i"),  # optimizers.c
    "gather_augmented": _arguments("8p 5i"),  # augment.c
    "gather_augmented_pixels": _arguments("8p 5i"),
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
SOFTMAX = ACTIVATION_CODES["softmax"]


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
    build = flags()
    key = hashlib.sha256(sources_digest() + f"{compiler} {build} {_cpu_id()}".encode())
    name = f"deepnet-kernels-{key.hexdigest()[:16]}.so"
    for folder in (_build_dir(), Path(tempfile.gettempdir()) / "deepnet-kernels"):
        target = folder / name
        try:
            if not target.is_file():
                folder.mkdir(parents=True, exist_ok=True)
                partial = folder / f"{name}.{os.getpid()}.tmp"
                subprocess.run(
                    [compiler, *build, "-o", str(partial), *map(str, SOURCES)],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                os.replace(partial, target)  # atomic: a concurrent build never sees half a file
            library = ctypes.CDLL(str(target))
        except subprocess.CalledProcessError as exc:
            warnings.warn(
                f"compiling {', '.join(p.name for p in SOURCES)} failed "
                f"({exc.stderr.strip()[:300]}); the population engine uses torch's grouped "
                "convolutions instead, several times slower.",
                RuntimeWarning,
                stacklevel=3,
            )
            return None
        except OSError:
            continue  # an unwritable cache: try the temporary directory
        for function, types in _SIGNATURES.items():
            getattr(library, function).argtypes = types
        library.stack_scratch.restype = ctypes.c_int64
        return library
    return None


def native() -> bool:
    """Whether the compiled kernels are in use (else the torch fallback)."""
    return _library() is not None


def bf16_products() -> bool:
    """Whether the compiled kernels have bf16 products (the CPU has AVX512_BF16)."""
    return native() and bool(call("bf16_products"))


def native_for(t: torch.Tensor) -> bool:
    """Whether the compiled kernels compute on ``t``: CPU memory, where they are built.
    Tensors on another device (a GPU) take the torch path there."""
    return t.device.type == "cpu" and native()


_C_INT = range(-(2**31), 2**31)


def call(function: str, *args: torch.Tensor | np.ndarray | ctypes.Array | int | None) -> int:
    """kernels.c's ``function`` on tensors and arrays (as their data pointers), ctypes buffers
    and ints; what it returns.

    The last guard before C: every buffer must be contiguous CPU memory and every int a C
    int; the callers have checked dtypes, shapes and index bounds (``expect``)."""
    pointers = []
    for i, arg in enumerate(args):
        if arg is None:
            pointers.append(None)  # NULL: an output the caller does not want
        elif isinstance(arg, torch.Tensor):
            if arg.device.type != "cpu" or not arg.is_contiguous():
                raise ValueError(f"{function}: argument {i} must be a contiguous CPU tensor")
            pointers.append(arg.data_ptr())
        elif isinstance(arg, np.ndarray):
            if not arg.flags.c_contiguous:
                raise ValueError(f"{function}: argument {i} must be a contiguous array")
            pointers.append(arg.ctypes.data)
        elif isinstance(arg, ctypes.Array):
            pointers.append(ctypes.addressof(arg))
        elif arg not in _C_INT:
            raise ValueError(f"{function}: argument {i} is {arg}, outside a C int's range")
        else:
            pointers.append(arg)
    return getattr(_library(), function)(*pointers)


@dataclass(frozen=True)
class Whole:
    """An argument of call_by_members that every run of members reads whole (not sliced)."""

    tensor: torch.Tensor


@dataclass(frozen=True)
class Scratch:
    """An argument of call_by_members made anew for each run: a buffer of ``size`` values."""

    size: int
    dtype: torch.dtype = torch.float32


def call_by_members(
    function: str,
    args: Sequence[torch.Tensor | Whole | Scratch | int | None],
    p: int,
    *sizes: int,
    teams: bool = False,
) -> None:
    """A per-member kernel over members 0..p-1: ``function(*args, p, *sizes)``, split into
    runs of members called at once from up to torch.get_num_threads() threads (ctypes lets
    go of the GIL while C runs). A tensor in ``args`` is indexed by member first and is
    sliced to the run; a Whole passes whole, a Scratch is a fresh buffer per run, ints and
    None pass as they are. Members never read each other's memory, so the result is the
    same bit for bit whatever the number of threads.

    ``teams`` (the stack kernels, which take a thread's rank and its team last): the members
    left over when the threads do not divide them evenly train one at a time, each shared by
    a team of threads that split every pass's channels (the same bits again), rather than
    leave threads idle."""
    for phase in _phases(p, torch.get_num_threads(), teams):
        others = [_thread_pool().submit(_call_run, function, args, run, sizes) for run in phase[1:]]
        _call_run(function, args, phase[0], sizes)
        for done in others:
            done.result()


@dataclass(frozen=True)
class ThreadRun:
    """Members first..end-1 of a call_by_members, called together by ``team`` threads
    (0: a kernel that takes no team)."""

    first: int
    end: int
    team: int = 0


def _phases(p: int, threads: int, teams: bool) -> list[list[ThreadRun]]:
    """call_by_members' runs, in phases that run one after another (the runs of a phase at
    once): runs of whole members, one per thread; with ``teams``, only as many members as the
    threads divide evenly, then the rest one each, the threads shared out among them."""
    threads = max(1, threads)
    if not teams:
        return [[ThreadRun(a, b) for a, b in _member_runs(p, min(p, threads))] or [ThreadRun(0, p)]]
    even = p - p % threads
    phases = [[ThreadRun(a, b, 1) for a, b in _member_runs(even, threads)]] if even else []
    left = p - even
    if left:
        shares = _member_runs(threads, left)  # threads cut into `left` teams
        phases.append([ThreadRun(even + i, even + i + 1, b - a) for i, (a, b) in enumerate(shares)])
    return phases or [[ThreadRun(0, 0, 1)]]


def _call_run(function: str, args: Sequence[object], run: ThreadRun, sizes: Sequence[int]) -> None:
    """``function`` on the members of ``run``, from a team of threads where it has one."""
    members = [*(_for_run(arg, run.first, run.end) for arg in args), run.end - run.first, *sizes]
    if run.team == 0:
        call(function, *members)
    elif run.team == 1:
        call(function, *members, 0, None)
    else:
        _team_call(function, members, run.team)


def _team_call(function: str, args: Sequence[object], size: int) -> None:
    """``function(*args, rank, team)`` from ``size`` threads at once, a team that waits at
    one barrier (fresh threads, not the pool's: every rank must run at the same time)."""
    team = ctypes.create_string_buffer(call("team_bytes"))
    if call("team_init", team, size):
        raise RuntimeError(f"{function}: could not make a barrier for {size} threads")
    try:
        helpers = [
            threading.Thread(target=call, args=(function, *args, rank, team))
            for rank in range(1, size)
        ]
        for helper in helpers:
            helper.start()
        call(function, *args, 0, team)
        for helper in helpers:
            helper.join()
    finally:
        call("team_destroy", team)


def _for_run(arg: torch.Tensor | Whole | Scratch | int | None, a: int, b: int) -> object:
    """What call_by_members passes for ``arg`` to the run of members a..b-1."""
    if isinstance(arg, torch.Tensor):
        return arg[a:b]
    if isinstance(arg, Whole):
        return arg.tensor
    if isinstance(arg, Scratch):
        return torch.empty(arg.size, dtype=arg.dtype)
    return arg


def _member_runs(p: int, threads: int) -> list[tuple[int, int]]:
    """``p`` members cut into ``threads`` contiguous runs of sizes that differ by at most 1."""
    threads = max(1, threads)
    edges = [p * i // threads for i in range(threads + 1)]
    return [(a, b) for a, b in itertools.pairwise(edges) if b > a]


@functools.cache
def _thread_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="kernels")


def expect(
    function: str, name: str, t: object, dtype: torch.dtype, shape: tuple[int | None, ...]
) -> torch.Tensor:
    """``t`` if it is a tensor of ``dtype`` and ``shape`` (None: any size), else a
    ValueError that names the function, the argument and what was wrong with it. Any device:
    ``call`` refuses all but CPU memory before C sees a pointer."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{function}: {name} must be a torch.Tensor, got {type(t).__name__}")
    want = "(" + ", ".join("*" if d is None else str(d) for d in shape) + ")"
    if t.ndim != len(shape) or any(
        d is not None and d != s for d, s in zip(shape, t.shape, strict=True)
    ):
        raise ValueError(f"{function}: {name} must have shape {want}, got {tuple(t.shape)}")
    if t.dtype != dtype:
        raise ValueError(f"{function}: {name} must be {dtype}, got {t.dtype}")
    return t


def _passed(out: torch.Tensor, scale: torch.Tensor | None, bf16_out: int) -> torch.Tensor | None:
    """Room for what a stack passes on where it is not its output itself: out * scale (its
    dropout), in bf16 where bf16_out."""
    if scale is None and not bf16_out:
        return None
    return torch.empty(out.shape, dtype=torch.bfloat16 if bf16_out else torch.float32)


class _NativeConvStack(Function):
    @staticmethod
    def forward(ctx, x, w1, b1, w2, b2, scale, activation, keep, bf16, bf16_out):
        p, c0, h, w, n = x.shape
        c1, c2 = w1.shape[1], w2.shape[1]
        out = torch.empty(p, c2, (h - 4) // 2, (w - 4) // 2, n)
        passed = _passed(out, scale, bf16_out)
        idx = torch.empty(out.shape, dtype=torch.int32)
        code = ACTIVATION_CODES[activation]
        # the first maps, and softmax's second maps (which a backward pass would recompute)
        kept = _maps_floats(c1, c2, h, w, n) if code == SOFTMAX else c1 * (h - 2) * (w - 2) * n
        maps = _kept_maps(keep, p, kept)
        scratch = Scratch(call("stack_scratch", c0, c1, c2, h, w, n, bf16, 0, 0))
        args = (x, w1, b1, w2, b2, code, bf16, scale, out, passed, bf16_out, idx, maps, scratch)
        call_by_members("stack_forward", args, p, c0, c1, c2, h, w, n, teams=True)
        ctx.save_for_backward(x, w1, b1, w2, b2, scale, idx, out, maps)
        ctx.code, ctx.bf16, ctx.bf16_out = code, bf16, bf16_out
        return out if passed is None else passed

    @staticmethod
    def backward(ctx, g):
        x, w1, b1, w2, b2, scale, idx, out, maps = ctx.saved_tensors
        g = _arriving("conv_stack", g, out, ctx.bf16_out)
        p, c0, h, w, n = x.shape
        c1, c2 = w1.shape[1], w2.shape[1]
        grads = torch.empty_like(w1), torch.empty(p, c1), torch.empty_like(w2), torch.empty(p, c2)
        gx = torch.empty_like(x) if ctx.needs_input_grad[0] else None
        scratch = Scratch(call("stack_scratch", c0, c1, c2, h, w, n, ctx.bf16, 0, 1))
        args = (g, scale, ctx.bf16_out, idx, out, x, w1, b1, w2, b2, ctx.code, ctx.bf16, maps)
        args = (*args, *grads, gx, scratch)
        call_by_members("stack_backward", args, p, c0, c1, c2, h, w, n, teams=True)
        return gx, *grads, None, None, None, None, None


def _arriving(fn: str, g: torch.Tensor, out: torch.Tensor, bf16_out: int) -> torch.Tensor:
    """The gradient a stack's backward pass receives, of what it passed on: out's shape, in
    bf16 where it passed bf16; contiguous, and held by the caller in a name, so that the C
    call never sees freed memory."""
    dtype = torch.bfloat16 if bf16_out else torch.float32
    return expect(fn, "gradient", g, dtype, tuple(out.shape)).contiguous()


MAPS_KEPT = 256 * 2**20  # bytes of maps a stack call keeps for its backward pass at most


def _kept_maps(keep: bool, p: int, floats: int) -> torch.Tensor | None:
    """Room for the maps of ``p`` members (``floats`` each) that a stack's backward pass
    would otherwise recompute, where it will run (``keep``) and they fit in MAPS_KEPT (a
    larger population's are recomputed: its memory stays that of the images and outputs);
    else None. Kept or recomputed, they are the same bits."""
    return torch.empty(p, floats) if keep and p * floats * 4 <= MAPS_KEPT else None


def _backward_follows(*tensors: torch.Tensor) -> bool:
    """Whether autograd will run a backward pass through an operation on ``tensors``."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _maps_floats(c1: int, c2: int, h: int, w: int, n: int) -> int:
    """Floats of one member's maps before pooling, both layers: what a norm stack keeps."""
    return (c1 * (h - 2) * (w - 2) + c2 * (h - 4) * (w - 4)) * n


def _to_nchw(x: torch.Tensor) -> torch.Tensor:
    """(P, C, H, W, N) -> (N, P*C, H, W), members on the channel axis."""
    p, c, h, w, n = x.shape
    return x.permute(4, 0, 1, 2, 3).reshape(n, p * c, h, w)


def _from_nchw(x: torch.Tensor, p: int) -> torch.Tensor:
    n, pc, h, w = x.shape
    return x.view(n, p, pc // p, h, w).permute(1, 2, 3, 4, 0).contiguous()


def _conv3x3_torch(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """Each member's 3x3 valid convolution, as one grouped torch convolution."""
    p, co, ci = w.shape[:3]
    bias = None if b is None else b.reshape(-1)
    out = torch.conv2d(_to_nchw(x), w.reshape(p * co, ci, 3, 3), bias, groups=p)
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
    bf16: bool = False,
    scale: torch.Tensor | None = None,
    bf16_out: bool = False,
) -> torch.Tensor:
    """SeedNet's convolutions for each member: x (P, C0, H, W, N) images, w1 (P, C1, C0, 3, 3),
    b1 (P, C1), w2 (P, C2, C1, 3, 3), b2 (P, C2) -> (P, C2, (H-4)//2, (W-4)//2, N), which is
    pool_activate(conv(activation(conv(x, w1, b1)), w2, b2), activation); N a multiple of LANES.

    A member at a time, elementwise activations run inside the convolution loops and the
    second convolution is pooled as it is computed (softmax, which mixes channels, gets
    passes of its own). The first maps are kept for the backward pass while a population's
    fit in MAPS_KEPT, and recomputed beyond it, so that a large population stores only the
    images, the pooled output and the winners' positions. x gets a gradient where it
    requires one (the input of a block after the first), else none (images need none).
    ``bf16``: the convolutions' products (forward and backward) take bf16 operands with
    float32 sums: the second's, and the first's for an input of two channels or more
    (``bf16_products()`` must hold). ``scale``: the dropout after the block, its multipliers
    (the output's shape), applied as the output is made. ``bf16_out``: the output rounded to
    bf16 as it is made, for a layer with bf16 products to read (its gradient comes back in
    bf16 too; ``bf16_products()`` must hold).
    """
    _check_stack(x, w1, b1, w2, b2, activation)
    _check_bf16("conv_stack", x, bf16 or bf16_out)
    scale = _checked_scale("conv_stack", scale, x, w2)
    if not native_for(x):
        return _passed_torch(conv_stack_torch(x, w1, b1, w2, b2, activation), scale)
    tensors = [t.contiguous() for t in (x, w1, b1, w2, b2)]
    keep = _backward_follows(*tensors)
    return _NativeConvStack.apply(*tensors, scale, activation, keep, int(bf16), int(bf16_out))


def _passed_torch(out: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    """What the torch path's stack passes on: out times its dropout's multipliers."""
    return out if scale is None else out * scale


def _checked_scale(
    fn: str, scale: torch.Tensor | None, x: torch.Tensor, w2: torch.Tensor
) -> torch.Tensor | None:
    """A block's dropout multipliers, contiguous, where given: (P, C2, (H-4)//2, (W-4)//2, N)
    float32, as the block's output."""
    if scale is None:
        return None
    p, _, h, w, n = x.shape
    shape = (p, w2.shape[1], (h - 4) // 2, (w - 4) // 2, n)
    return expect(fn, "scale", scale, torch.float32, shape).contiguous()


def _check_bf16(fn: str, x: torch.Tensor, bf16: bool) -> None:
    """bf16 products are asked for only where the compiled kernels have them."""
    if bf16 and not (native_for(x) and bf16_products()):
        raise ValueError(f"{fn}: bf16 products need the compiled kernels on AVX512_BF16")


def _check_stack(
    x: object,
    w1: object,
    b1: object,
    w2: object,
    b2: object,
    activation: str,
    fn: str = "conv_stack",
    biases: tuple[str, str] = ("b1", "b2"),
) -> None:
    """conv_stack's contract: shapes that agree, float32, N a multiple of LANES, maps that
    leave a pooled pixel, an activation kernels.c computes (b1, b2: a value per channel)."""
    f32 = torch.float32
    p, c0, h, w, n = expect(fn, "x", x, f32, (None,) * 5).shape
    if n % LANES:
        raise ValueError(f"{fn}: x must hold a multiple of {LANES} images (dim 4), got {n}")
    if min(h, w) < _MIN_SIDE:
        side = f"{_MIN_SIDE}x{_MIN_SIDE}"
        raise ValueError(f"{fn}: x's maps must be at least {side} (dims 2, 3), got {h}x{w}")
    c1 = expect(fn, "w1", w1, f32, (p, None, c0, 3, 3)).shape[1]
    expect(fn, biases[0], b1, f32, (p, c1))
    c2 = expect(fn, "w2", w2, f32, (p, None, c1, 3, 3)).shape[1]
    expect(fn, biases[1], b2, f32, (p, c2))
    if activation not in ACTIVATION_CODES:
        raise ValueError(
            f"{fn}: unknown activation {activation!r}; one of {sorted(ACTIVATION_CODES)}"
        )


# a block's batch norms' statistics: mean1, var1 (P, C1), mean2, var2 (P, C2)
Statistics = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


class _NativeNormStack(Function):
    @staticmethod
    def forward(ctx, x, w1, g1, be1, w2, g2, be2, scale, activation, counts, keep, bf16, bf16_out):
        p, c0, h, w, n = x.shape
        c1, c2 = w1.shape[1], w2.shape[1]
        out = torch.empty(p, c2, (h - 4) // 2, (w - 4) // 2, n)
        passed = _passed(out, scale, bf16_out)
        idx = torch.empty(out.shape, dtype=torch.int32)
        stats = torch.empty(p, c1), torch.empty(p, c1), torch.empty(p, c2), torch.empty(p, c2)
        code = ACTIVATION_CODES[activation]
        maps = _kept_maps(keep, p, _maps_floats(c1, c2, h, w, n))
        scratch = Scratch(call("stack_scratch", c0, c1, c2, h, w, n, bf16, 1, 0))
        args = (x, w1, g1, be1, w2, g2, be2, code, bf16, counts, scale, *stats, out, passed)
        args = (*args, bf16_out, idx, maps, scratch)
        call_by_members("norm_stack_forward", args, p, c0, c1, c2, h, w, n, teams=True)
        ctx.save_for_backward(x, w1, g1, be1, w2, g2, be2, counts, scale, *stats, idx, out, maps)
        ctx.code, ctx.bf16, ctx.bf16_out = code, bf16, bf16_out
        ctx.mark_non_differentiable(*stats)
        return out if passed is None else passed, *stats

    @staticmethod
    def backward(ctx, g, *_):
        x, w1, g1, be1, w2, g2, be2, counts, scale, *stats, idx, out, maps = ctx.saved_tensors
        g = _arriving("norm_stack", g, out, ctx.bf16_out)
        p, c0, h, w, n = x.shape
        c1, c2 = w1.shape[1], w2.shape[1]
        grads = (
            torch.empty_like(w1),
            torch.empty(p, c1),
            torch.empty(p, c1),
            torch.empty_like(w2),
            torch.empty(p, c2),
            torch.empty(p, c2),
        )
        gx = torch.empty_like(x) if ctx.needs_input_grad[0] else None
        scratch = Scratch(call("stack_scratch", c0, c1, c2, h, w, n, ctx.bf16, 1, 1))
        args = (g, scale, ctx.bf16_out, idx, out, x, w1, g1, be1, w2, g2, be2, ctx.code, ctx.bf16)
        args = (*args, counts, *stats, maps, *grads, gx, scratch)
        call_by_members("norm_stack_backward", args, p, c0, c1, c2, h, w, n, teams=True)
        return gx, *grads, None, None, None, None, None, None


def _norm_torch(
    z: torch.Tensor,
    gamma: torch.Tensor,
    beta: torch.Tensor,
    counts: torch.Tensor | None,
    running: tuple[torch.Tensor, torch.Tensor],
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """A batch norm of each member's maps z (P, C, H, W, N) over its first ``counts[p]``
    images (mean and biased variance), or by the moving averages ``running`` where counts is
    None; and the statistics it normalised by."""
    p, _, h, w, n = z.shape
    if counts is None:
        mean, var = running
    else:
        real = (torch.arange(n, device=z.device) < counts[:, None]).to(z.dtype).view(p, 1, 1, 1, n)
        size = (counts * h * w).to(z.dtype).view(p, 1)
        mean = (z * real).sum((2, 3, 4)) / size
        var = ((z - mean[..., None, None, None]) * real).square().sum((2, 3, 4)) / size
    scale = gamma * torch.rsqrt(var + BN_EPSILON)
    centred = z - mean[..., None, None, None]
    out = centred * scale[..., None, None, None] + beta[..., None, None, None]
    return out, (mean.detach(), var.detach())


def norm_stack_torch(
    x: torch.Tensor,
    w1: torch.Tensor,
    g1: torch.Tensor,
    be1: torch.Tensor,
    w2: torch.Tensor,
    g2: torch.Tensor,
    be2: torch.Tensor,
    activation: str,
    counts: torch.Tensor | None = None,
    running: Statistics | None = None,
) -> tuple[torch.Tensor, Statistics]:
    """norm_stack from torch operations (the fallback, and the tests' reference); the
    variances it returns are biased."""
    act, running = ACTIVATIONS[activation], running or ()
    first, s1 = _norm_torch(_conv3x3_torch(x, w1, None), g1, be1, counts, running[:2])
    second, s2 = _norm_torch(_conv3x3_torch(act(first), w2, None), g2, be2, counts, running[2:])
    return pool_activate(second, activation, _max_pool2x2_torch), (*s1, *s2)


def norm_stack(
    x: torch.Tensor,
    w1: torch.Tensor,
    g1: torch.Tensor,
    be1: torch.Tensor,
    w2: torch.Tensor,
    g2: torch.Tensor,
    be2: torch.Tensor,
    activation: str,
    counts: torch.Tensor,
    bf16: bool = False,
    scale: torch.Tensor | None = None,
    bf16_out: bool = False,
) -> tuple[torch.Tensor, Statistics]:
    """A batch-normalised block for each member, training: x (P, C0, H, W, N), kernels w1
    (P, C1, C0, 3, 3) and w2 (P, C2, C1, 3, 3) without biases, the norms' scales g1, g2 and
    shifts be1, be2 (P, C1) and (P, C2) -> pool_activate(norm2(conv(activation(norm1(conv(
    x, w1))), w2)), activation), (P, C2, (H-4)//2, (W-4)//2, N), as SeedNet's block computes
    it in training mode: each norm normalises by member p's batch statistics over its first
    ``counts[p]`` images (the rest are padding, which adds nothing to any gradient).

    Also returns the statistics for the moving averages: (mean1, var1, mean2, var2), the
    variances unbiased as torch's BatchNorm2d averages them. Like conv_stack, a member at a
    time, its convolutions' maps kept for backward up to MAPS_KEPT (recomputed beyond), and
    x gets a gradient where it requires one. ``bf16``, ``scale`` and ``bf16_out`` as
    conv_stack's.
    """
    p, _, h, w, n = _check_norm_stack(x, w1, g1, be1, w2, g2, be2, activation)
    _check_bf16("norm_stack", x, bf16 or bf16_out)
    scale = _checked_scale("norm_stack", scale, x, w2)
    counts = expect("norm_stack", "counts", counts, torch.int32, (p,))
    if p and not (int(counts.min()) > 0 and int(counts.max()) <= n):
        raise ValueError(f"norm_stack: counts must be in [1, {n}], got {counts.tolist()}")
    if native_for(x):
        tensors = [t.contiguous() for t in (x, w1, g1, be1, w2, g2, be2)]
        keep = _backward_follows(*tensors)
        args = (scale, activation, counts.contiguous(), keep, int(bf16), int(bf16_out))
        out, *stats = _NativeNormStack.apply(*tensors, *args)
    else:
        out, stats = norm_stack_torch(x, w1, g1, be1, w2, g2, be2, activation, counts)
        out = _passed_torch(out, scale)
    m1, v1, m2, v2 = stats
    images = counts.to(torch.float32)[:, None]
    first, second = images * (h - 2) * (w - 2), images * (h - 4) * (w - 4)
    return out, (m1, v1 * first / (first - 1), m2, v2 * second / (second - 1))


@torch.no_grad()
def norm_stack_eval(
    x: torch.Tensor,
    w1: torch.Tensor,
    g1: torch.Tensor,
    be1: torch.Tensor,
    w2: torch.Tensor,
    g2: torch.Tensor,
    be2: torch.Tensor,
    activation: str,
    running: Statistics,
    bf16: bool = False,
    bf16_out: bool = False,
) -> torch.Tensor:
    """norm_stack at evaluation: each norm normalises by the moving averages ``running``
    (mean1, var1 (P, C1), mean2, var2 (P, C2)), as SeedNet in eval mode; no gradients.
    ``bf16`` and ``bf16_out`` as conv_stack's."""
    p, c0, h, w, n = _check_norm_stack(x, w1, g1, be1, w2, g2, be2, activation)
    _check_bf16("norm_stack_eval", x, bf16 or bf16_out)
    c1, c2 = w1.shape[1], w2.shape[1]
    names, channels = ("mean1", "var1", "mean2", "var2"), (c1, c1, c2, c2)
    for name, t, c in zip(names, running, channels, strict=True):
        expect("norm_stack_eval", name, t, torch.float32, (p, c))
    if not native_for(x):
        return norm_stack_torch(x, w1, g1, be1, w2, g2, be2, activation, None, running)[0]
    tensors = [t.contiguous() for t in (x, w1, g1, be1, w2, g2, be2)]
    stats = [t.contiguous() for t in running]
    out = torch.empty(p, c2, (h - 4) // 2, (w - 4) // 2, n)
    passed = _passed(out, None, bf16_out)
    idx = torch.empty(out.shape, dtype=torch.int32)
    code = ACTIVATION_CODES[activation]
    scratch = Scratch(call("stack_scratch", c0, c1, c2, h, w, n, int(bf16), 1, 0))
    args = (*tensors, code, int(bf16), None, None, *stats, out, passed, int(bf16_out), idx)
    call_by_members(
        "norm_stack_forward", (*args, None, scratch), p, c0, c1, c2, h, w, n, teams=True
    )
    return out if passed is None else passed


def _check_norm_stack(
    x: object,
    w1: object,
    g1: object,
    be1: object,
    w2: object,
    g2: object,
    be2: object,
    activation: str,
) -> torch.Size:
    """norm_stack's contract, conv_stack's with a scale and a shift per channel for biases."""
    _check_stack(x, w1, g1, w2, g2, activation, "norm_stack", ("g1", "g2"))
    p, c1, c2 = x.shape[0], w1.shape[1], w2.shape[1]
    expect("norm_stack", "be1", be1, torch.float32, (p, c1))
    expect("norm_stack", "be2", be2, torch.float32, (p, c2))
    return x.shape


def gather_images(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """conv_stack's input (P, C, H, W, N) from images x (M, C, H, W), or (M, H, W) as C = 1:
    member p's images ``index[p]`` (N a multiple of LANES, every index in [0, M)). x is
    float32, or uint8 pixels, scaled by 1/255 as they are gathered (as images_to_tensor
    scales them), so that a population can hold its images at a byte a pixel."""
    fn = "gather_images"
    x = checked_images(fn, x, index)
    (c, h, w), (p, n), dtype = x.shape[1:], index.shape, x.dtype
    if not native_for(x):
        gathered = x[index].permute(0, 2, 3, 4, 1)
        if dtype == torch.uint8:
            return gathered.to(torch.float32).div_(255.0).contiguous()
        return gathered.contiguous()
    x, index = x.contiguous(), index.contiguous()  # held in names: the C call reads them
    out = torch.empty(p, c, h, w, n)
    name = "gather_pixels" if dtype == torch.uint8 else fn
    call_by_members(name, (out, Whole(x), index), p, c * h * w, n)
    return out


def checked_images(fn: str, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The images (M, C, H, W) a gather of ``index`` (P, N) reads, grey (M, H, W) given a
    channel; ValueError naming ``fn`` unless x is uint8 or float32, N a multiple of LANES and
    every index in [0, M)."""
    expect(fn, "index", index, torch.int64, (None, None))
    if isinstance(x, torch.Tensor) and x.ndim == 3:
        x = x.unsqueeze(1)
    dtype = x.dtype if isinstance(x, torch.Tensor) and x.dtype == torch.uint8 else torch.float32
    m = expect(fn, "x", x, dtype, (None,) * 4).shape[0]
    n = index.shape[1]
    if n % LANES:
        raise ValueError(f"{fn}: index must hold a multiple of {LANES} images a row, got {n}")
    if index.numel():
        low, high = torch.aminmax(index)
        if low < 0 or high >= m:
            bad = int(low if low < 0 else high)
            raise ValueError(f"{fn}: index {bad} is outside the {m} images (valid: 0 to {m - 1})")
    return x


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
    _check_dropout(keys, rates, counts, features, width, n)
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
    call("dropout_scales", out, *arrays, len(keys), width, n)
    return out


def _check_dropout(
    keys: Sequence[int],
    rates: Sequence[float],
    counts: Sequence[int],
    features: Sequence[int],
    width: int,
    n: int,
) -> None:
    """dropout_scales' contract: a key, rate, count and feature count per member, each
    draw inside its (width, n) block, 64-bit keys, rates in [0, 1)."""
    fn = "dropout_scales"
    if width < 0 or n < 0:
        raise ValueError(f"{fn}: width and n must be >= 0, got {width} and {n}")
    lengths = {len(keys), len(rates), len(counts), len(features)}
    if len(lengths) != 1:
        raise ValueError(
            f"{fn}: keys, rates, counts and features must have one length, got {lengths}"
        )
    for name, values, low, high in (
        ("key", keys, 0, 2**64 - 1),
        ("count", counts, 0, n),
        ("features", features, 0, width),
    ):
        bad = [v for v in values if not low <= v <= high]
        if bad:
            raise ValueError(f"{fn}: {name} {bad[0]} is outside [{low}, {high}]")
    bad = [r for r in rates if not 0.0 <= r < 1.0]
    if bad:
        raise ValueError(f"{fn}: rate {bad[0]} is outside [0, 1)")


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
