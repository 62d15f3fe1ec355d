"""Ensembles: the plan and its bad values, the averaged model, the validation decision, the
memory estimate, and an ensemble refit's run folder read back by every command's code."""

import json

import numpy as np
import pytest
import torch

from deepnet import ConfigError, EnsemblePlan, RunFormatError, TrainConfig, load_run, train_ensemble
from deepnet.engine.memory import check_members_fit, training_bytes
from deepnet.ensemble import (
    Choice,
    Comparison,
    EnsembleKind,
    EnsembleNet,
    average_log_probabilities,
    fit_ensemble,
)
from deepnet.evaluate import evaluate, metrics_of
from deepnet.nn import SeedNet

CONFIG = TrainConfig(epochs=1, batch_size=64, optimizer="Adam")


@pytest.mark.parametrize(
    ("value", "plan"),
    [
        (3, EnsemblePlan(EnsembleKind.SEEDS, 3)),
        ("5", EnsemblePlan(EnsembleKind.SEEDS, 5)),
        (" Folds ", EnsemblePlan(EnsembleKind.FOLDS, None)),
    ],
)
def test_plan_parses_seeds_and_folds(value, plan):
    assert EnsemblePlan.parse(value) == plan
    assert EnsemblePlan.from_dict(plan.to_dict()) == plan


@pytest.mark.parametrize("value", [0, 1, -3, "0", "1", "-3", "fold", "2.5", 2.5, True, "", None])
def test_plan_refuses_bad_values_in_one_line(value):
    with pytest.raises(ConfigError, match=r"--ensemble takes a number of seeds K >= 2") as info:
        EnsemblePlan.parse(value)
    assert "\n" not in str(info.value)
    if value == "fold":
        assert "did you mean 'folds'" in str(info.value)


@pytest.mark.parametrize("share", [0, 1, -0.1, 1.5, "0.1"])
def test_plan_refuses_a_validation_share_outside_0_1(share):
    with pytest.raises(ConfigError, match=r"validation share .* between 0 and 1"):
        EnsemblePlan.parse(2, share)


def test_members_are_held_out_from_one_stratified_validation_share(small27):
    labels = small27.y_train
    seeds, validation = EnsemblePlan.parse(3).members(CONFIG, labels, seed=4)
    assert [m.seed for m in seeds] == [4, 5, 6] and [m.key for m in seeds] == [
        "seed-4",
        "seed-5",
        "seed-6",
    ]
    assert len(validation) == 120
    assert abs(labels[validation].mean() - labels.mean()) < 0.01  # stratified
    for member in seeds:
        assert np.array_equal(member.val_idx, validation)
        assert len(member.train_idx) == 1080
        assert not np.intersect1d(member.train_idx, validation).size
    folds, again = EnsemblePlan.parse("folds").for_cv(3).members(CONFIG, labels, seed=4)
    assert np.array_equal(again, validation)  # the same share for the same seed
    trained = np.concatenate([f.train_idx for f in folds])
    assert not np.intersect1d(trained, validation).size
    counts = np.bincount(trained, minlength=len(labels))  # each image of the rest in 2 of 3
    assert set(counts[np.setdiff1d(np.arange(len(labels)), validation)]) == {2}
    with pytest.raises(ConfigError, match="for_cv"):
        EnsemblePlan.parse("folds").members(CONFIG, labels, seed=4)


def test_ensemble_net_averages_the_members_probabilities(small27):
    nets = [SeedNet(CONFIG, 2).eval() for _ in range(3)]
    x = torch.rand(5, 1, 28, 28)
    expected = torch.stack([torch.softmax(n(x), 1) for n in nets]).mean(0)
    with torch.no_grad():
        got = torch.softmax(EnsembleNet(nets)(x), 1)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    sure = torch.tensor([[1000.0, -1000.0]])  # a class every member rules out stays finite
    assert torch.isfinite(average_log_probabilities([sure, sure])).all()


def test_the_choice_prefers_accuracy_then_loss(small27):
    y = small27.y_test[:4]
    right = torch.tensor(np.eye(2)[y] * 4.0, dtype=torch.float32)
    surer = right * 2
    wrong = -right
    assert Comparison(metrics_of(wrong, y), metrics_of(right, y)).better() is Choice.ENSEMBLE
    assert Comparison(metrics_of(right, y), metrics_of(wrong, y)).better() is Choice.SINGLE
    assert Comparison(metrics_of(right, y), metrics_of(surer, y)).better() is Choice.ENSEMBLE
    assert Comparison(metrics_of(right, y), metrics_of(right, y)).better() is Choice.SINGLE


def test_memory_estimate_grows_with_members_and_refuses_what_cannot_fit(small27):
    x = small27.x_train
    one, per_member = training_bytes(CONFIG, 1, 2, x)
    many, _ = training_bytes(CONFIG, 101, 2, x)
    assert per_member > 0 and many - one >= 100 * per_member
    assert (
        check_members_fit(CONFIG, 3, 2, x, available=10 * 2**30)
        == training_bytes(CONFIG, 3, 2, x)[0]
    )
    forty, _ = training_bytes(CONFIG, 40, 2, x)
    with pytest.raises(ConfigError) as info:
        check_members_fit(CONFIG, 500, 2, x, available=forty)
    message = str(info.value)
    assert "an ensemble of 500 members needs about" in message and "GiB" in message
    assert "use --ensemble 40 or fewer (ensemble=40)" in message
    with pytest.raises(ConfigError, match="free memory, or search smaller networks"):
        check_members_fit(CONFIG, 500, 2, x, available=one)


def test_fit_ensemble_decides_on_validation_only(small27):
    fitted = fit_ensemble(
        CONFIG, small27.x_train, small27.y_train, 2, EnsemblePlan.parse(2), seed=1
    )
    assert [m.member.key for m in fitted.usable] == ["seed-1", "seed-2"]
    val = fitted.validation_idx
    single = evaluate(fitted.usable[0].model, small27.x_train[val], small27.y_train[val])
    assert fitted.validation.single.accuracy == pytest.approx(single.accuracy)
    assert fitted.choice is fitted.validation.better()
    chosen = fitted.model()
    assert isinstance(chosen, EnsembleNet) == (fitted.choice is Choice.ENSEMBLE)
    assert isinstance(fitted.model(Choice.ENSEMBLE), EnsembleNet)
    assert fitted.model(Choice.SINGLE) is fitted.usable[0].model


@pytest.fixture(scope="module")
def ensemble_run(small27, small27_npz, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ens") / "refit"
    plan = EnsemblePlan.parse(3)
    result = train_ensemble(CONFIG, small27, plan, seed=2, run_dir=run_dir, data_path=small27_npz)
    return result, run_dir


def test_ensemble_run_folder_stores_every_member(ensemble_run):
    result, run_dir = ensemble_run
    record = json.loads((run_dir / "ensemble.json").read_text())
    assert record["members"] == ["members/seed-2", "members/seed-3", "members/seed-4"]
    assert record["plan"] == {"kind": "seeds", "size": 3, "validation_share": 0.1}
    assert json.loads((run_dir / "run.json").read_text())["kind"] == "ensemble"
    for key in ("seed-2", "seed-3", "seed-4"):
        member = load_run(run_dir / "members" / key)
        assert member.status == "finished" and member.options["seed"] == int(key[5:])
        assert len(member.history) == 1 and member.history[0]["val_accuracy"] is not None
    run = load_run(run_dir)
    assert run.ensemble == result.record and run.metrics == result.metrics
    chosen = result.record.test.of(result.record.choice)
    assert run.metrics == chosen


def test_ensemble_run_evaluates_to_its_saved_test_metrics(ensemble_run, small27):
    result, run_dir = ensemble_run
    run = load_run(run_dir)
    test = result.record.test
    assert evaluate(run.model(), small27.x_test, small27.y_test) == run.metrics
    both = {
        Choice.SINGLE: run.network(),
        Choice.ENSEMBLE: EnsembleNet([m.network() for m in run.member_runs()]),
    }
    for choice, model in both.items():
        assert evaluate(model, small27.x_test, small27.y_test) == test.of(choice)
    member = run.member_runs()[0]
    assert member.metrics == test.single
    probabilities = run.predict(small27.x_test[:20]).probabilities
    np.testing.assert_allclose(probabilities.sum(1), 1, rtol=1e-5)


def test_a_run_of_one_network_reads_as_before(small27, tmp_path):
    from deepnet import train

    train(CONFIG, small27, run_dir=tmp_path / "one")
    run = load_run(tmp_path / "one")
    assert run.ensemble is None and run.member_runs() == []
    assert not (tmp_path / "one" / "ensemble.json").exists()
    assert isinstance(run.model(), SeedNet)
    assert evaluate(run.model(), small27.x_test, small27.y_test) == run.metrics


def test_run_search_fits_the_best_configurations_ensemble(small27):
    from deepnet import SearchSpec, run_search

    spec = SearchSpec.from_mapping(
        {"strategy": "grid", "cv": 2, "space": {"optimizer": ["Adam"], "epochs": [1]}}
    )
    args = (spec, small27.x_train, small27.y_train, 2)
    options = {"storage": None, "study_name": "s", "data": {}, "n_jobs": 1}
    with pytest.raises(ConfigError, match="ensemble=1 is not allowed"):
        run_search(*args, **options, ensemble=1)
    outcome = run_search(*args, **options, ensemble="folds")
    fitted = outcome.ensemble
    assert fitted.plan.size == 2 and [m.member.key for m in fitted.usable] == ["fold-0", "fold-1"]
    assert all(m.member.config == outcome.best_config for m in fitted.members)
    assert run_search(*args, **{**options, "study_name": "t"}).ensemble is None


def test_an_ensemble_whose_every_member_diverged_is_saved_without_a_model(small27, tmp_path):
    config = TrainConfig(
        epochs=4, optimizer="Adam", learn_rate=1e8, activation="linear", init_mode="normal"
    )
    result = train_ensemble(config, small27, EnsemblePlan.parse(2), run_dir=tmp_path / "ens")
    assert result.metrics is None and result.record.members == ()
    run = load_run(tmp_path / "ens")
    assert run.status == "diverged" and run.metrics is None
    assert [load_run(p).status for p in sorted((tmp_path / "ens" / "members").iterdir())] == [
        "diverged",
        "diverged",
    ]
    with pytest.raises(RunFormatError, match=r"every member of the ensemble .* diverged"):
        run.model()
