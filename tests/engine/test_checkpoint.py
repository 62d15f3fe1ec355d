"""A member stopped at an epoch boundary and resumed from its checkpoint ends exactly as one
trained without a stop: every later EpochResult and the final parameters, bit for bit."""

import dataclasses

import numpy as np
import pytest
import torch

from deepnet import Member, PopulationEngine, SequentialEngine, TrainConfig
from deepnet.engine.checkpoint import (
    CheckpointPolicy,
    Checkpoints,
    CheckpointStore,
    SavedMember,
    data_fingerprint,
    fingerprint,
)
from tests.engine.images import crop

EPOCHS, STOP_AT = 4, 2


def members(data) -> list[Member]:
    """Adam and Nadam (its momentum schedule is a per-step scalar), dropout on both layers,
    MaxNorm, two widths, and one member that finishes before the others."""
    n = len(data.y_train)
    configs = [
        TrainConfig(epochs=EPOCHS, batch_size=64, optimizer="Nadam", dropout_rate=0.5),
        TrainConfig(epochs=EPOCHS, batch_size=64, optimizer="Adam", conv_dropout=0.25),
        TrainConfig(
            epochs=EPOCHS, batch_size=64, optimizer="Adam", neurons=8, weight_constraint=3.0
        ),
        TrainConfig(epochs=3, batch_size=64, optimizer="RMSprop", dropout_rate=0.2),
    ]
    train, val = np.arange(0, 900), np.arange(900, n)
    return [
        Member(f"m{i}", c, train, val, seed=i, checkpoint=f"m{i}") for i, c in enumerate(configs)
    ]


def metrics(r):
    """An EpochResult less its seconds (wall time differs)."""
    return dataclasses.replace(r, seconds=0.0)


def train_all(data, ms, resume=None):
    training = PopulationEngine().train(data.x_train, data.y_train, 2, ms, resume)
    results = [metrics(r) for r in training]
    return results, {m.key: training.model(m.key).state_dict() for m in ms}


@pytest.fixture(scope="module")
def uninterrupted(small27):
    return train_all(small27, members(small27))


def test_resumed_members_end_exactly_as_uninterrupted(small27, uninterrupted, tmp_path):
    ms = members(small27)
    training = PopulationEngine().train(small27.x_train, small27.y_train, 2, ms)
    before = [r for _ in range(STOP_AT) for r in training.step()]
    store = CheckpointStore(tmp_path)
    for m in ms:  # through the files, as a rerun reads them
        saved = [r for r in before if r.key == m.key]
        store.save(m.key, [SavedMember(training.snapshot(m.key), tuple(saved))])
    loaded = {m.key: store.load(m.key, 1)[0] for m in ms}
    assert {s.snapshot.epoch for s in loaded.values()} == {STOP_AT}
    resume = {key: s.snapshot for key, s in loaded.items()}
    after, params = train_all(small27, members(small27), resume)
    expected, expected_params = uninterrupted
    assert [metrics(r) for r in before] + after == expected
    assert [r.epoch for r in after if r.key == "m0"] == [3, 4]
    for key, tensors in expected_params.items():
        for name, value in tensors.items():
            assert torch.equal(params[key][name], value), (key, name)


def test_the_sequential_engine_resumes_exactly_too(small27):
    ms = members(small27)[:2]  # Nadam with dropout, Adam with conv dropout
    args = (small27.x_train, small27.y_train, 2)
    full = SequentialEngine().train(*args, ms)
    expected = [metrics(r) for r in full]
    training = SequentialEngine().train(*args, ms)
    before = [metrics(r) for _ in range(STOP_AT) for r in training.step()]
    resume = {m.key: training.snapshot(m.key) for m in ms}
    resumed = SequentialEngine().train(*args, ms, resume)
    assert before + [metrics(r) for r in resumed] == expected
    for m in ms:
        for name, value in full.model(m.key).state_dict().items():
            assert torch.equal(resumed.model(m.key).state_dict()[name], value), (m.key, name)


def test_checkpoints_save_each_epoch_and_delete_a_trial_once_done(small27, tmp_path):
    ms = members(small27)[2:]  # m3 finishes after 3 epochs, m2 after 4
    data = data_fingerprint(small27.x_train, small27.y_train)
    checkpoints = Checkpoints(CheckpointPolicy(tmp_path, every=0), data)
    assert checkpoints.resume(ms) == {}
    training = PopulationEngine().train(small27.x_train, small27.y_train, 2, ms)
    for _ in range(3):
        checkpoints.record(training.step(), training.snapshot)
    files = {p.name.split(".")[0] for p in tmp_path.iterdir()}
    assert files == {fingerprint(ms[:1], data)}  # m3 finished: its file is gone
    found = Checkpoints(CheckpointPolicy(tmp_path, every=0), data).resume(ms)
    assert list(found) == ["m2"] and found["m2"].snapshot.epoch == 3
    assert [r.epoch for r in found["m2"].results] == [1, 2, 3]
    checkpoints.stop(["m2"])
    assert list(tmp_path.iterdir()) == []


def test_a_corrupt_or_foreign_checkpoint_is_ignored_with_a_warning(small27, tmp_path):
    ms = members(small27)[:1]
    data = data_fingerprint(small27.x_train, small27.y_train)
    store = CheckpointStore(tmp_path)
    name = fingerprint(ms, data)
    store.path(name).parent.mkdir(exist_ok=True)
    store.path(name).write_bytes(b"\x00garbage")
    with pytest.warns(UserWarning, match="ignoring checkpoint .* trains again from scratch"):
        assert Checkpoints(CheckpointPolicy(tmp_path), data).resume(ms) == {}
    training = PopulationEngine().train(small27.x_train, small27.y_train, 2, ms)
    training.step()
    store.save("other", [SavedMember(training.snapshot("m0"), ())])
    store.path("other").rename(store.path(name))
    with pytest.warns(UserWarning, match="another configuration"):
        assert Checkpoints(CheckpointPolicy(tmp_path), data).resume(ms) == {}


def test_the_fingerprint_tells_configs_seeds_folds_and_data_apart(small27):
    m = members(small27)[0]
    data = data_fingerprint(small27.x_train, small27.y_train)
    base = fingerprint([m], data)
    assert fingerprint([dataclasses.replace(m, key="other")], data) == base
    changed = [
        dataclasses.replace(m, config=m.config.replace(learn_rate=0.01)),
        dataclasses.replace(m, seed=5),
        dataclasses.replace(m, val_idx=m.val_idx[1:]),
    ]
    assert len({base, *(fingerprint([c], data) for c in changed)}) == 4
    other_data = data_fingerprint(small27.x_train, small27.y_train[::-1].copy())
    assert fingerprint([m], other_data) != base


def test_the_data_fingerprint_holds_the_images_size_and_channels(small27):
    """The same pixel bytes as other sizes or channel counts are other data; grey images
    with or without their channel axis are the same."""
    grey, y = small27.x_train.reshape(-1, 28, 28), small27.y_train
    prints = {
        data_fingerprint(x, y)
        for x in (grey[..., None], grey.reshape(-1, 28, 14, 2), grey.reshape(-1, 14, 56, 1))
    }
    assert len(prints) == 3
    assert data_fingerprint(grey, y) == data_fingerprint(grey[..., None], y)


def test_colour_members_of_odd_size_resume_exactly(colour27, small27):
    """Checkpointed RGB 29x31 members (their SeedNets read three channels) go on as if they
    had never stopped, in the population engine."""
    x, y = crop(colour27, "29x31"), small27.y_train
    ms = members(small27)[:2]
    expected = [metrics(r) for r in PopulationEngine().train(x, y, 2, ms)]
    training = PopulationEngine().train(x, y, 2, ms)
    before = [metrics(r) for _ in range(STOP_AT) for r in training.step()]
    resume = {m.key: training.snapshot(m.key) for m in ms}
    assert resume["m0"].parameters["conv1.weight"].shape == (4, 3, 3, 3)
    after = [metrics(r) for r in PopulationEngine().train(x, y, 2, ms, resume)]
    assert before + after == expected


def test_batch_normed_deep_members_resume_with_their_moving_averages(small27, tmp_path):
    """Two-block batch-normed members stopped after epoch 1 go on, through their files, as
    if they had never stopped: the moving averages (which no optimizer holds) are in the
    snapshot, and the optimizer slots are of the trained tensors only."""
    deep = {"epochs": 2, "batch_size": 64, "conv_blocks": 2, "batch_norm": True}
    configs = [
        TrainConfig(optimizer="Nadam", conv_dropout=0.25, **deep),
        TrainConfig(optimizer="Adam", activation="tanh", dropout_rate=0.5, **deep),
    ]
    train, val = np.arange(0, 400), np.arange(900, 1100)
    ms = [Member(f"b{i}", c, train, val, seed=i) for i, c in enumerate(configs)]
    expected, expected_params = train_all(small27, ms)
    training = PopulationEngine().train(small27.x_train, small27.y_train, 2, ms)
    before = [metrics(r) for r in training.step()]
    store = CheckpointStore(tmp_path)
    for m in ms:
        saved = tuple(r for r in before if r.key == m.key)
        store.save(m.key, [SavedMember(training.snapshot(m.key), saved)])
    resume = {m.key: store.load(m.key, 1)[0].snapshot for m in ms}
    assert resume["b0"].parameters["bn3.running_var"].ne(1.0).all()
    assert "bn3.running_var" not in resume["b0"].slots["m"]
    after, params = train_all(small27, ms, resume)
    assert before + after == expected
    for key, tensors in expected_params.items():
        for name, value in tensors.items():
            assert torch.equal(params[key][name], value), (key, name)
