"""Reopening a study after its process died."""

from optuna.trial import TrialState

from deepnet import Space, Stage
from deepnet.search.records import TrialRecord
from deepnet.search.study import Queue, open_study

SPACE = Space.from_dict({"optimizer": ["Adam", "Nadam"], "neurons": [8, 16]})


STAGE = Stage(SPACE, "grid")


def candidates(stage, seed):
    return stage.candidates(seed)


def reopen(storage):
    return open_study(storage, "s", STAGE, {"k": 1}, seed=0, max_epochs=2)


def configs(queue):
    return sorted(map(str, queue.configs))


CONFIGS = sorted(str({"optimizer": o, "neurons": n}) for o in ("Adam", "Nadam") for n in (8, 16))


def test_the_queue_holds_the_candidates_no_trial_holds(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    queue = Queue(reopen(storage), candidates(STAGE, 0))
    assert len(queue) == 4 and configs(queue) == CONFIGS
    first = queue.ask(SPACE.distributions())
    assert len(queue) == 3 and first.params == candidates(STAGE, 0)[0]
    first.study.tell(first, 0.5)
    asked = queue.ask(SPACE.distributions())  # running when the process dies
    study = reopen(storage)
    assert study.trials[asked.number].state is TrialState.FAIL  # failed, and queued again
    assert TrialRecord.of(study.trials[asked.number]).interrupted
    queue = Queue(study, candidates(STAGE, 0))
    assert len(queue) == 3 and str(first.params) not in configs(queue)
    assert [queue.ask(SPACE.distributions()) for _ in range(3)][-1] is not None
    assert queue.ask(SPACE.distributions()) is None and len(queue) == 0


def test_a_trial_killed_while_being_asked_is_queued_once_with_its_whole_config(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = reopen(storage)
    study.enqueue_trial(candidates(STAGE, 0)[0])
    killed = study.ask()  # popped from the queue; the process dies before any suggest
    assert killed.params == {}
    queue = Queue(reopen(storage), candidates(STAGE, 0))
    assert len(queue) == 4 and configs(queue) == CONFIGS


def test_a_trial_left_waiting_is_asked_first(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    reopen(storage).enqueue_trial(candidates(STAGE, 0)[2])  # the process dies before asking
    queue = Queue(reopen(storage), candidates(STAGE, 0))
    assert len(queue) == 4 and queue.waiting == 1 and len(queue.configs) == 3
    assert queue.ask(SPACE.distributions()).params == candidates(STAGE, 0)[2]


def test_an_sqlite_study_commits_without_an_fsync_per_transaction(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = reopen(storage)
    with study._storage._backend.engine.connect() as connection:
        pragma = connection.exec_driver_sql
        modes = [pragma(f"PRAGMA {p}").scalar() for p in ("journal_mode", "synchronous")]
    assert modes == ["wal", 1]  # synchronous=NORMAL is 1
    study.enqueue_trial(candidates(STAGE, 0)[0])
    study.tell(study.ask(), 0.5)
    assert reopen(storage).trials[0].value == 0.5  # and reopening it reads what was written
