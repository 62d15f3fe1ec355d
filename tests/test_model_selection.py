"""The seed's GridSearchCV / RandomizedSearchCV code, with only its imports changed, and what
the search classes refuse."""

import numpy as np
import pytest
import torch
from sklearn.model_selection import KFold

from deepnet import ConfigError, DataError, DeepNetClassifier, GridSearchCV, RandomizedSearchCV
from deepnet.estimator import NotFittedError
from deepnet.evaluate import images_to_tensor


@pytest.fixture(scope="module")
def seed_data(small27):
    x_train = small27.x_train[:900].reshape(900, 28, 28, 1).astype("float32") / 255
    y_train = np.eye(2)[small27.y_train[:900]]  # keras.utils.to_categorical
    return x_train, y_train


@pytest.fixture(scope="module")
def grid(seed_data):
    # -- the seed's code, small grid --
    batch_size = 64
    epochs = 2
    optimizer = ["SGD", "Adam", "Nadam"]
    neurons = [25, 30]
    param_grid = dict(batch_size=batch_size, epochs=epochs, optimizer=optimizer, neurons=neurons)  # noqa: C408 - the seed's own code
    model = DeepNetClassifier()
    grid_search = GridSearchCV(model, param_grid=param_grid, n_jobs=-1, verbose=1)
    return grid_search.fit(*seed_data)


def test_seed_grid_search_attributes(grid):
    results = grid.cv_results_
    assert len(results["params"]) == 6
    assert grid.best_score_ == pytest.approx(np.nanmax(results["mean_test_score"]))
    assert results["rank_test_score"][grid.best_index_] == 1
    assert results["params"][grid.best_index_] == grid.best_params_
    assert set(grid.best_params_) == {"batch_size", "epochs", "optimizer", "neurons"}
    assert grid.best_params_["optimizer"] != "SGD"
    assert grid.n_splits_ == 3
    for i in range(3):
        assert results[f"split{i}_test_score"].shape == (6,)
    assert list(results["param_neurons"]) == [p["neurons"] for p in results["params"]]


def test_seed_grid_search_refits_the_best(grid, small27):
    assert grid.best_estimator_.optimizer == grid.best_params_["optimizer"]
    assert grid.score(small27.x_test, np.eye(2)[small27.y_test]) > 0.9
    assert grid.predict(small27.x_test[:5]).shape == (5,)


def test_seed_randomized_search(seed_data):
    param_grid = dict(batch_size=64, epochs=2, optimizer=["SGD", "Adam", "Nadam"], neurons=[25, 30])  # noqa: C408
    n_iter = 3
    rand_search = RandomizedSearchCV(
        DeepNetClassifier(),
        param_distributions=param_grid,
        cv=3,
        n_iter=n_iter,
        verbose=1,
        random_state=0,
    )
    rand = rand_search.fit(*seed_data)
    assert len(rand.cv_results_["params"]) == 3
    assert rand.best_score_ > 0.5


def test_a_search_on_colour_images_refits_on_colour(small27):
    tint = np.array([1.0, 0.6, 0.3])
    x = np.rint(small27.x_train[:600] * tint).astype(np.uint8)  # (n, 28, 28, 3) RGB
    search = GridSearchCV(
        DeepNetClassifier(epochs=2, batch_size=64), {"optimizer": ["SGD", "Nadam"]}, cv=2
    ).fit(x, small27.y_train[:600])
    assert search.best_params_ == {"optimizer": "Nadam"}
    assert search.best_estimator_.image_shape_ == (28, 28, 3)
    x_test = np.rint(small27.x_test * tint).astype(np.uint8)
    assert search.score(x_test, small27.y_test) > 0.9
    with pytest.raises(DataError, match=r"with 1 channel .* fitted on 28x28 images with 3"):
        search.predict(small27.x_test)


def test_halving_through_the_same_api(seed_data):
    search = GridSearchCV(
        DeepNetClassifier(epochs=3, batch_size=64),
        {"optimizer": ["SGD", "Adagrad", "Adam", "Nadam"]},
        strategy="halving",
        refit=False,
    ).fit(*seed_data)
    states = list(search.cv_results_["state"])
    assert "pruned" in states
    assert np.isnan(search.cv_results_["mean_test_score"][states.index("pruned")])


@pytest.fixture(scope="module")
def unrefitted(seed_data):
    search = GridSearchCV(
        DeepNetClassifier(epochs=1, batch_size=64),
        {"neurons": [16, 30]},
        cv=KFold(2, shuffle=True, random_state=0),
        refit=False,
    )
    return search.fit(*seed_data)


def test_a_scikit_learn_splitter_as_cv(unrefitted):
    assert unrefitted.n_splits_ == 2


def test_predict_without_refit_says_so(unrefitted, seed_data):
    with pytest.raises(NotFittedError, match="fitted with refit=False, so it has no"):
        unrefitted.predict(seed_data[0][:5])
    assert set(unrefitted.best_params_) == {"neurons"}


@pytest.mark.parametrize("search_class", [GridSearchCV, RandomizedSearchCV])
def test_a_search_used_before_fit_raises_not_fitted(search_class, seed_data):
    search = search_class(DeepNetClassifier(), {"neurons": [16, 30]})
    x, y = seed_data
    uses = {
        "predict": lambda: search.predict(x),
        "predict_proba": lambda: search.predict_proba(x),
        "score": lambda: search.score(x, y),
        "best_params_": lambda: search.best_params_,
        "best_score_": lambda: search.best_score_,
        "best_estimator_": lambda: search.best_estimator_,
        "cv_results_": lambda: search.cv_results_,
    }
    for name, use in uses.items():
        with pytest.raises(
            NotFittedError, match=rf"not fitted yet: call fit\(X, y\) before {name}"
        ):
            use()
    assert not hasattr(search, "best_index_")


@pytest.mark.parametrize("n_images", [300, 600, 700])
def test_search_refuses_images_and_labels_of_other_lengths(small27, tmp_path, n_images):
    storage = tmp_path / "study.db"
    search = GridSearchCV(
        DeepNetClassifier(epochs=1), {"neurons": [16, 30]}, storage=f"sqlite:///{storage}"
    )
    with pytest.raises(DataError, match=f"X has {n_images} images but y has 613 labels"):
        search.fit(small27.x_train[:n_images], small27.y_train[:613])
    assert not storage.exists()  # refused before a study was created


def test_search_refuses_folds_outside_the_images(seed_data):
    x, y = seed_data
    folds = [(np.arange(0, 600), np.arange(600, 900)), (np.arange(300, 900), np.arange(0, 950))]
    search = GridSearchCV(DeepNetClassifier(epochs=1), {"neurons": [16, 30]}, cv=folds)
    with pytest.raises(DataError, match=r"cv fold 1 has validation index 900 but there are 900"):
        search.fit(x, y)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: GridSearchCV(DeepNetClassifier(), {"neurons": [1]}, strategy="tpe"),
            "strategy must be grid, halving or hyperband",
        ),
        (
            lambda: GridSearchCV(DeepNetClassifier(), {"neurons": [1]}, scoring="f1"),
            "accuracy only",
        ),
        (
            lambda: RandomizedSearchCV(DeepNetClassifier(), {"neurons": [1]}, strategy="grid"),
            "strategy must be random",
        ),
        (lambda: GridSearchCV(DeepNetClassifier(), {"nurons": [1]}), "did you mean 'neurons'"),
    ],
)
def test_bad_search_arguments(seed_data, make, message):
    with pytest.raises(ConfigError, match=message):
        make().fit(*seed_data)


def test_a_quiet_search_prints_nothing_and_leaves_optuna_as_it_was(seed_data, capfd):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.INFO)  # Optuna's own default
    x, y = seed_data
    GridSearchCV(DeepNetClassifier(epochs=1), {"neurons": [8, 16]}, cv=2, n_jobs=1).fit(x, y)
    out, err = capfd.readouterr()
    assert out == "" and "Trial" not in err and "study" not in err
    assert optuna.logging.get_verbosity() == optuna.logging.INFO


def test_an_ensemble_refit_predicts_with_the_model_validation_chose(seed_data, small27):
    from deepnet.ensemble import Choice, EnsembleNet

    search = GridSearchCV(
        DeepNetClassifier(epochs=1, batch_size=64),
        {"optimizer": ["Adam"]},
        cv=2,
        n_jobs=1,
        ensemble="folds",
    ).fit(*seed_data)
    fitted = search.ensemble_
    assert [m.member.key for m in fitted.members] == ["fold-0", "fold-1"]
    assert len(fitted.validation_idx) == 90  # 10% of the 900 training images
    model = search.best_estimator_.model_
    assert isinstance(model, EnsembleNet) == (fitted.choice is Choice.ENSEMBLE)
    expected = torch.softmax(fitted.model()(images_to_tensor(small27.x_test)), 1).detach()
    np.testing.assert_allclose(search.predict_proba(small27.x_test), expected.numpy(), atol=1e-6)
    assert search.score(small27.x_test, small27.y_test) > 0.8


@pytest.mark.parametrize(("ensemble", "refit"), [(1, True), ("fold", True), (2, False)])
def test_a_bad_ensemble_is_refused_before_the_search(seed_data, ensemble, refit):
    search = GridSearchCV(
        DeepNetClassifier(epochs=1), {"optimizer": ["Adam"]}, ensemble=ensemble, refit=refit
    )
    with pytest.raises(ConfigError, match="ensemble"):
        search.fit(*seed_data)
    assert "cv_results_" not in vars(search)
