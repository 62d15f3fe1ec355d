"""The population engine gives every member what the sequential engine gives it alone."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from deepnet import Member, PopulationEngine, SequentialEngine, Status, TrainConfig
from deepnet.config import PARAMS
from deepnet.engine.population import StepShape
from deepnet.evaluate import images_to_tensor
from tests.engine.images import SIZES, crop

OPTIMIZERS = PARAMS["optimizer"].choices
ACTIVATIONS = PARAMS["activation"].choices


def mixed_members(data):
    """One member per optimizer and per activation, differing in everything a population
    allows: units, dropout, MaxNorm, initializer, learning rate, training subset and size."""
    n = len(data.y_train)
    out = []
    for i in range(8):
        config = TrainConfig(
            epochs=2 + i % 2,
            batch_size=64,
            optimizer=OPTIMIZERS[i % len(OPTIMIZERS)],
            learn_rate=[None, 0.003][i % 2] if i % 7 else None,
            activation=ACTIVATIONS[i],
            neurons=[16, 30, 5][i % 3],
            dropout_rate=[0.5, 0.0, 0.2][i % 3],
            conv_dropout=[0.25, 0.0][i % 2],
            weight_constraint=[None, 3.0][i % 2],
            init_mode=["uniform", "lecun_uniform", "he_normal", "glorot_normal"][i % 4],
        )
        train = np.arange(i * 3, 950 + i)  # 936-950 images: the last batches differ
        out.append(Member(f"m{i}", config, train, np.arange(960, n), seed=i))
    return out


def results_by_key(training):
    out = {}
    for r in training:
        out.setdefault(r.key, []).append(r)
    return out


@pytest.fixture(scope="module")
def mixed(small27):
    members = mixed_members(small27)
    args = (small27.x_train, small27.y_train, 2)
    alone = {m.key: results_by_key(SequentialEngine().train(*args, [m]))[m.key] for m in members}
    training = PopulationEngine().train(*args, members)
    return members, alone, training, results_by_key(training)


def test_members_share_one_population(mixed):
    members, *_ = mixed
    assert len({StepShape.of(m) for m in members}) == 1


@pytest.mark.parametrize("i", range(8), ids=lambda i: f"{OPTIMIZERS[i % 7]}-{ACTIVATIONS[i]}")
def test_each_member_matches_itself_trained_alone(mixed, i):
    members, alone, _, together = mixed
    key = members[i].key
    assert [r.epoch for r in together[key]] == [r.epoch for r in alone[key]]
    for a, b in zip(alone[key], together[key], strict=True):
        assert b.status is a.status
        assert b.train_loss == pytest.approx(a.train_loss, rel=1e-4, abs=1e-6)
        assert b.val_loss == pytest.approx(a.val_loss, rel=1e-4, abs=1e-6)
        assert abs(b.val_accuracy - a.val_accuracy) <= 2 / len(members[i].val_idx)


def test_finished_members_keep_their_models(mixed, small27):
    members, alone, training, _ = mixed
    model = training.model("m3")
    assert model.dense.weight.shape == (members[3].config.neurons, 8 * 12 * 12)
    x = images_to_tensor(small27.x_train[960:])
    model.eval()
    with torch.no_grad():
        accuracy = (model(x).argmax(1).numpy() == small27.y_train[960:]).mean()
    assert accuracy == pytest.approx(alone["m3"][-1].val_accuracy, abs=1e-9)


def test_chunked_populations_give_the_same_results(small27):
    members = mixed_members(small27)[:4]
    args = (small27.x_train, small27.y_train, 2)
    whole = results_by_key(PopulationEngine(max_members=4).train(*args, members))
    chunked = results_by_key(PopulationEngine(max_members=1).train(*args, members))
    for key in whole:
        assert [r.val_loss for r in chunked[key]] == pytest.approx([r.val_loss for r in whole[key]])


def test_stopped_members_leave_and_the_rest_are_unchanged(small27):
    members = mixed_members(small27)[:3]
    args = (small27.x_train, small27.y_train, 2)
    full = results_by_key(PopulationEngine().train(*args, members))
    training = PopulationEngine().train(*args, members)
    first = training.step()
    training.stop("m0")
    rest = training.step()
    assert [r.key for r in first] == ["m0", "m1", "m2"]
    assert [r.key for r in rest] == ["m1", "m2"]
    for r in rest:
        assert r.val_loss == pytest.approx(full[r.key][1].val_loss, rel=1e-5)


def test_different_batch_sizes_train_in_separate_populations(small27):
    a, b = mixed_members(small27)[:2]
    b = Member(b.key, b.config.replace(batch_size=32), b.train_idx, b.val_idx, b.seed)
    assert StepShape.of(a) != StepShape.of(b)
    results = results_by_key(PopulationEngine().train(small27.x_train, small27.y_train, 2, [a, b]))
    assert results["m1"][-1].status is Status.FINISHED


def test_max_members_must_be_positive():
    with pytest.raises(ValueError, match="max_members"):
        PopulationEngine(max_members=0)


def test_members_that_join_a_running_population_match_themselves_trained_alone(mixed, small27):
    """The narrower mixed members start; the widest join after one round and train in the
    same population (relaid out wider), each at its own epoch and optimizer step."""
    members, alone, *_ = mixed
    args = (small27.x_train, small27.y_train, 2)
    engine = PopulationEngine()
    first = [m for m in members if m.config.neurons < 30]
    later = [m for m in members if m.config.neurons == 30]
    training = engine.train(*args, first)
    results = training.step()
    training.extend(engine.train(*args, later))
    assert len(training._groups) == 1  # absorbed: one population, not two
    results += list(training)
    together = {}
    for r in results:
        together.setdefault(r.key, []).append(r)
    for m in members:
        assert [r.epoch for r in together[m.key]] == [r.epoch for r in alone[m.key]]
        for a, b in zip(alone[m.key], together[m.key], strict=True):
            assert b.val_loss == pytest.approx(a.val_loss, rel=1e-4, abs=1e-6), m.key


def colour_members(data):
    """Three of the mixed members for one epoch, and an Adam one whose filter counts are no
    power of two (the kernels' channel blocks: 5 = 4 + 1, 12 = 8 + 4), in a population of
    its own."""
    mixed = [replace(m, config=m.config.replace(epochs=1)) for m in mixed_members(data)[:3]]
    odd = TrainConfig(epochs=1, batch_size=32, optimizer="Adam", conv1_filters=5, conv2_filters=12)
    return [*mixed, Member("odd", odd, mixed[0].train_idx, mixed[0].val_idx, seed=9)]


@pytest.mark.parametrize("size", SIZES)
def test_colour_images_of_any_size_train_as_in_the_sequential_engine(colour27, small27, size):
    """RGB (n, h, w, 3) images, at CIFAR-10's size, odd sides and near the minimum: both
    engines read three channels and agree."""
    x, y = crop(colour27, size), small27.y_train
    members = colour_members(small27)
    alone = {m.key: results_by_key(SequentialEngine().train(x, y, 2, [m]))[m.key] for m in members}
    training = PopulationEngine().train(x, y, 2, members)
    together = results_by_key(training)
    height, width = x.shape[1:3]
    pooled = ((height - 4) // 2, (width - 4) // 2)
    for m in members:
        (a,), (b,) = alone[m.key], together[m.key]
        assert b.train_loss == pytest.approx(a.train_loss, rel=1e-4, abs=1e-6), m.key
        assert b.val_loss == pytest.approx(a.val_loss, rel=1e-4, abs=1e-6), m.key
        model = training.model(m.key)
        assert model.conv1.weight.shape[1] == 3
        assert model.architecture.pooled == pooled
    if size == "32x32":
        assert together["odd"][0].val_accuracy > 0.9  # the tinted digits are learnt
