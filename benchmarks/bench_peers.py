"""One grid through every peer and through deepnet, side by side in one run.

Each searches optimizer x neurons on MNIST 2 vs 7 (the full training split), 3-fold
stratified CV, 12 epochs, batch 128, the seed's network (Conv 4 -> Conv 8 -> MaxPool ->
Dropout 0.25 -> Dense -> Dropout 0.5 -> Dense 2, relu), on every core, as its users would
run it:

- scikeras + scikit-learn GridSearchCV(n_jobs=-1): one Keras fit per process;
- skorch + GridSearchCV(n_jobs=-1): one PyTorch fit per process;
- Optuna + a plain PyTorch loop: a GridSampler study, n_jobs = the cores (threads, one torch
  thread each), the three fold models trained epoch by epoch side by side so that the mean
  validation accuracy is reported every epoch to its MedianPruner;
- deepnet: a grid without pruning (n_jobs=-1); and with --precision bf16 (bf16 products),
  where the CPU has AVX512_BF16.

Peers run in turn, in the order given; each prints wall time, seconds per CV fit and its best
score, and the summary gives deepnet's speed-up over each. Peer code lives here only (its
packages in benchmarks/requirements.txt), never in deepnet's install.

    python benchmarks/bench_peers.py [--peers scikeras,skorch,optuna,deepnet,deepnet-bf16]
        [--epochs 12]
        [--optimizers Adam,Nadam,RMSprop] [--neurons 25,125]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter

import numpy as np

from bench_cifar10 import cpu_kind
from deepnet import SearchSpec, Space, Stage, load_dataset, run_search
from deepnet.engine import kernels
from deepnet.search.executor import Executor

FOLDS, BATCH = 3, 128
# Keras' defaults for each optimizer (learning rate, and RMSprop's rho and epsilon)
TORCH_OPTIMIZERS = {
    "Adam": ("Adam", {"lr": 1e-3, "eps": 1e-7}),
    "Nadam": ("NAdam", {"lr": 1e-3, "eps": 1e-7}),
    "RMSprop": ("RMSprop", {"lr": 1e-3, "alpha": 0.9, "eps": 1e-7}),
}


@dataclass(frozen=True)
class Grid:
    optimizers: list[str]
    neurons: list[int]
    epochs: int

    @property
    def fits(self) -> int:
        return FOLDS * len(self.optimizers) * len(self.neurons)


@dataclass(frozen=True)
class Outcome:
    """What one peer's search took and found."""

    seconds: float
    best_score: float
    best: dict
    pruned: int = 0  # trials its pruner stopped early


def _cv():
    from sklearn.model_selection import StratifiedKFold

    return StratifiedKFold(FOLDS, shuffle=True, random_state=0)


def _scaled(x: np.ndarray) -> np.ndarray:
    """uint8 images (n, 28, 28, 1) as float32 in [0, 1], channels last as Keras takes them."""
    return x.astype(np.float32) / 255.0


def _channels_first(x: np.ndarray) -> np.ndarray:
    """The same as (n, 1, 28, 28), as PyTorch takes them."""
    return np.ascontiguousarray(_scaled(x).transpose(0, 3, 1, 2))


def build_keras_model(neurons: int, opt_name: str, activation: str = "relu"):
    """The seed's create_model in Keras 3 (``activation``: the convolutions' and hidden
    layer's)."""
    import keras
    from keras import layers

    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            layers.Conv2D(4, 3, activation=activation),
            layers.Conv2D(8, 3, activation=activation),
            layers.MaxPooling2D(2),
            layers.Dropout(0.25),
            layers.Flatten(),
            layers.Dense(neurons, activation=activation),
            layers.Dropout(0.5),
            layers.Dense(2, activation="softmax"),
        ]
    )
    model.compile(optimizer=opt_name, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def scikeras_search(x: np.ndarray, y: np.ndarray, grid: Grid) -> Outcome:
    from scikeras.wrappers import KerasClassifier
    from sklearn.model_selection import GridSearchCV

    clf = KerasClassifier(
        model=build_keras_model,
        model__neurons=16,
        model__opt_name="Adadelta",
        epochs=grid.epochs,
        batch_size=BATCH,
        verbose=0,
    )
    param_grid = {"model__opt_name": grid.optimizers, "model__neurons": grid.neurons}
    search = GridSearchCV(clf, param_grid, cv=_cv(), n_jobs=-1)
    start = time.perf_counter()
    search.fit(_scaled(x), y)
    best = {k.removeprefix("model__"): v for k, v in search.best_params_.items()}
    return Outcome(time.perf_counter() - start, float(search.best_score_), best)


def torch_seed_net(neurons: int):
    """The seed's network as PyTorch layers, giving logits (images (n, 1, 28, 28))."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.ReLU(),
        nn.Conv2d(4, 8, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Dropout(0.25),
        nn.Flatten(),
        nn.Linear(8 * 12 * 12, neurons),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(neurons, 2),
    )


def torch_optimizer(name: str, parameters):
    import torch

    cls, kwargs = TORCH_OPTIMIZERS[name]
    return getattr(torch.optim, cls)(parameters, **kwargs)


def skorch_search(x: np.ndarray, y: np.ndarray, grid: Grid) -> Outcome:
    import torch
    from sklearn.model_selection import GridSearchCV
    from skorch import NeuralNetClassifier

    class SeedNet(torch.nn.Module):
        def __init__(self, neurons: int = 16):
            super().__init__()
            self.layers = torch_seed_net(neurons)

        def forward(self, images):
            return self.layers(images)

    net = NeuralNetClassifier(
        SeedNet,
        criterion=torch.nn.CrossEntropyLoss,
        max_epochs=grid.epochs,
        batch_size=BATCH,
        train_split=None,
        verbose=0,
    )
    param_grid = {
        "module__neurons": grid.neurons,
        "optimizer": [getattr(torch.optim, TORCH_OPTIMIZERS[o][0]) for o in grid.optimizers],
        "optimizer__eps": [1e-7],
        "optimizer__lr": [1e-3],
    }
    search = GridSearchCV(net, param_grid, cv=_cv(), n_jobs=-1)
    start = time.perf_counter()
    search.fit(_channels_first(x), y.astype(np.int64))
    params = search.best_params_
    best = {"opt_name": params["optimizer"].__name__, "neurons": params["module__neurons"]}
    return Outcome(time.perf_counter() - start, float(search.best_score_), best)


def optuna_search(x: np.ndarray, y: np.ndarray, grid: Grid) -> Outcome:
    import optuna
    import torch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # each of the study's threads trains on its own core
    images, labels = torch.from_numpy(_channels_first(x)), torch.from_numpy(y.astype(np.int64))
    folds = [(torch.from_numpy(a), torch.from_numpy(b)) for a, b in _cv().split(x, y)]

    def objective(trial: optuna.Trial) -> float:
        optimizer_name = trial.suggest_categorical("optimizer", grid.optimizers)
        neurons = trial.suggest_categorical("neurons", grid.neurons)
        torch.manual_seed(trial.number)
        models = [torch_seed_net(neurons) for _ in folds]
        optimizers = [torch_optimizer(optimizer_name, m.parameters()) for m in models]
        score = 0.0
        for epoch in range(grid.epochs):
            scores = []
            for model, optimizer, (train, val) in zip(models, optimizers, folds, strict=True):
                model.train()
                for batch in train[torch.randperm(len(train))].split(BATCH):
                    loss = torch.nn.functional.cross_entropy(model(images[batch]), labels[batch])
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                model.eval()
                with torch.no_grad():
                    predicted = model(images[val]).argmax(1)
                scores.append((predicted == labels[val]).double().mean().item())
            score = statistics.fmean(scores)
            trial.report(score, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return score

    space = {"optimizer": grid.optimizers, "neurons": grid.neurons}
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.GridSampler(space, seed=0),
        pruner=optuna.pruners.MedianPruner(),
    )
    trials = len(grid.optimizers) * len(grid.neurons)
    start = time.perf_counter()
    try:
        study.optimize(objective, n_trials=trials, n_jobs=os.cpu_count() or 1)
    finally:
        torch.set_num_threads(before)  # the peers after this one get theirs back
    seconds = time.perf_counter() - start
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    best = {"opt_name": study.best_params["optimizer"], "neurons": study.best_params["neurons"]}
    return Outcome(seconds, study.best_value, best, pruned)


def deepnet_search(x: np.ndarray, y: np.ndarray, grid: Grid, precision: str = "fp32") -> Outcome:
    space = Space.from_dict(
        {
            "optimizer": grid.optimizers,
            "neurons": grid.neurons,
            "epochs": [grid.epochs],
            "batch_size": [BATCH],
        }
    )
    spec = SearchSpec((Stage(space, "grid"),), cv=FOLDS, seed=0)
    start = time.perf_counter()
    where = Executor(precision=precision)
    outcome = run_search(
        spec, x, y, 2, storage=None, study_name="bench", data={}, n_jobs=-1, executor=where
    )
    seconds = time.perf_counter() - start
    best = {"opt_name": outcome.best.params["optimizer"], "neurons": outcome.best.params["neurons"]}
    return Outcome(seconds, outcome.best.score, best)


PEERS: dict[str, tuple[str, Callable[[np.ndarray, np.ndarray, Grid], Outcome]]] = {
    "scikeras": ("scikeras + GridSearchCV", scikeras_search),
    "skorch": ("skorch + GridSearchCV", skorch_search),
    "optuna": ("Optuna + PyTorch loop", optuna_search),
    "deepnet": ("deepnet", deepnet_search),
    "deepnet-bf16": ("deepnet --precision bf16", partial(deepnet_search, precision="bf16")),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    runnable = [name for name in PEERS if name != "deepnet-bf16" or kernels.bf16_products()]
    choices = f"any of {','.join(PEERS)} [{','.join(runnable)}]"
    parser.add_argument("--peers", default=",".join(runnable), help=choices)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--optimizers", default="Adam,Nadam,RMSprop")
    parser.add_argument("--neurons", default="25,125")
    args = parser.parse_args()
    names = args.peers.split(",")
    unknown = sorted(set(names) - set(PEERS))
    if unknown or "deepnet" not in names:
        raise SystemExit(f"--peers takes deepnet and any of {sorted(PEERS)}; got {unknown}")
    grid = Grid(args.optimizers.split(","), [int(n) for n in args.neurons.split(",")], args.epochs)
    data = load_dataset("mnist", (2, 7))
    x, y = data.x_train, data.y_train
    print(
        f"optimizer {grid.optimizers} x neurons {grid.neurons}, {FOLDS}-fold CV = {grid.fits} "
        f"fits of {grid.epochs} epochs on {len(y)} images, {os.cpu_count()} cores; "
        f"CPU: {cpu_kind()}"
    )
    outcomes: dict[str, Outcome] = {}
    for name in names:
        label, search = PEERS[name]
        outcome = outcomes[name] = search(x, y, grid)
        pruned = f", {outcome.pruned} trials pruned" if outcome.pruned else ""
        print(
            f"{label:<26} {outcome.seconds:7.1f} s  {outcome.seconds / grid.fits:6.2f} s per "
            f"fit  best CV {outcome.best_score:.4f}  {outcome.best}{pruned}",
            flush=True,
        )
    for ours in (name for name in outcomes if name.startswith("deepnet")):
        # each deepnet against every peer; deepnet --precision bf16 also against deepnet
        for name in (n for n in outcomes if n != ours and n != "deepnet-bf16"):
            if ours == "deepnet" and name == "deepnet":
                continue
            difference = outcomes[ours].best_score - outcomes[name].best_score
            print(
                f"{PEERS[ours][0]} is {outcomes[name].seconds / outcomes[ours].seconds:5.2f}x "
                f"faster per CV fit than {PEERS[name][0]}; best-score difference {difference:+.4f}"
            )


if __name__ == "__main__":
    main()
