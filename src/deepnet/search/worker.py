"""A worker process: ``python -m deepnet.search.worker THREADS``, started by ProcessWorker.

A fresh interpreter that imports deepnet and nothing of the caller: multiprocessing's spawn
re-imports the caller's main module in every worker, which re-runs a plain script (one
without ``if __name__ == "__main__":``, like the seed's notebook cells pasted into a file)
from its first line. Requests come in on stdin and replies go out on stdout (see
deepnet.search.protocol); whatever else the process prints goes to stderr.

A reader thread takes the requests off the pipe as they arrive, so that the worker exits
the moment the driver closes the pipe or dies, even in the middle of an epoch; a reply the
driver is no longer there to read ends the worker just as quietly.
"""

from __future__ import annotations

import os
import queue
import signal
import sys
import threading
import traceback

import torch

from deepnet.search.executor import InlineWorker, WorkerCrashError
from deepnet.search.protocol import (
    Advance,
    Channel,
    Crash,
    Join,
    Load,
    Reply,
    Request,
    Round,
    Submit,
)


def main(argv: list[str]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver handles Ctrl-C and closes us
    torch.set_num_threads(int(argv[0]))
    channel = _private_channel()
    inbox: queue.SimpleQueue[Request] = queue.SimpleQueue()
    threading.Thread(target=_read_requests, args=(channel, inbox), daemon=True).start()
    serve(channel, inbox)


def serve(channel: Channel, inbox: queue.SimpleQueue[Request]) -> None:
    """Answer requests until the process is ended (by the reader thread)."""
    worker: InlineWorker | None = None
    while True:
        match inbox.get():
            case Load(images, labels, n_classes, checkpoints, compute):
                worker = InlineWorker(images, labels, n_classes, checkpoints, compute)
            case request if worker is not None:
                reply = answer(worker, request)
                if reply is None:
                    continue
                try:
                    channel.send(reply)
                except BrokenPipeError:  # the driver is gone: nothing left to train for
                    os._exit(0)
            case request:
                raise WorkerCrashError(f"{type(request).__name__} before Load")


def answer(worker: InlineWorker, request: Submit | Join | Advance) -> Reply | None:
    """Carry out one request on the worker; an Advance is answered with its round (or the
    Crash that failed it: the driver fails the trials, not the search)."""
    match request:
        case Submit(members):
            worker.submit(members)
        case Join(members):
            worker.join(members)
        case Advance(stop, threads):
            if threads is not None:  # an even share of the cores, as the driver counts them
                torch.set_num_threads(threads)
            worker.advance(stop)
            try:
                return Round(worker.receive())
            except WorkerCrashError as exc:
                return Crash(str(exc))
    return None


def _read_requests(channel: Channel, inbox: queue.SimpleQueue[Request]) -> None:
    """Queue every request; end the process when the driver closes the pipe or dies."""
    try:
        while True:
            inbox.put(channel.receive())  # type: ignore[arg-type]
    except EOFError:
        os._exit(0)
    except BaseException:  # a garbled request: say why, and let the driver see the exit
        traceback.print_exc()
        os._exit(1)


def _private_channel() -> Channel:
    """The protocol's own copies of stdin and stdout; fd 0 becomes /dev/null and fd 1 stderr,
    so that a library printing to stdout cannot corrupt a message."""
    reader = open(os.dup(0), "rb", buffering=0)  # noqa: SIM115 - held for the process's life
    writer = open(os.dup(1), "wb", buffering=0)  # noqa: SIM115
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    return Channel(reader, writer)


if __name__ == "__main__":
    main(sys.argv[1:])
