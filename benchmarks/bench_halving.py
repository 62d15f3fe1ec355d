"""Halving side by side: KerasTuner's Hyperband against deepnet's successive halving, on the
seed's grid, timed to a given best score.

Both search the seed's space, optimizer (7) x activation (8) x neurons (5), 12 epochs at
most, batch 128, on MNIST 2 vs 7's training split, on every core, as their users would run
them:

- KerasTuner Hyperband (max_epochs 12, factor 3, one iteration) on the seed's network in
  Keras 3, scoring a trial by its best epoch's validation accuracy on one held-out third of
  the images (fold 1 of the same 3-fold split; KerasTuner has no cross-validation);
- deepnet: searches/seed-grid.toml as it stands (halving on epochs, 3-fold CV: a trial's
  score is its folds' mean accuracy at its last epoch).

Each prints its wall time, trials finished (run to the end or stopped by halving), its best
score and configuration, and the seconds from its start until a finished trial first scored
--target or more, by its own measure: KerasTuner's trial score (one third of the images, its
best epoch), deepnet's CV score at the last epoch a trial trained (the 3 folds' mean). Peer
code lives here only (its packages in benchmarks/requirements.txt), never in deepnet's install.

    python benchmarks/bench_halving.py [--peers kerastuner,deepnet] [--target 0.99]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter

import numpy as np

from bench_cifar10 import cpu_kind
from bench_peers import build_keras_model
from deepnet import SearchSpec, load_dataset, run_search

SEED_GRID = Path(__file__).resolve().parent.parent / "searches" / "seed-grid.toml"
MAX_EPOCHS, BATCH = 12, 128


@dataclass
class Timeline:
    """A search's finished trials as they came: (seconds since its start, score)."""

    start: float = field(default_factory=time.perf_counter)
    scores: list[tuple[float, float]] = field(default_factory=list)

    def add(self, score: float) -> None:
        self.scores.append((time.perf_counter() - self.start, score))

    def reached(self, target: float) -> float | None:
        """Seconds until a finished trial first scored ``target`` or more (None: never)."""
        return next((t for t, score in self.scores if score >= target), None)


@dataclass(frozen=True)
class Outcome:
    seconds: float
    trials: int
    best_score: float
    best: dict
    timeline: Timeline


def seed_space() -> dict[str, list]:
    """searches/seed-grid.toml's space (optimizer, activation, neurons)."""
    spec = SearchSpec.from_toml(SEED_GRID)
    dims = spec.stages[0].space.dims
    return {name: list(dims[name]) for name in ("optimizer", "activation", "neurons")}


def kerastuner_search(x: np.ndarray, y: np.ndarray) -> Outcome:
    import keras_tuner

    from deepnet import stratified_folds

    space = seed_space()

    def build(hp: keras_tuner.HyperParameters):
        activation = hp.Choice("activation", space["activation"])  # the order KerasTuner samples
        neurons = hp.Choice("neurons", space["neurons"])
        return build_keras_model(neurons, hp.Choice("optimizer", space["optimizer"]), activation)

    timeline = Timeline()

    class Tuner(keras_tuner.Hyperband):
        def on_trial_end(self, trial):
            super().on_trial_end(trial)
            score = trial.score
            if score is not None:
                timeline.add(float(score))

    train, val = stratified_folds(y, 3, 0)[0]
    images = x.astype(np.float32) / 255.0
    folder = tempfile.mkdtemp(prefix="kerastuner-")
    try:
        tuner = Tuner(
            build,
            objective="val_accuracy",
            max_epochs=MAX_EPOCHS,
            factor=3,
            hyperband_iterations=1,
            seed=0,
            directory=folder,
            project_name="seed-grid",
        )
        timeline.start = time.perf_counter()
        tuner.search(
            images[train],
            y[train],
            validation_data=(images[val], y[val]),
            batch_size=BATCH,
            verbose=0,
        )
        seconds = time.perf_counter() - timeline.start
        (best,) = tuner.get_best_hyperparameters(1)
        finished = len(tuner.oracle.trials)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    best_score = max(score for _, score in timeline.scores)
    chosen = {k: v for k, v in best.values.items() if not k.startswith("tuner/")}
    return Outcome(seconds, finished, best_score, chosen, timeline)


def deepnet_search(x: np.ndarray, y: np.ndarray) -> Outcome:
    import optuna

    spec = SearchSpec.from_toml(SEED_GRID)
    timeline = Timeline()

    def on_trial(trial) -> None:
        if trial.state == optuna.trial.TrialState.COMPLETE:
            timeline.add(float(trial.value))
        elif trial.state == optuna.trial.TrialState.PRUNED and trial.intermediate_values:
            timeline.add(float(trial.intermediate_values[max(trial.intermediate_values)]))

    timeline.start = time.perf_counter()
    outcome = run_search(
        spec, x, y, 2, storage=None, study_name="bench", data={}, n_jobs=-1, on_trial=on_trial
    )
    seconds = time.perf_counter() - timeline.start
    best = {k: outcome.best.params[k] for k in ("optimizer", "activation", "neurons")}
    return Outcome(seconds, len(timeline.scores), outcome.best.score, best, timeline)


PEERS: dict[str, tuple[str, Callable[[np.ndarray, np.ndarray], Outcome]]] = {
    "kerastuner": ("KerasTuner Hyperband", kerastuner_search),
    "deepnet": ("deepnet halving", deepnet_search),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", default=",".join(PEERS), help=f"any of {','.join(PEERS)}")
    parser.add_argument("--target", type=float, default=0.99, help="the score to time")
    args = parser.parse_args()
    names = args.peers.split(",")
    unknown = sorted(set(names) - set(PEERS))
    if unknown:
        raise SystemExit(f"--peers takes any of {sorted(PEERS)}; got {unknown}")
    data = load_dataset("mnist", (2, 7))
    x, y = data.x_train, data.y_train
    print(
        f"the seed's grid ({SEED_GRID.name}), at most {MAX_EPOCHS} epochs, {len(y)} images, "
        f"{os.cpu_count()} cores; CPU: {cpu_kind()}; target score {args.target}"
    )
    for name in names:
        label, search = PEERS[name]
        outcome = search(x, y)
        reached = outcome.timeline.reached(args.target)
        when = f"{reached:.1f} s" if reached is not None else "never"
        print(
            f"{label:<22} {outcome.seconds:7.1f} s  {outcome.trials:4d} trials finished  "
            f"best {outcome.best_score:.4f} {outcome.best}  reached {args.target}: {when}",
            flush=True,
        )


if __name__ == "__main__":
    main()
