"""What the search driver and a worker process say to each other, and the pipe that carries it.

Each message is one pickle preceded by its length (8 bytes, big-endian). The driver sends
requests (``Load`` once, then ``Submit``, ``Join`` and ``Advance``); the worker answers each
``Advance`` with a ``Round`` or a ``Crash``. Closing the driver's end of the pipe, or the
driver dying, is the only way to stop a worker: it exits when it reads end of file.

A Ray actor (deepnet.search.ray_executor) takes the same requests without the pipe: each
round's Submit or Join and its Advance in one remote call, ``Load`` through the object store.
"""

from __future__ import annotations

import io
import pickle
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from deepnet.engine.device import CPU_FP32, Compute

if TYPE_CHECKING:
    import numpy as np

    from deepnet.engine import EpochResult, Member
    from deepnet.engine.checkpoint import CheckpointPolicy

_LENGTH = struct.Struct(">Q")


@dataclass(frozen=True)
class Load:
    """The training images, where the worker checkpoints and where and in what arithmetic
    it trains, sent once: a worker starts before it has them."""

    images: np.ndarray
    labels: np.ndarray
    n_classes: int
    checkpoints: CheckpointPolicy | None = None  # where and how often to save (None: never)
    compute: Compute = CPU_FP32  # its device and precision


@dataclass(frozen=True)
class Submit:
    """Start a new batch of members, replacing the previous one."""

    members: list[Member]


@dataclass(frozen=True)
class Join:
    """Add members to the batch; they start with the next round."""

    members: list[Member]


@dataclass(frozen=True)
class Advance:
    """Stop these members, then train the others one more epoch (on ``threads`` threads,
    None: as before) and reply."""

    stop: list[str]
    threads: int | None = None


@dataclass(frozen=True)
class Round:
    """One epoch's results, one per member still training."""

    results: list[EpochResult]


@dataclass(frozen=True)
class Crash:
    """Training raised: the driver fails the batch's trials, not the search."""

    message: str


Request = Load | Submit | Join | Advance
Reply = Round | Crash


class Channel:
    """Length-prefixed pickles over two unbuffered pipe ends (one to read, one to write)."""

    def __init__(self, reader: io.RawIOBase, writer: io.RawIOBase):
        self.reader, self.writer = reader, writer

    def send(self, message: Request | Reply) -> None:
        """Write one message whole; BrokenPipeError when the other side is gone."""
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        for chunk in (_LENGTH.pack(len(data)), data):
            view = memoryview(chunk)
            while view:
                view = view[self.writer.write(view) :]

    def receive(self) -> Request | Reply:
        """Read one message; EOFError when the other side has closed its end or died."""
        (size,) = _LENGTH.unpack(self._read(_LENGTH.size))
        return pickle.loads(self._read(size))

    def _read(self, size: int) -> bytearray:
        buffer = bytearray(size)
        view, done = memoryview(buffer), 0
        while done < size:
            n = self.reader.readinto(view[done:])
            if not n:
                raise EOFError("the other end of the worker pipe is closed")
            done += n
        return buffer
