"""The driver's storage serves reads from memory: what it reads equals what a fresh reader
of the same database gets, after every kind of write a search makes."""

import optuna
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import TrialState

from deepnet.search.sole_client import SoleClientStorage
from deepnet.search.storage import open_storage

SPACE = {"neurons": IntDistribution(8, 64), "optimizer": CategoricalDistribution(["Adam", "SGD"])}


def _fields(trial: optuna.trial.FrozenTrial) -> tuple:
    return (
        trial.number,
        trial.state,
        trial.values,
        trial.params,
        trial.distributions,
        trial.intermediate_values,
        trial.user_attrs,
        trial.system_attrs,
    )


def test_reads_from_memory_equal_the_database(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    storage = SoleClientStorage(open_storage(url))
    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2)
    study = optuna.create_study(
        storage=storage, study_name="s", direction="maximize", pruner=pruner
    )
    for i in range(6):
        study.enqueue_trial({"neurons": 8 + i, "optimizer": "Adam" if i % 2 else "SGD"})
    states = []
    for i in range(6):
        trial = study.ask(SPACE)
        for epoch in (1, 2, 3):
            trial.report(0.9 - 0.1 * i + 0.01 * epoch, epoch)  # later ones worse
            if trial.should_prune():
                break
        trial.set_user_attr("deepnet", {"epochs_trained": epoch})
        state = TrialState.PRUNED if epoch < 3 else TrialState.COMPLETE
        study.tell(trial, 0.5 + i if state is TrialState.COMPLETE else None, state=state)
        states.append(state)
    running = study.ask(SPACE)
    running.report(0.7, 1)
    assert TrialState.PRUNED in states and TrialState.COMPLETE in states  # it pruned
    fresh = optuna.load_study(study_name="s", storage=url).get_trials(deepcopy=False)
    held = study.get_trials(deepcopy=False)
    assert [_fields(t) for t in held] == [_fields(t) for t in fresh]
    for a, b in zip(held, fresh, strict=True):
        times = ((a.datetime_start, b.datetime_start), (a.datetime_complete, b.datetime_complete))
        for mine, theirs in times:
            assert (mine is None) == (theirs is None)
            if mine is not None:
                assert abs((mine - theirs).total_seconds()) < 1
    assert study._storage.get_trial(running._trial_id).intermediate_values == {1: 0.7}


def test_a_study_already_in_the_database_is_read_once_then_extended(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    first = optuna.create_study(storage=url, study_name="s")
    first.optimize(lambda t: t.suggest_int("neurons", 8, 64), n_trials=3)
    study = optuna.load_study(study_name="s", storage=SoleClientStorage(open_storage(url)))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    study.optimize(lambda t: t.suggest_int("neurons", 8, 64), n_trials=2)
    assert len(optuna.load_study(study_name="s", storage=url).trials) == 5
    assert len(study.trials) == 5
