"""The population engine gives every member what the sequential engine gives it alone."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from deepnet import Member, PopulationEngine, SequentialEngine, Status, TrainConfig
from deepnet.config import PARAMS
from deepnet.engine.population import StepShape
from deepnet.errors import ConfigError, DataError
from deepnet.evaluate import images_to_tensor
from deepnet.nn import SeedNet
from tests.engine.fallback import needs_bf16
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


def deep_members(data, **shape):
    """Four members of one StepShape (``shape``: conv_blocks, batch_norm, ...) that differ
    in everything else a population allows: activation, optimizer, units, both dropouts,
    MaxNorm, initializer, training subset and size."""
    n = len(data.y_train)
    specs = [
        ("relu", "Adam", 16, 0.25, None),
        ("tanh", "SGD", 30, 0.0, 3.0),
        ("softmax", "Adadelta", 5, 0.25, None),
        ("softsign", "Adam", 16, 0.5, 2.0),
    ]
    out = []
    for i, (activation, optimizer, units, conv_dropout, norm) in enumerate(specs):
        config = TrainConfig(
            epochs=2,
            batch_size=64,
            optimizer=optimizer,
            activation=activation,
            neurons=units,
            conv_dropout=conv_dropout,
            dropout_rate=[0.5, 0.0][i % 2],
            weight_constraint=norm,
            init_mode=["uniform", "lecun_uniform", "he_normal", "glorot_normal"][i],
            **shape,
        )
        train = np.arange(i * 3, 500 + i)  # 497-503 images: the last batches differ
        out.append(Member(f"d{i}", config, train, np.arange(960, n), seed=i))
    return out


def assert_each_matches_alone(x, y, members, rel=1e-4):
    """Trained together in one population, each member ends as the sequential engine
    trains it alone; returns the Training."""
    alone = {m.key: results_by_key(SequentialEngine().train(x, y, 2, [m]))[m.key] for m in members}
    training = PopulationEngine().train(x, y, 2, members)
    assert len(training._groups) == 1
    together = results_by_key(training)
    for m in members:
        assert [r.epoch for r in together[m.key]] == [r.epoch for r in alone[m.key]]
        for a, b in zip(alone[m.key], together[m.key], strict=True):
            assert b.train_loss == pytest.approx(a.train_loss, rel=rel, abs=1e-6), m.key
            assert b.val_loss == pytest.approx(a.val_loss, rel=rel, abs=1e-6), m.key
    return training


@pytest.mark.parametrize(
    ("shape", "rel"),
    [
        ({"conv_blocks": 2, "block2_filters": 12}, 1e-4),
        ({"batch_norm": True}, 1e-3),
        ({"conv_blocks": 2, "batch_norm": True}, 1e-3),
    ],
    ids=["two-blocks", "batch-norm", "two-blocks-batch-norm"],
)
def test_deeper_and_batch_normed_members_match_themselves_trained_alone(small27, shape, rel):
    """Blocks chain the C stacks (block 2 passes its input's gradient back to block 1),
    each block's dropout mask drawn in the sequential engine's order; batch norms take each
    member's statistics over its own images only (the padding of a short last batch
    excluded) and validate with the moving averages. Batch norms spread the maps, so a
    pooling window's near-tie that the two engines' float sums break apart (routing its
    gradient to another pixel) happens within a few epochs: their tolerance is wider."""
    members = deep_members(small27, **shape)
    training = assert_each_matches_alone(small27.x_train, small27.y_train, members, rel)
    model = training.model("d0")
    assert model.architecture == SeedNet(members[0].config, 2).architecture
    if shape.get("batch_norm"):
        assert model.bn2.running_var.ne(1.0).all()  # the moving averages came back too


def test_three_blocks_train_on_images_large_enough(colour27, small27):
    """Three blocks need 36x36 images: colour digits padded to 36x36, the last block's
    maps 1x1."""
    x = np.pad(colour27, ((0, 0), (2, 2), (2, 2), (0, 0)))
    members = [
        replace(m, config=m.config.replace(epochs=1, block3_filters=6))
        for m in deep_members(small27, conv_blocks=3)[:2]
    ]
    training = assert_each_matches_alone(x, small27.y_train, members)
    assert training.model("d1").architecture.pooled == (1, 1)


def test_members_share_a_population_only_with_the_same_blocks_and_norms(small27):
    base = deep_members(small27)[:2]  # relu and tanh: one StepShape
    shapes = [
        {},
        {"conv_blocks": 2},
        {"conv_blocks": 2, "block2_filters": 12},
        {"batch_norm": True},
        {"conv_blocks": 3},
    ]
    members = [
        replace(m, key=f"{m.key}-{i}", config=m.config.replace(epochs=1, **params))
        for i, params in enumerate(shapes)
        for m in base
    ]
    assert len({StepShape.of(m) for m in members}) == len(shapes)
    assert StepShape.of(members[0]) == StepShape.of(members[1])
    grey = members[:-2]  # three blocks need 36x36 images
    training = PopulationEngine().train(small27.x_train, small27.y_train, 2, grey)
    assert sorted(len(g.keys) for g in training._groups) == [2, 2, 2, 2]
    assert {r.status for r in training} == {Status.FINISHED}


def test_too_deep_a_stack_for_the_images_is_refused_before_training(small27):
    member = replace(deep_members(small27)[0], config=TrainConfig(conv_blocks=3))
    for engine in (PopulationEngine(), SequentialEngine()):
        with pytest.raises(DataError, match=r"28x28 .* conv_blocks=3.* at least 36x36"):
            engine.train(small27.x_train, small27.y_train, 2, [member])


def augmented_scheduled_members(data):
    """Members of one population, each with its own augmentation and schedule (one with
    neither), Adadelta's Keras rate of 1.0 scheduled too."""
    n = len(data.y_train)
    settings = [
        {},
        {"augment_shift": 3, "lr_schedule": "cosine"},
        {"augment_rotate": 20.0, "augment_scale": 0.15, "lr_schedule": "onecycle"},
        {"augment_flip": True, "lr_schedule": "step", "warmup_epochs": 1, "optimizer": "Adadelta"},
        {"augment_shift": 2, "augment_rotate": 10.0, "conv_dropout": 0.0, "dropout_rate": 0.2},
    ]
    base = TrainConfig(epochs=2, batch_size=64)
    return [
        Member(f"a{i}", base.replace(**s), np.arange(i, 900 + i), np.arange(960, n), seed=i)
        for i, s in enumerate(settings)
    ]


def test_augmented_and_scheduled_members_match_themselves_trained_alone(small27):
    members = augmented_scheduled_members(small27)
    args = (small27.x_train, small27.y_train, 2)
    engine = PopulationEngine()
    training = engine.train(*args, members[:3])
    first = training.step()
    training.extend(engine.train(*args, members[3:]))  # they join a round later
    assert len(training._groups) == 1
    together = {}
    for r in first + list(training):
        together.setdefault(r.key, []).append(r)
    for m in members:
        alone = results_by_key(SequentialEngine().train(*args, [m]))[m.key]
        assert [r.epoch for r in together[m.key]] == [r.epoch for r in alone]
        for a, b in zip(alone, together[m.key], strict=True):
            assert b.train_loss == pytest.approx(a.train_loss, rel=1e-4, abs=1e-6), m.key
            assert b.val_loss == pytest.approx(a.val_loss, rel=1e-4, abs=1e-6), m.key


def test_augmented_and_scheduled_members_resume_exactly(small27):
    members = augmented_scheduled_members(small27)[1:4]
    args = (small27.x_train, small27.y_train, 2)
    full = PopulationEngine().train(*args, members)
    expected = [replace(r, seconds=0.0) for r in full]
    training = PopulationEngine().train(*args, members)
    before = training.step()
    resume = {m.key: training.snapshot(m.key) for m in members}
    resumed = PopulationEngine().train(*args, members, resume)
    assert [replace(r, seconds=0.0) for r in before + list(resumed)] == expected
    for m in members:
        for name, value in full.model(m.key).state_dict().items():
            assert torch.equal(resumed.model(m.key).state_dict()[name], value), (m.key, name)


def test_a_shift_past_half_the_image_is_refused_before_any_population_trains(small27):
    config = TrainConfig(epochs=1, augment_shift=20)
    member = Member("m", config, np.arange(100), np.arange(0), 0)
    with pytest.raises(ConfigError, match="augment_shift=20"):
        PopulationEngine().train(small27.x_train, small27.y_train, 2, [member])


@needs_bf16
def test_bf16_products_train_each_member_about_as_float32_does(small27):
    """bf16 products (the second convolutions and the hidden layers) round their operands:
    every member, each optimizer and activation, learns as in float32 to within a few
    validation images, and its numbers are bf16's own, not float32's (but where a member's
    training has stalled at one class in both: m1, RMSprop with softplus)."""
    members = mixed_members(small27)
    args = (small27.x_train, small27.y_train, 2, members)
    fp32 = results_by_key(PopulationEngine().train(*args))
    bf16 = results_by_key(PopulationEngine(precision="bf16").train(*args))
    assert bf16.keys() == fp32.keys()
    differ = set()
    for key, runs in fp32.items():
        last, ours = runs[-1], bf16[key][-1]
        assert ours.epoch == last.epoch
        assert ours.val_accuracy == pytest.approx(last.val_accuracy, abs=0.02), key
        assert ours.val_loss == pytest.approx(last.val_loss, rel=0.1, abs=0.01), key
        if ours.train_loss != last.train_loss:
            differ.add(key)
    assert differ == set(fp32) - {"m1"}
