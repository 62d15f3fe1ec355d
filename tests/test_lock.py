"""The run-folder lock between real processes, and SIGTERM as Ctrl-C."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from deepnet import lock
from deepnet.errors import RunBusyError, RunExistsError

HOLD = """
import sys, time
from pathlib import Path
from deepnet import lock
with lock.hold(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(600)
"""


def hold_in_another_process(run_dir: Path) -> subprocess.Popen:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline() == "held\n"
    return holder


@pytest.fixture
def held(tmp_path):
    run_dir = tmp_path / "run"
    holder = hold_in_another_process(run_dir)
    yield run_dir, holder
    holder.kill()
    holder.wait()


def test_a_second_process_is_refused_with_the_holders_name(held):
    run_dir, holder = held
    record = json.loads((run_dir / "lock.json").read_text())
    with pytest.raises(RunBusyError) as refused, lock.hold(run_dir):
        pytest.fail("two processes held one run folder")
    message = str(refused.value)
    assert f"in use by process {holder.pid} on {socket.gethostname()} since " in message
    assert record["since"] in message
    assert "Wait for it to finish, or choose another --out" in message
    assert isinstance(refused.value, RunExistsError)
    assert json.loads((run_dir / "lock.json").read_text()) == record  # the holder's, untouched


def test_the_lock_of_a_killed_process_is_taken_over(held):
    run_dir, holder = held
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert json.loads((run_dir / "lock.json").read_text())["pid"] == holder.pid  # left behind
    with lock.hold(run_dir):
        assert json.loads((run_dir / "lock.json").read_text())["pid"] == os.getpid()
    assert not (run_dir / "lock.json").exists()


def test_a_released_lock_is_free_and_a_refused_new_folder_is_not_left(tmp_path):
    run_dir = tmp_path / "new"
    with lock.hold(run_dir):
        assert [p.name for p in run_dir.iterdir()] == ["lock.json"]
    assert not run_dir.exists()  # created for nothing: removed
    kept = tmp_path / "kept"
    with lock.hold(kept):
        (kept / "run.json").write_text("{}")
    with lock.hold(kept):  # released: the next run takes it
        pass
    assert [p.name for p in kept.iterdir()] == ["run.json"]


def test_a_folder_that_cannot_be_created(tmp_path):
    (tmp_path / "file").write_text("x")
    inside = tmp_path / "file" / "run"
    with (
        pytest.raises(RunExistsError, match=r"cannot write the run folder .*file/run"),
        lock.hold(inside),
    ):
        pytest.fail("held a folder inside a file")


def test_sigterm_raises_keyboard_interrupt_only_while_active():
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"), lock.sigterm_as_interrupt():
        signal.raise_signal(signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_sigterm_keeps_a_handler_the_application_installed():
    received = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        with lock.sigterm_as_interrupt():
            signal.raise_signal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert received == [signal.SIGTERM]
