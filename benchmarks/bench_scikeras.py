"""The same grid through scikeras + scikit-learn GridSearchCV and through deepnet, side by side.

Both search optimizer x neurons on MNIST 2 vs 7 (the full training split), 3-fold CV, 12
epochs, batch 128, the seed's network (Conv 4 -> Conv 8 -> MaxPool -> Dropout 0.25 -> Dense
-> Dropout 0.5 -> Dense 2, relu), on every core: GridSearchCV(n_jobs=-1) runs one Keras fit
per process; deepnet runs a grid without pruning (n_jobs=-1). Prints wall times, seconds per
CV fit, the ratio, and both best scores.

    python benchmarks/bench_scikeras.py [--epochs 12] [--optimizers Adam,Nadam,RMSprop]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter

import numpy as np

from deepnet import SearchSpec, Space, Stage, load_dataset, run_search


def build_keras_model(neurons: int, opt_name: str):
    """The seed's create_model in Keras 3."""
    import keras
    from keras import layers

    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            layers.Conv2D(4, 3, activation="relu"),
            layers.Conv2D(8, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Dropout(0.25),
            layers.Flatten(),
            layers.Dense(neurons, activation="relu"),
            layers.Dropout(0.5),
            layers.Dense(2, activation="softmax"),
        ]
    )
    model.compile(optimizer=opt_name, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def scikeras_search(x, y, grid: dict, epochs: int) -> tuple[float, float, dict]:
    from scikeras.wrappers import KerasClassifier
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    clf = KerasClassifier(
        model=build_keras_model,
        model__neurons=16,
        model__opt_name="Adadelta",
        epochs=epochs,
        batch_size=128,
        verbose=0,
    )
    param_grid = {f"model__{k}": v for k, v in grid.items()}
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    search = GridSearchCV(clf, param_grid, cv=cv, n_jobs=-1)
    start = time.perf_counter()
    search.fit(x.astype(np.float32)[..., None] / 255.0, y)
    seconds = time.perf_counter() - start
    best = {k.removeprefix("model__"): v for k, v in search.best_params_.items()}
    return seconds, float(search.best_score_), best


def deepnet_search(x, y, grid: dict, epochs: int) -> tuple[float, float, dict]:
    space = Space.from_dict(
        {
            "optimizer": grid["opt_name"],
            "neurons": grid["neurons"],
            "epochs": [epochs],
            "batch_size": [128],
        }
    )
    spec = SearchSpec((Stage(space, "grid"),), cv=3, seed=0)
    start = time.perf_counter()
    outcome = run_search(spec, x, y, 2, storage=None, study_name="bench", data={}, n_jobs=-1)
    seconds = time.perf_counter() - start
    best = {"opt_name": outcome.best.params["optimizer"], "neurons": outcome.best.params["neurons"]}
    return seconds, outcome.best.score, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--optimizers", default="Adam,Nadam,RMSprop")
    parser.add_argument("--neurons", default="25,125")
    args = parser.parse_args()
    grid = {
        "opt_name": args.optimizers.split(","),
        "neurons": [int(n) for n in args.neurons.split(",")],
    }
    data = load_dataset("mnist", (2, 7))
    x, y = data.x_train, data.y_train
    fits = 3 * len(grid["opt_name"]) * len(grid["neurons"])
    print(
        f"grid {grid}, 3-fold CV = {fits} fits of {args.epochs} epochs on {len(y)} images, "
        f"{os.cpu_count()} cores"
    )
    rows = []
    for name, run in (("scikeras + GridSearchCV", scikeras_search), ("deepnet", deepnet_search)):
        seconds, score, best = run(x, y, grid, args.epochs)
        rows.append((name, seconds, score, best))
        print(
            f"{name:24s} {seconds:7.1f} s  {seconds / fits:6.2f} s per fit  "
            f"best CV {score:.4f}  {best}",
            flush=True,
        )
    (_, keras_s, keras_score, _), (_, ours_s, ours_score, _) = rows
    print(
        f"deepnet is {keras_s / ours_s:.2f}x faster per CV fit; "
        f"best-score difference {ours_score - keras_score:+.4f}"
    )


if __name__ == "__main__":
    main()
