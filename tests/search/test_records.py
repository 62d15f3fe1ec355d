"""The trial codec: what the driver stores on a trial reads back the same, in the same keys."""

import optuna
import pytest
from optuna.trial import TrialState

from deepnet.engine import EpochResult, Status
from deepnet.search.records import (
    HISTORY_FIELDS,
    TrialRecord,
    TrialStatus,
    encode_history,
    trial_params,
)
from deepnet.search.results import TrialRow, ranked, row_of, trial_rows


@pytest.fixture
def study():
    return optuna.create_study(direction="maximize")


def epoch(n, val_accuracy):
    return EpochResult(
        key="k",
        epoch=n,
        train_loss=0.5 / n,
        train_accuracy=0.8,
        val_loss=0.4,
        val_accuracy=val_accuracy,
        seconds=0.25,
        status=Status.RUNNING,
    )


def test_a_record_reads_back_as_written_and_only_set_fields_are_stored(study):
    trial = study.ask({"neurons": optuna.distributions.IntDistribution(1, 9)})
    history = encode_history({1: [epoch(1, 0.6), epoch(2, 0.7)], 0: [epoch(1, 0.5)]})
    written = TrialRecord(
        epochs_trained=2, seconds=0.75, history=history, fold_scores=(0.5, 0.7), std=0.1
    )
    written.write(trial.set_user_attr)
    frozen = study.tell(trial, 0.6)
    assert TrialRecord.of(frozen) == written
    assert set(frozen.user_attrs) == {"deepnet"}  # one attribute: one database write
    assert set(frozen.user_attrs["deepnet"]) == {
        "epochs_trained",
        "seconds",
        "history",
        "fold_scores",
        "std",
    }
    assert list(history) == ["0", "1"]  # folds in order, as JSON keys
    assert history["1"][1] == [0.25, 0.8, 0.4, 0.7, 0.25]
    assert len(HISTORY_FIELDS) == 5 and HISTORY_FIELDS[3] == "val_accuracy"


def test_studies_written_before_the_codec_read_unchanged(study):
    """Earlier versions stored each field as an attribute of its own: those read too."""
    trial = study.ask()
    for key, value in {
        "epochs_trained": 3,
        "seconds": 1.5,
        "history": {"0": [[1, 0.5, 1, 0.5, 0.1]]},
        "reason": "fold 0 diverged: non-finite loss",
        "pruned_at_epoch": 1,
        "interrupted": True,
    }.items():
        trial.set_user_attr(key, value)
    frozen = study.tell(trial, state=TrialState.FAIL)
    record = TrialRecord.of(frozen)
    assert record.interrupted and record.pruned_at_epoch == 1 and record.epochs_trained == 3
    assert record.reason.startswith("fold 0 diverged") and record.history["0"][0][1] == 0.5
    assert trial_rows(study) == []  # interrupted attempts are retried, not listed


def test_states_are_an_enum_equal_to_their_names(study):
    assert [TrialStatus.of(s) for s in TrialState] == [
        TrialStatus.RUNNING,
        TrialStatus.COMPLETE,
        TrialStatus.PRUNED,
        TrialStatus.FAILED,
        TrialStatus.WAITING,
    ]
    assert TrialStatus.COMPLETE == "complete" and f"{TrialStatus.FAILED}" == "failed"
    assert [s.finished for s in TrialStatus] == [True, True, True, False, False]
    study.enqueue_trial({"neurons": 4})
    row = row_of(study.trials[0])
    assert row.state is TrialStatus.WAITING and row.params == {"neurons": 4}
    assert trial_params(study.trials[0]) == {"neurons": 4}  # a queued trial's whole config


def test_a_row_given_its_state_as_text_holds_the_enum():
    def row(number, state, score=None):
        return TrialRow(0, number, state, score, None, (), 1, 0.0, {"n": number})

    rows = [row(0, "failed"), row(1, "pruned"), row(2, "complete", 0.9), row(3, "running")]
    assert all(isinstance(r.state, TrialStatus) for r in rows)
    assert [r.number for r in ranked(rows)] == [2, 1, 3, 0]
    with pytest.raises(ValueError, match="'done' is not a valid TrialStatus"):
        row(4, "done")
