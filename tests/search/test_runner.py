"""run_search on real data: scores, pruning, failures, resume, executors, lost workers,
stages."""

import statistics
from types import SimpleNamespace

import numpy as np
import pytest

from deepnet import ConfigError, DataError, SearchError, SearchSpec, Space, Stage, run_search
from deepnet.data import stratified_folds
from deepnet.search.driver import run_stage
from deepnet.search.events import DriverLoad, WorkerLost
from deepnet.search.executor import Pool, ProcessWorker
from deepnet.search.records import TrialRecord
from deepnet.search.results import trial_rows
from deepnet.search.strategies import max_epochs
from deepnet.search.study import open_study
from tests.search.conftest import scores

FAST = {"epochs": [2], "batch_size": [64]}


def spec(space, strategy="grid", **kw):
    return SearchSpec((Stage(Space.from_dict({**FAST, **space}), strategy, **kw),), cv=3, seed=0)


def search(tiny, the_spec, storage=None, n_jobs=1, **kw):
    x, y = tiny
    return run_search(
        the_spec, x, y, 2, storage=storage, study_name="t", data={"n": len(y)}, n_jobs=n_jobs, **kw
    )


def test_tiny_gives_three_folds_holding_both_classes(tiny):
    """The fixture these tests share: 2 vs 7, over 300 of each, both in every fold."""
    labels = tiny[1]
    assert len(labels) == 900 and np.bincount(labels).min() > 300
    for train, val in stratified_folds(labels, 3, seed=0):
        assert np.bincount(labels[val], minlength=2).min() > 100
        assert np.bincount(labels[train], minlength=2).min() > 200


@pytest.mark.parametrize("n_images", [300, 901])
def test_images_and_labels_of_different_lengths_are_refused(tiny, n_images):
    x, y = tiny
    images = np.concatenate([x, x])[:n_images]
    with pytest.raises(DataError, match=f"{n_images} images but 900 labels"):
        search((images, y), spec({"optimizer": ["Adam"]}), n_jobs=2)


def test_grid_scores_are_fold_means_with_histories(tiny):
    out = search(tiny, spec({"optimizer": ["Adam", "Nadam"], "neurons": [16, 30]}))
    assert len(out.rows) == 4 and all(r.state == "complete" for r in out.rows)
    for r in out.rows:
        assert r.score == pytest.approx(statistics.fmean(r.fold_scores))
        assert len(r.fold_scores) == 3 and r.std >= 0 and r.epochs == 2
        assert set(r.history) == {"0", "1", "2"} and all(len(h) == 2 for h in r.history.values())
    assert out.rows[0] is out.best and out.best.score == max(r.score for r in out.rows)
    assert out.best.score > 0.9


def test_same_seed_same_table(tiny):
    s = spec({"optimizer": ["Adam", "SGD"]})
    assert scores(search(tiny, s)) == scores(search(tiny, s))


def test_worker_processes_give_the_inline_results(tiny):
    s = spec({"optimizer": ["Adam", "Nadam", "RMSprop"]})
    inline, processes = search(tiny, s, n_jobs=1), search(tiny, s, n_jobs=2)
    for a, b in zip(scores(inline), scores(processes), strict=True):
        assert a[4] == b[4] and a[1] == pytest.approx(b[1], abs=1e-9)


def test_each_stage_reports_the_driver_load_of_its_workers(tiny):
    """Worker processes: the driver's own CPU time, per trial-epoch delivered; one worker in
    the driver's process: no load (its CPU time would be the training's)."""
    s = SearchSpec(
        (
            Stage(Space.from_dict({**FAST, "optimizer": ["Adam", "Nadam", "SGD"]}), "grid"),
            Stage(Space.from_dict({**FAST, "neurons": [16]}), "grid"),
        ),
        cv=3,
        seed=0,
    )
    events = []
    out = search(tiny, s, n_jobs=2, on_event=events.append)
    loads = [e for e in events if isinstance(e, DriverLoad)]
    assert [load.trial_epochs for load in loads] == [3 * 2, 1 * 2]  # trials x epochs
    for load in loads:
        assert 0 < load.driver_seconds < out.seconds
        assert load.training_seconds > 0 and load.workers_kept_busy > 0
    inline = []
    search(tiny, s, n_jobs=1, on_event=inline.append)
    assert not [e for e in inline if isinstance(e, DriverLoad)]


@pytest.fixture(scope="module")
def halving(tiny):
    """Six optimizers, 4 epochs, halving from epoch 1, on one inline worker: batches of 4
    trials x 3 folds."""
    s = spec(
        {"optimizer": ["SGD", "Adadelta", "Adagrad", "Adam", "Nadam", "RMSprop"], "epochs": [4]},
        "halving",
        min_epochs=1,
        reduction_factor=3,
    )
    return search(tiny, s)


def test_halving_prunes_hopeless_configurations(halving):
    pruned = [r for r in halving.rows if r.state == "pruned"]
    assert pruned and all(r.epochs < 4 and r.score is None for r in pruned)
    assert halving.best.params["optimizer"] != "SGD"  # plain SGD at lr 0.01 learns slowest


def test_new_trials_join_a_batch_that_pruning_thinned(halving):
    rows = halving.rows
    # j was asked after trial p was pruned, while r, already training then, trained on
    joined = [
        (p, r, j)
        for p in rows
        for r in rows
        for j in rows
        if r.started_at < p.finished_at <= j.started_at < r.finished_at
    ]
    assert joined
    assert sum(r.state == "complete" for r in rows) >= 1 and len(rows) == 6


def test_hyperband_and_tpe_run(tiny):
    hb = search(tiny, spec({"optimizer": ["SGD", "Adam", "Nadam"], "epochs": [3]}, "hyperband"))
    assert len(hb.rows) == 3 and hb.best.ok
    tpe = search(
        tiny,
        spec({"learn_rate": {"loguniform": [1e-3, 1e-2]}, "optimizer": ["Adam"]}, "tpe", n_iter=4),
    )
    assert len(tpe.rows) == 4 and all(1e-3 <= r.params["learn_rate"] <= 1e-2 for r in tpe.rows)


WILD = {
    "optimizer": ["Adam"],
    "learn_rate": [1e8],
    "activation": ["linear"],
    "init_mode": ["normal"],
    "epochs": [4],
}


def test_a_diverging_trial_fails_with_its_reason_and_the_search_goes_on(tiny):
    out = search(tiny, spec({**WILD, "learn_rate": [1e8, 1e-3]}))
    failed = [r for r in out.rows if r.state == "failed"]
    assert len(failed) == 1 and "diverged: non-finite" in failed[0].reason
    assert out.best.params["learn_rate"] == 1e-3


def test_every_trial_failing_is_an_error_that_says_why(tiny):
    with pytest.raises(
        SearchError,
        match=r"every trial failed \(1 x fold \d diverged: "
        r"non-finite.*Try smaller learning rates",
    ):
        search(tiny, spec(WILD))


def test_stages_start_from_the_best_so_far(tiny):
    two = SearchSpec(
        (
            Stage(Space.from_dict({**FAST, "optimizer": ["SGD", "Nadam"]}), "grid"),
            Stage(Space.from_dict({"neurons": [16, 30]}), "grid"),
        ),
        cv=3,
    )
    out = search(tiny, two)
    second = [r for r in out.rows if r.stage == 1]
    assert len(second) == 2
    assert all(r.params["optimizer"] == "Nadam" and r.params["epochs"] == 2 for r in second)


def test_interrupted_search_resumes_without_retraining(tiny, tmp_path):
    s = spec({"optimizer": ["Adam", "Nadam", "SGD", "RMSprop"]})
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    finished = []

    def stop_after_two(trial):
        finished.append(trial.number)
        if len(finished) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        search(tiny, s, storage=storage, on_trial=stop_after_two)
    trained = []
    resumed = search(tiny, s, storage=storage, on_trial=lambda t: trained.append(t.params))
    assert len(trained) == 2  # only the two that had not finished
    assert scores(resumed) == scores(search(tiny, s))  # the uninterrupted table


def test_a_study_with_another_space_is_refused(tiny, tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    search(tiny, spec({"optimizer": ["Adam"]}), storage=storage)
    with pytest.raises(SearchError, match="already holds a search with a different spec"):
        search(tiny, spec({"optimizer": ["Nadam"]}), storage=storage)


def test_a_storage_that_cannot_be_opened(tiny, tmp_path):
    with pytest.raises(SearchError, match="the study storage nosuchdb://x uses 'nosuchdb'"):
        search(tiny, spec({"optimizer": ["Adam"]}), storage="nosuchdb://x")


def test_more_folds_than_the_smallest_class(tiny):
    x, y = tiny
    few = (x[:12], y[:12])
    with pytest.raises(Exception, match="cannot be stratified"):
        search(few, SearchSpec((Stage(Space.from_dict({"epochs": [1]})),), cv=10))


def test_interrupted_halving_resumes_without_retraining_finished_trials(tiny, tmp_path):
    s = spec(
        {"optimizer": ["SGD", "Adagrad", "Adam", "Nadam", "RMSprop"], "epochs": [3]}, "halving"
    )
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    first = []

    def stop_after_three(trial):
        first.append((trial.state.name, trial.params["optimizer"]))
        if len(first) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        search(tiny, s, storage=storage, on_trial=stop_after_three)
    second = []
    out = search(tiny, s, storage=storage, on_trial=lambda t: second.append(t.params["optimizer"]))
    finished_before = {optimizer for _, optimizer in first}
    assert finished_before.isdisjoint(second)  # complete and pruned trials are not rerun
    assert len(second) == 2 and len(out.rows) == 5


def test_halving_with_two_worker_processes_is_repeatable(tiny):
    s = spec(
        {"optimizer": ["SGD", "Adagrad", "Adam", "Nadam", "RMSprop"], "epochs": [3]}, "halving"
    )
    assert scores(search(tiny, s, n_jobs=2)) == scores(search(tiny, s, n_jobs=2))


def test_configurations_differing_only_in_epochs_share_one_run(tiny):
    out = search(tiny, spec({"optimizer": ["Adam", "Nadam"], "epochs": [1, 3]}))
    assert len(out.rows) == 4 and all(r.state == "complete" for r in out.rows)
    for optimizer in ("Adam", "Nadam"):
        short, long = sorted(
            (r for r in out.rows if r.params["optimizer"] == optimizer),
            key=lambda r: r.params["epochs"],
        )
        assert short.epochs == 1 and long.epochs == 3
        # the 1-epoch trial reports the 3-epoch run's first epoch
        for fold, rows in short.history.items():
            assert rows == long.history[fold][:1]
        assert short.score == pytest.approx(
            statistics.fmean(h[0][3] for _, h in sorted(long.history.items()))
        )


FOUR = {"optimizer": ["Adam", "Nadam", "SGD", "RMSprop"]}


def _process_pool(tiny, n: int, killed: int) -> Pool:
    """``n`` worker processes holding the images, the last ``killed`` of them SIGKILLed (the
    driver hands batches out from the end: they are the first to get one)."""
    workers = [ProcessWorker() for _ in range(n)]
    for worker in workers:
        worker.load(*tiny, 2)
    for worker in workers[n - killed :]:
        worker.process.kill()
        worker.process.wait()
    return Pool(workers)


def _run_stage(tiny, the_spec, pool, storage=None, on_event=None):
    """One stage through the driver, in the study run_search would open for it."""
    stage = the_spec.stages[0]
    folds = stratified_folds(tiny[1], the_spec.cv, the_spec.seed)
    what = {"stage": stage.to_json(), "cv": 3, "seed": 0, "data": {"n": len(tiny[1])}}
    study = open_study(storage, "t", stage, what, 0, max_epochs(stage.space))
    run_stage(study, stage, stage.space.distributions(), folds, 0, pool, on_event=on_event)
    return study


def test_a_lost_worker_costs_only_its_trials_in_flight(tiny):
    s = spec(FOUR)
    events = []
    with _process_pool(tiny, 2, killed=1) as pool:
        survivor = pool.workers[0]
        study = _run_stage(tiny, s, pool, on_event=events.append)
        assert pool.workers == [survivor]
    interrupted = [t for t in study.trials if TrialRecord.of(t).interrupted]
    assert len(interrupted) == 2  # its batch: half of the queue
    assert all("worker was lost" in TrialRecord.of(t).reason for t in interrupted)
    lost = [e for e in events if isinstance(e, WorkerLost)]
    assert lost == [
        WorkerLost(lost[0].worker, lost[0].reason, tuple(t.number for t in interrupted))
    ]
    assert "worker process" in lost[0].worker and "died" in lost[0].reason
    rows = trial_rows(study)
    assert len(rows) == 4 and all(r.state == "complete" for r in rows)  # none failed
    assert scores(SimpleNamespace(rows=rows)) == scores(search(tiny, s))


def test_every_worker_lost_is_an_error_and_the_rerun_resumes(tiny, tmp_path):
    s = spec(FOUR)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    with (
        _process_pool(tiny, 2, killed=2) as pool,
        pytest.raises(SearchError, match=r"every worker is lost .*run the same command again"),
    ):
        _run_stage(tiny, s, pool, storage)
    trained = []
    resumed = search(tiny, s, storage=storage, on_trial=lambda t: trained.append(t.number))
    assert len(trained) == 4  # the lost ones, from scratch
    assert scores(resumed) == scores(search(tiny, s))


@pytest.mark.parametrize(
    ("space", "error", "message"),
    [
        ({"conv_blocks": [1, 3]}, DataError, "too small for conv_blocks=3: .* at least 36x36"),
        ({"augment_shift": [2, 20]}, ConfigError, "augment_shift=20 .* use augment_shift=14"),
    ],
)
def test_a_space_too_big_for_the_images_is_refused_before_any_worker_starts(
    tiny, tmp_path, space, error, message
):
    with pytest.raises(error, match=message):
        search(tiny, spec(space), storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert not (tmp_path / "study.db").exists()  # nothing was created
