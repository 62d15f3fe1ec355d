"""Checkpoints at epoch boundaries: a member's training state on disk, to resume it exactly.

A MemberSnapshot is everything that decides a member's next epochs (parameters, optimizer
slots and scalars, its generator's state, its MaskStream's position, its own epoch); with
its EpochResults so far it is a SavedMember. The members that share a ``Member.checkpoint``
label (a trial's folds) are saved together in one file, so they always resume from the same
epoch. The file's name is a fingerprint of everything that determines their training (their
configs, seeds, indices, the data, deepnet's version), so the same trial finds its file
whatever batch, worker or Optuna trial number it lands in, and another configuration never
does. Files are safetensors with the rest as JSON in its metadata (no pickle), written to a
temporary name and renamed, so a kill mid-write leaves the last whole checkpoint.

Checkpoints live in a folder every worker can reach: the run folder locally; on a cluster a
shared filesystem path (no object stores or URLs).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import deepnet
from deepnet.engine.member import EpochResult, Member, Status
from deepnet.evaluate import channels_last

SUFFIX = ".ckpt.safetensors"
_META = "deepnet-checkpoint"
DEFAULT_EVERY = 60.0  # seconds of training between saves


@dataclass(frozen=True)
class CheckpointPolicy:
    """Where workers save checkpoints, and how often: after the first epoch boundary once
    ``every`` seconds of training have passed since the last save (0: every epoch)."""

    directory: Path
    every: float = DEFAULT_EVERY


@dataclass(frozen=True)
class MemberSnapshot:
    """A member at an epoch boundary: what it needs to train on as if it never stopped.
    Tensors are unpadded, shaped as the member's SeedNet's state_dict."""

    epoch: int  # its own epochs trained
    parameters: dict[str, torch.Tensor]
    slots: dict[str, dict[str, torch.Tensor]]  # optimizer accumulator -> tensor name -> value
    scalars: dict[str, float]  # the optimizer's per-step scalars (Nadam's m_schedule)
    generator: torch.Tensor  # torch.Generator.get_state()
    masks: int  # MaskStream.position


@dataclass(frozen=True)
class SavedMember:
    """A member's snapshot and the results of its epochs 1..snapshot.epoch."""

    snapshot: MemberSnapshot
    results: tuple[EpochResult, ...]


def data_fingerprint(images: np.ndarray, labels: np.ndarray) -> str:
    """A digest of the training data, its images' size and channels included: a checkpoint
    of other data is never resumed. Grey (n, h, w) images are the same data as (n, h, w, 1)."""
    digest = hashlib.blake2b(digest_size=16)
    for array in (channels_last(images), np.asarray(labels)):
        digest.update(repr((array.shape, array.dtype.str)).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def fingerprint(members: Sequence[Member], data: str) -> str:
    """The name of these members' checkpoint: a digest of all that decides their training."""
    described = [
        {
            "config": m.config.to_dict(),
            "seed": m.seed,
            "train": hashlib.blake2b(np.asarray(m.train_idx, np.int64).tobytes()).hexdigest(),
            "val": hashlib.blake2b(np.asarray(m.val_idx, np.int64).tobytes()).hexdigest(),
        }
        for m in members
    ]
    text = json.dumps([deepnet.__version__, data, described], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


SnapshotOf = Callable[[str], "MemberSnapshot"]  # a live member's snapshot (Training.snapshot)


class CheckpointStore:
    """Checkpoint files in one folder, by name."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def path(self, name: str) -> Path:
        return self.directory / f"{name}{SUFFIX}"

    def save(self, name: str, members: Sequence[SavedMember]) -> None:
        """Write these members' checkpoint whole, replacing the previous one atomically."""
        tensors: dict[str, torch.Tensor] = {}
        described = []
        for i, saved in enumerate(members):
            snap = saved.snapshot
            tensors[f"{i}/generator"] = snap.generator
            for tensor, value in snap.parameters.items():
                tensors[f"{i}/param/{tensor}"] = value
            for slot, values in snap.slots.items():
                for tensor, value in values.items():
                    tensors[f"{i}/slot/{slot}/{tensor}"] = value
            described.append(
                {
                    "epoch": snap.epoch,
                    "masks": snap.masks,
                    "scalars": snap.scalars,
                    "results": [asdict(r) for r in saved.results],
                }
            )
        meta = json.dumps({"name": name, "members": described})
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / f".{name}.{os.getpid()}.tmp"
        tensors = {k: v.detach().contiguous().clone() for k, v in tensors.items()}
        save_file(tensors, str(tmp), metadata={_META: meta})
        os.replace(tmp, self.path(name))

    def load(self, name: str, count: int) -> list[SavedMember] | None:
        """The checkpoint ``name`` of ``count`` members; None if there is none, or (with a
        warning) if it is corrupt or not theirs: they then train from scratch."""
        path = self.path(name)
        if not path.is_file():
            return None
        try:
            return _read(path, name, count)
        except Exception as exc:  # any damage: the file is worth nothing, training is not
            warnings.warn(
                f"ignoring checkpoint {path} ({type(exc).__name__}: {exc}); its trial "
                "trains again from scratch.",
                UserWarning,
                stacklevel=2,
            )
            return None

    def delete(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)

    def clear(self) -> None:
        """Delete every checkpoint here (the search is over: none can be resumed)."""
        for path in self.directory.glob(f"*{SUFFIX}"):
            path.unlink(missing_ok=True)


def _read(path: Path, name: str, count: int) -> list[SavedMember]:
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()[_META])
        tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 - not a dict
    if meta["name"] != name:
        raise ValueError(f"it belongs to another configuration ({meta['name']})")
    if len(meta["members"]) != count:
        raise ValueError(f"it holds {len(meta['members'])} members, not {count}")
    out = []
    for i, described in enumerate(meta["members"]):
        prefix = f"{i}/"
        params, slots = {}, {}
        for key, value in tensors.items():
            if not key.startswith(prefix):
                continue
            kind, _, rest = key[len(prefix) :].partition("/")
            if kind == "param":
                params[rest] = value
            elif kind == "slot":
                slot, _, tensor = rest.partition("/")
                slots.setdefault(slot, {})[tensor] = value
        results = tuple(
            EpochResult(**{**r, "status": Status(r["status"])}) for r in described["results"]
        )
        epoch = int(described["epoch"])
        if [r.epoch for r in results] != list(range(1, epoch + 1)):
            raise ValueError(f"member {i}'s results do not cover epochs 1..{epoch}")
        snapshot = MemberSnapshot(
            epoch,
            params,
            slots,
            {k: float(v) for k, v in described["scalars"].items()},
            tensors[f"{prefix}generator"],
            int(described["masks"]),
        )
        out.append(SavedMember(snapshot, results))
    return out


class Checkpoints:
    """A worker's checkpoints of the batch it trains: which members resume, and when to save.

    ``resume`` finds the saved state of newly given members; ``record`` takes each round's
    results and saves every trial still training when a save is due; a trial's file is
    deleted once all its members are done or stopped.
    """

    def __init__(self, policy: CheckpointPolicy, data: str):
        self.policy, self.data = policy, data
        self.store = CheckpointStore(policy.directory)
        self._groups: dict[str, list[Member]] = {}  # file name -> its members, in order
        self._name_of: dict[str, str] = {}  # member key -> file name
        self._results: dict[str, list[EpochResult]] = {}  # member key -> its epochs so far
        self._ended: set[str] = set()  # members done or stopped
        self._last_save = time.monotonic()

    def reset(self) -> None:
        """A new batch: the last one is over (every trial of it finished, the driver gives
        a worker a new batch only then), so its remaining files go."""
        for name in self._groups:
            self.store.delete(name)
        self._groups.clear()
        self._name_of.clear()
        self._results.clear()
        self._ended.clear()
        self._last_save = time.monotonic()

    def resume(self, members: Sequence[Member]) -> dict[str, SavedMember]:
        """The saved state of each of these members that has one, by key."""
        labelled: dict[str, list[Member]] = {}
        for m in members:
            if m.checkpoint is not None:
                labelled.setdefault(m.checkpoint, []).append(m)
        found: dict[str, SavedMember] = {}
        for group in labelled.values():
            name = fingerprint(group, self.data)
            self._groups[name] = group
            self._name_of.update(dict.fromkeys((m.key for m in group), name))
            saved = self.store.load(name, len(group))
            found.update((m.key, s) for m, s in zip(group, saved or (), strict=False))
        return found

    def record(self, results: Iterable[EpochResult], snapshot: SnapshotOf) -> None:
        """Take a round's results (after a resume, the replayed epochs first); save the
        trials still training if a save is due."""
        for r in results:
            if r.key in self._name_of:
                self._results.setdefault(r.key, []).append(r)
                if r.done:
                    self._ended.add(r.key)
        self._delete_ended()
        now = time.monotonic()
        if now - self._last_save < self.policy.every:
            return
        for name, group in self._groups.items():
            if not any(m.key in self._ended for m in group):
                saved = [SavedMember(snapshot(m.key), tuple(self._results[m.key])) for m in group]
                self.store.save(name, saved)
        self._last_save = now

    def stop(self, keys: Iterable[str]) -> None:
        """These members are stopped: their trials' files go once all of them ended."""
        self._ended.update(k for k in keys if k in self._name_of)
        self._delete_ended()

    def _delete_ended(self) -> None:
        for name, group in list(self._groups.items()):
            if all(m.key in self._ended for m in group):
                self.store.delete(name)
                del self._groups[name]
