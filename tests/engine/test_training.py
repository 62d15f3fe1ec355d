"""The Training contract, which every engine keeps."""

import numpy as np
import pytest
import torch

from deepnet import Member, PopulationEngine, SequentialEngine, Status, TrainConfig

FAST = TrainConfig(epochs=3, batch_size=64)


@pytest.fixture(params=[SequentialEngine, PopulationEngine], ids=["sequential", "population"])
def engine(request):
    return request.param()


def members(data, *specs):
    idx = np.arange(len(data.y_train))
    train, val = idx[:1000], idx[1000:]
    return [Member(key, config, train, val, seed) for key, config, seed in specs]


def run(engine, data, *specs):
    training = engine.train(data.x_train, data.y_train, data.n_classes, members(data, *specs))
    return training, list(training)


def weights(model):
    return [p.detach().clone() for p in model.parameters()]


def test_members_advance_in_lockstep_one_epoch_each(engine, small27):
    _, results = run(engine, small27, ("a", FAST, 0), ("b", FAST.replace(epochs=2), 1))
    order = [(r.key, r.epoch) for r in results]
    assert order == [("a", 1), ("b", 1), ("a", 2), ("b", 2), ("a", 3)]
    assert [r.status for r in results if r.done] == [Status.FINISHED, Status.FINISHED]
    for r in results:
        assert 0 <= r.train_accuracy <= 1 and 0 <= r.val_accuracy <= 1 and r.seconds > 0
    assert results[-1].val_accuracy > 0.9  # it learns


def test_same_seed_same_result_bit_for_bit(engine, small27):
    first, a = run(engine, small27, ("m", FAST, 7))
    second, b = run(engine, small27, ("m", FAST, 7))
    assert [(r.train_loss, r.val_loss) for r in a] == [(r.train_loss, r.val_loss) for r in b]
    for p, q in zip(weights(first.model("m")), weights(second.model("m")), strict=True):
        assert torch.equal(p, q)


def test_other_seed_other_result(engine, small27):
    _, a = run(engine, small27, ("m", FAST, 1))
    _, b = run(engine, small27, ("m", FAST, 2))
    assert a[-1].train_loss != b[-1].train_loss


def test_a_member_in_a_population_equals_the_member_alone(engine, small27):
    nadam = TrainConfig(epochs=2, optimizer="Nadam", neurons=30)
    _, together = run(engine, small27, ("x", FAST.replace(epochs=2), 3), ("y", nadam, 4))
    _, alone = run(engine, small27, ("y", nadam, 4))
    assert [r.val_loss for r in together if r.key == "y"] == [r.val_loss for r in alone]


def order_when_stopping(engine, data, victim):
    """(key, epoch) order of two members when ``victim`` is stopped right after a's epoch 1."""
    training = engine.train(
        data.x_train, data.y_train, 2, members(data, ("a", FAST, 0), ("b", FAST, 0))
    )
    seen = []
    for result in training:
        seen.append((result.key, result.epoch))
        if result.key == "a" and result.epoch == 1:
            training.stop(victim)
    return seen


def test_a_stop_takes_effect_before_the_members_next_epoch(engine, small27):
    assert order_when_stopping(engine, small27, "a") == [("a", 1), ("b", 1), ("b", 2), ("b", 3)]
    assert order_when_stopping(engine, small27, "b") == [("a", 1), ("b", 1), ("a", 2), ("a", 3)]


def test_divergence_is_reported_not_raised_and_others_go_on(engine, small27):
    wild = TrainConfig(
        epochs=4, optimizer="Adam", learn_rate=1e8, activation="linear", init_mode="normal"
    )
    _, results = run(engine, small27, ("wild", wild, 0), ("calm", FAST, 0))
    wild_results = [r for r in results if r.key == "wild"]
    assert wild_results[-1].status is Status.DIVERGED
    assert "non-finite" in wild_results[-1].reason
    assert len(wild_results) < 4
    assert results[-1].key == "calm" and results[-1].status is Status.FINISHED


def test_no_validation_indices_no_validation_metrics(engine, small27):
    member = Member("m", FAST.replace(epochs=1), np.arange(500), np.arange(0), 0)
    (result,) = engine.train(small27.x_train, small27.y_train, 2, [member])
    assert result.val_loss is None and result.val_accuracy is None


def test_member_keys_must_be_unique(engine, small27):
    with pytest.raises(ValueError, match="unique"):
        run(engine, small27, ("a", FAST, 0), ("a", FAST, 1))


def test_extend_adds_members_that_start_with_the_next_round(engine, small27):
    training = engine.train(small27.x_train, small27.y_train, 2, members(small27, ("a", FAST, 0)))
    first = training.step()
    training.extend(
        engine.train(small27.x_train, small27.y_train, 2, members(small27, ("b", FAST, 1)))
    )
    rest = list(training)
    assert [(r.key, r.epoch) for r in first + rest] == [
        ("a", 1),
        ("a", 2),
        ("b", 1),
        ("a", 3),
        ("b", 2),
        ("b", 3),
    ]
    _, alone = run(engine, small27, ("b", FAST, 1))  # joining changes nothing of b's own run
    assert [r.val_loss for r in rest if r.key == "b"] == pytest.approx(
        [r.val_loss for r in alone], rel=1e-4
    )
    with pytest.raises(ValueError, match="already training"):
        training.extend(
            engine.train(small27.x_train, small27.y_train, 2, members(small27, ("a", FAST, 2)))
        )


def test_augmented_scheduled_members_repeat_and_keep_their_own_run_in_a_population(engine, small27):
    nadam = FAST.replace(epochs=2, optimizer="Nadam", neurons=30)  # runs of its own, as above
    tuned = nadam.replace(augment_shift=2, augment_flip=True, lr_schedule="cosine", warmup_epochs=1)
    _, together = run(engine, small27, ("x", FAST.replace(epochs=2), 3), ("y", tuned, 4))
    _, alone = run(engine, small27, ("y", tuned, 4))
    _, again = run(engine, small27, ("y", tuned, 4))
    _, plain = run(engine, small27, ("y", nadam, 4))
    assert [r.val_loss for r in alone] == [r.val_loss for r in again]
    assert [r.val_loss for r in together if r.key == "y"] == [r.val_loss for r in alone]
    assert alone[0].train_loss != plain[0].train_loss
