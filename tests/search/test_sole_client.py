"""The driver's storage serves reads from memory: what it reads equals what a fresh reader
of the same database gets, after every kind of write a search makes."""

import time

import optuna
import sqlalchemy
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
    held = study.get_trials(deepcopy=False)
    # finished trials are in the database whole without a flush; a running one's writes wait
    fresh = optuna.load_study(study_name="s", storage=url).get_trials(deepcopy=False)
    assert [_fields(t) for t in held[:6]] == [_fields(t) for t in fresh[:6]]
    assert fresh[6].state is TrialState.RUNNING and fresh[6].intermediate_values == {}
    storage.flush()
    fresh = optuna.load_study(study_name="s", storage=url).get_trials(deepcopy=False)
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


def _commits(storage: SoleClientStorage) -> list[int]:
    """A counter of the transactions committed through ``storage``'s database engine."""
    counted = [0]
    sqlalchemy.event.listen(
        storage._backend.engine, "commit", lambda _: counted.__setitem__(0, counted[0] + 1)
    )
    return counted


def test_a_trials_writes_go_in_a_few_transactions(tmp_path):
    storage = SoleClientStorage(open_storage(f"sqlite:///{tmp_path / 'study.db'}"))
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize")
    assert study.trials == []  # the one read of the study from the database
    commits = _commits(storage)
    study.enqueue_trial({"neurons": 8, "optimizer": "SGD"})
    trial = study.ask(SPACE)
    for epoch in range(1, 13):
        trial.report(0.5 + epoch / 100, epoch)
    trial.set_user_attr("deepnet", {"epochs_trained": 12})
    study.tell(trial, 0.62)
    # queue, start, then the 2 parameters, 12 epochs and the record in one, then the end
    assert commits[0] == 4
    fresh = optuna.load_study(study_name="s", storage=storage._backend.url).trials[0]
    assert _fields(fresh) == _fields(study.trials[0])


def test_waiting_writes_go_out_after_flush_seconds_while_trials_run(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    storage = SoleClientStorage(open_storage(url), flush_seconds=0.2)
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize")
    trial = study.ask(SPACE)
    trial.report(0.5, 1)
    assert optuna.load_study(study_name="s", storage=url).trials[0].intermediate_values == {}
    time.sleep(0.25)
    trial.report(0.6, 2)  # the first write after flush_seconds flushes both
    fresh = optuna.load_study(study_name="s", storage=url).trials[0]
    assert fresh.intermediate_values == {1: 0.5, 2: 0.6}
    assert fresh.params == trial.params
