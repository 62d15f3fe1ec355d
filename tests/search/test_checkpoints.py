"""A real ``deepnet search`` SIGKILLed mid-training resumes its trials from their checkpoints
and ends with the table of an uninterrupted run; a corrupt checkpoint costs only its trial's
progress (a warning, then it trains from scratch)."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from safetensors import safe_open

from deepnet.engine.checkpoint import SUFFIX
from tests.tables import results_table

ARGS = [
    "--param",
    "optimizer=Adam,Nadam",
    "--param",
    "neurons=8,16",
    "--param",
    "epochs=4",
    "--param",
    "batch_size=64",
    "--n-jobs",
    "1",
    "--no-refit",
]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def search(npz, out, *extra):
    cmd = [sys.executable, "-m", "deepnet", "search", *ARGS, "--path", str(npz), "--out", str(out)]
    return [*cmd, *extra]


def saved_epochs(folder) -> dict[str, int]:
    """Each checkpoint file's epoch (its members', which are saved together)."""
    out = {}
    for path in folder.glob(f"*{SUFFIX}"):
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = json.loads(f.metadata()["deepnet-checkpoint"])
        except Exception:  # replaced while we read it
            continue
        out[path.name] = meta["members"][0]["epoch"]
    return out


def done_epoch_2(epochs: dict[str, int]) -> bool:
    return len(epochs) == 4 and min(epochs.values()) >= 2


def killed_after_epoch_2(npz, out):
    """Run the search with checkpoints every epoch; SIGKILL it once every trial (all four
    train in one batch) saved epoch 2; some may have saved epoch 3 by the kill.
    Returns the files' epochs as the kill left them."""
    proc = subprocess.Popen(
        search(npz, out, "--checkpoint-every", "0"),
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not done_epoch_2(saved_epochs(out / "checkpoints")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    epochs = saved_epochs(out / "checkpoints")
    assert done_epoch_2(epochs) and max(epochs.values()) < 4, epochs
    return epochs


def rerun(npz, out):
    done = subprocess.run(search(npz, out), env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def resumed(stdout) -> list[int]:
    return [int(e) for e in re.findall(r"resumed  trial \d+ from epoch (\d+)", stdout)]


@pytest.fixture(scope="module")
def uninterrupted(small27_npz, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean") / "run"
    subprocess.run(search(small27_npz, out), env=ENV, check=True, capture_output=True, timeout=300)
    return results_table(out / "results.csv")


def test_sigkill_mid_training_resumes_from_the_saved_epoch(small27_npz, tmp_path, uninterrupted):
    out = tmp_path / "run"
    epochs = killed_after_epoch_2(small27_npz, out)
    done = rerun(small27_npz, out)
    assert sorted(resumed(done.stdout)) == sorted(epochs.values())
    assert results_table(out / "results.csv") == uninterrupted
    assert list((out / "checkpoints").iterdir()) == []  # the search is over: none is left


def test_a_corrupt_checkpoint_is_ignored_and_its_trial_trains_from_scratch(
    small27_npz, tmp_path, uninterrupted
):
    out = tmp_path / "run"
    epochs = killed_after_epoch_2(small27_npz, out)
    corrupt = sorted(epochs)[0]
    (out / "checkpoints" / corrupt).write_bytes(b"not a checkpoint")
    done = rerun(small27_npz, out)
    assert "ignoring checkpoint" in done.stdout + done.stderr
    assert "trains again from scratch" in done.stdout + done.stderr
    assert sorted(resumed(done.stdout)) == sorted(e for n, e in epochs.items() if n != corrupt)
    assert results_table(out / "results.csv") == uninterrupted
