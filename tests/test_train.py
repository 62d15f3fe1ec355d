"""End-to-end acceptance on the full 2-vs-7 data: the seed's two networks, 12 epochs each."""

import pytest

from deepnet import ConfigError, Status, TrainConfig
from deepnet.errors import RunBusyError
from deepnet.train import train
from tests.test_lock import hold_in_another_process

SEED_FINAL = TrainConfig(
    optimizer="Nadam",
    learn_rate=0.002,
    conv_activation="relu",
    dense_activation="linear",
    init_mode="lecun_uniform",
    weight_constraint=3,
    neurons=30,
    conv_dropout=0.25,
    dropout_rate=0.5,
)


@pytest.mark.slow
def test_seed_baseline_reaches_the_seed_accuracy(mnist27):
    result = train(TrainConfig(), mnist27)  # Adadelta, 12 epochs, batch 128, defaults
    assert result.status is Status.FINISHED and len(result.history) == 12
    assert result.metrics.accuracy >= 0.983  # the seed reported 0.9859
    assert result.history[-1].val_accuracy >= 0.98


@pytest.mark.slow
def test_seed_final_model_reaches_its_accuracy(mnist27):
    result = train(SEED_FINAL, mnist27)
    assert result.metrics.accuracy >= 0.988  # the seed reported 0.9908
    assert result.history[-1].train_loss < result.history[0].train_loss


@pytest.mark.parametrize("seed", [-1, 1.5, "x", True, 2**31])
def test_a_bad_seed_is_named(small27, tmp_path, seed):
    rule = rf"^seed={seed!r} is not allowed: use an integer from 0 to 2147483647"
    with pytest.raises(ConfigError, match=rule):
        train(SEED_FINAL, small27, seed=seed, run_dir=tmp_path / "run", on_epoch=pytest.fail)
    assert not (tmp_path / "run").exists()


def test_a_train_into_a_busy_folder_is_refused(small27, tmp_path):
    run_dir = tmp_path / "run"
    holder = hold_in_another_process(run_dir)
    try:
        with pytest.raises(RunBusyError, match=rf"in use by process {holder.pid} on "):
            train(SEED_FINAL, small27, run_dir=run_dir, on_epoch=pytest.fail)
    finally:
        holder.kill()
        holder.wait()
    assert [p.name for p in run_dir.iterdir()] == ["lock.json"]  # the holder's, nothing else
