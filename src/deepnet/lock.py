"""A run in progress: one process per run folder, and SIGTERM stopping it as Ctrl-C does.

Two processes writing one run folder fight: the second search fails the first one's running
trials and trains them again. ``hold(run_dir)`` takes an exclusive ``flock`` on RUN/lock.json
for as long as the run goes on. The kernel releases the lock when the process ends in any
way, SIGKILL included, so a lock left by a dead process is simply taken over (its file only
remains). The file says who holds it (pid, host, start time), so that a refused process can
name whom it waits for. A released lock's file is removed while it is still locked, and a
process that locked a file no longer at its path tries again, so two never both hold one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from deepnet.errors import RunBusyError
from deepnet.runs import LOCK_FILE, unwritable


@dataclass(frozen=True)
class Holder:
    """The process holding a run folder's lock."""

    pid: int
    host: str
    since: str  # UTC, ISO 8601

    @classmethod
    def this_process(cls) -> Holder:
        return cls(os.getpid(), socket.gethostname(), datetime.now(UTC).isoformat("T", "seconds"))


@contextlib.contextmanager
def hold(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir`` (creating it) for the block, with SIGTERM raising KeyboardInterrupt.

    Raises RunBusyError, naming the holder, if another live process holds it. A folder that
    this call created and that is still empty at the end is removed: a refused run leaves
    nothing behind.
    """
    created = not run_dir.exists()
    fd = _acquire(run_dir)
    try:
        with sigterm_as_interrupt():
            yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            (run_dir / LOCK_FILE).unlink()
        os.close(fd)
        if created:
            with contextlib.suppress(OSError):  # not empty: the run wrote something
                run_dir.rmdir()


def _acquire(run_dir: Path) -> int:
    """A descriptor of RUN/lock.json, locked, with this process's record written in it."""
    path = run_dir / LOCK_FILE
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = _locked(path)
    except BlockingIOError:
        raise RunBusyError(_busy_message(run_dir, _read_holder(path))) from None
    except OSError as exc:
        raise unwritable(run_dir, exc) from exc
    try:
        os.ftruncate(fd, 0)  # a dead holder's record
        os.pwrite(fd, (json.dumps(asdict(Holder.this_process())) + "\n").encode(), 0)
    except OSError as exc:
        os.close(fd)
        raise unwritable(run_dir, exc) from exc
    return fd


def _locked(path: Path) -> int:
    """The file at ``path`` (created if missing), locked; BlockingIOError if it is held."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise
        if _is_at(fd, path):
            return fd
        os.close(fd)  # its holder removed it between our open and our lock: open it again


def _is_at(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def holder(run_dir: Path) -> Holder | None:
    """The live process holding ``run_dir``, or None when none does (finished, or killed:
    a dead holder's lock is released by the kernel). Only reads, so a read-only folder works."""
    path = run_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_holder(path) or Holder(0, "?", "?")
    finally:
        os.close(fd)  # closing releases a shared lock taken here
    return None


def _read_holder(path: Path) -> Holder | None:
    """The record in a lock file; None while its holder is still writing it."""
    try:
        return Holder(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _busy_message(run_dir: Path, who: Holder | None) -> str:
    named = f"process {who.pid} on {who.host} since {who.since}" if who else "another process"
    return (
        f"run folder {run_dir} is in use by {named}; one process writes a run folder at a "
        "time. Wait for it to finish, or choose another --out."
    )


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While active, SIGTERM (kill, a batch scheduler's stop) raises KeyboardInterrupt in the
    main thread, so a run is saved and marked interrupted exactly as on Ctrl-C.

    Off the main thread, or where the application installed its own SIGTERM handler, it
    changes nothing: Python lets only the main thread handle signals, and the handler is
    the application's to choose.
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _raise_interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")
