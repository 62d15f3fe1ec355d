"""Reopening a study after its process died."""

from optuna.trial import TrialState

from deepnet import Space, Stage
from deepnet.search.study import open_study

SPACE = Space.from_dict({"optimizer": ["Adam", "Nadam"], "neurons": [8, 16]})


def reopen(storage):
    return open_study(storage, "s", Stage(SPACE, "grid"), {"k": 1}, seed=0, max_epochs=2)


def test_a_trial_killed_while_being_asked_is_queued_once_with_its_whole_config(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = reopen(storage)
    assert len(study.get_trials(states=(TrialState.WAITING,))) == 4
    killed = study.ask()  # popped from the queue; the process dies before any suggest
    assert killed.params == {}
    study = reopen(storage)
    queued = [
        t.system_attrs["fixed_params"] for t in study.get_trials(states=(TrialState.WAITING,))
    ]
    assert len(queued) == 4
    assert sorted(map(str, queued)) == sorted(
        str(c) for c in [{"optimizer": o, "neurons": n} for o in ("Adam", "Nadam") for n in (8, 16)]
    )
