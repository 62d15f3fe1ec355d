"""Learning-rate schedules: each shape's multipliers, the rates a population reads per row,
and training that follows them, resumed or not."""

import dataclasses
import itertools
import math

import numpy as np
import pytest
import torch

from deepnet import Member, SequentialEngine, TrainConfig
from deepnet.config import LR_SCHEDULES
from deepnet.engine.roster import MemberState, Roster
from deepnet.engine.schedules import ONECYCLE_START, SHAPES, Schedule
from deepnet.errors import ConfigError

EPOCHS, STEPS = 4, 10


def curve(shape, warmup=0):
    schedule = Schedule(shape, EPOCHS, warmup)
    return [schedule.multiplier(e, s, STEPS) for e in range(1, EPOCHS + 1) for s in range(STEPS)]


def test_every_configurable_schedule_has_a_shape():
    assert tuple(SHAPES) == LR_SCHEDULES


def test_constant_is_one_and_leaves_the_rate_alone():
    assert curve("constant") == [1.0] * EPOCHS * STEPS
    assert Schedule("constant", EPOCHS).constant
    assert not Schedule("constant", EPOCHS, 1).constant and not Schedule("cosine", EPOCHS).constant


def test_cosine_falls_from_one_through_a_half_towards_zero():
    c = curve("cosine")
    assert c[0] == 1.0 and c[len(c) // 2] == pytest.approx(0.5)
    assert all(a > b for a, b in itertools.pairwise(c)) and 0 < c[-1] < 0.01


def test_onecycle_rises_over_thirty_percent_then_falls_towards_zero():
    c = curve("onecycle")
    peak = round(0.3 * len(c))
    assert c[0] == ONECYCLE_START and c[peak] == pytest.approx(1.0)
    assert all(a < b for a, b in itertools.pairwise(c[: peak + 1]))
    assert all(a > b for a, b in itertools.pairwise(c[peak:])) and c[-1] < 0.01


def test_step_divides_by_ten_at_half_and_at_three_quarters_of_the_epochs():
    assert curve("step") == pytest.approx([1.0] * 20 + [0.1] * 10 + [0.01] * 10)


def test_warmup_rises_linearly_then_the_shape_runs_over_the_rest():
    c = curve("cosine", warmup=1)
    assert c[:STEPS] == pytest.approx([(s + 1) / STEPS for s in range(STEPS)])
    rest = [0.5 * (1 + math.cos(math.pi * t / (3 * STEPS))) for t in range(3 * STEPS)]
    assert c[STEPS:] == pytest.approx(rest)


@pytest.mark.parametrize(
    ("args", "message"),
    [(("cosin", 4), "unknown lr_schedule 'cosin'"), (("step", 4, 4), "warmup_epochs=4")],
)
def test_a_bad_schedule_is_refused(args, message):
    with pytest.raises(ConfigError, match=message):
        Schedule(*args)


def test_a_population_reads_each_members_own_scheduled_rate(small27):
    idx = np.arange(600)
    configs = [
        TrainConfig(epochs=3, optimizer="Adadelta", lr_schedule="cosine"),  # Keras lr 1.0
        TrainConfig(epochs=3, learn_rate=0.01, lr_schedule="step", warmup_epochs=1),
        TrainConfig(epochs=3, learn_rate=0.003),
    ]
    states = [MemberState.start(Member(f"m{i}", c, idx, idx, i)) for i, c in enumerate(configs)]
    states[1] = states[1].joining(1)  # joined a round later: one epoch behind
    roster = Roster(states)
    constant = Roster(states[2:])
    assert constant.learning_rates(2, 0, 10) is constant.lr  # untouched
    rates = roster.learning_rates(2, 5, 10).flatten().tolist()
    expected = [
        1.0 * Schedule("cosine", 3).multiplier(2, 5, 10),
        0.01 * 6 / 10,  # its own epoch 1, step 5 of its warm-up
        0.003,
    ]
    assert rates == pytest.approx(expected, rel=1e-6)
    assert roster.learning_rates(2, 5, 10).shape == (3, 1)


def member(config, seed=3):
    return Member("m", config, np.arange(900), np.arange(900, 1200), seed)


def test_a_schedule_changes_training_and_the_optimizer_ends_at_its_last_rate(small27):
    args = (small27.x_train, small27.y_train, 2)
    base = TrainConfig(epochs=2, batch_size=128, optimizer="SGD", learn_rate=0.05)
    cosine = base.replace(lr_schedule="cosine")
    training = SequentialEngine().train(*args, [member(cosine)])
    scheduled = list(training)
    (first, _) = SequentialEngine().train(*args, [member(base)])
    assert scheduled[0].train_loss != first.train_loss
    steps = math.ceil(900 / 128)
    last = 0.05 * Schedule("cosine", 2).multiplier(2, steps - 1, steps)
    group = training._groups[0].optimizer.param_groups[0]
    assert group["lr"] == pytest.approx(last)


def test_a_resumed_member_follows_its_schedule_exactly(small27):
    config = TrainConfig(epochs=3, batch_size=128, lr_schedule="onecycle", warmup_epochs=1)
    args = (small27.x_train, small27.y_train, 2, [member(config)])
    full = SequentialEngine().train(*args)
    expected = [dataclasses.replace(r, seconds=0.0) for r in full]
    training = SequentialEngine().train(*args)
    before = training.step()
    resumed = SequentialEngine().train(*args, {"m": training.snapshot("m")})
    after = [dataclasses.replace(r, seconds=0.0) for r in before + list(resumed)]
    assert after == expected
    for name, value in full.model("m").state_dict().items():
        assert torch.equal(resumed.model("m").state_dict()[name], value), name
