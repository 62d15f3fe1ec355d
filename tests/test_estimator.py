import inspect

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV as SklearnGridSearchCV
from sklearn.model_selection import cross_val_score

from deepnet import PARAMS, ConfigError, DeepNetClassifier, DivergedError, TrainConfig

FAST = {"epochs": 2, "batch_size": 64}


@pytest.fixture(scope="module")
def xy(small27):
    """The seed's form: float images (n, 28, 28, 1) scaled by 1/255, one-hot labels."""
    x = small27.x_train[:900].reshape(-1, 28, 28, 1).astype("float32") / 255
    return x, np.eye(2)[small27.y_train[:900]]


def test_constructor_defaults_are_trainconfig_defaults():
    signature = inspect.signature(DeepNetClassifier)
    defaults = TrainConfig().to_dict()
    assert {n: signature.parameters[n].default for n in PARAMS} == defaults
    assert set(signature.parameters) == {*PARAMS, "seed", "verbose"}


def test_clone_round_trips():
    model = DeepNetClassifier(optimizer="Nadam", neurons=30, weight_constraint=3)
    copy = clone(model)
    assert copy.get_params() == model.get_params() and copy is not model


def test_constructor_stores_arguments_untouched_and_fit_validates(xy):
    model = DeepNetClassifier(optimizer="adamw")
    assert model.optimizer == "adamw"
    with pytest.raises(ConfigError, match="optimizer='adamw' is not allowed"):
        model.fit(*xy)


def test_fit_predict_proba_score(xy, small27):
    model = DeepNetClassifier(optimizer="Nadam", **FAST).fit(*xy)
    assert list(model.classes_) == [0, 1] and len(model.history_) == 2
    x_test = small27.x_test  # uint8 (n, 28, 28) works too
    proba = model.predict_proba(x_test)
    assert proba.shape == (len(x_test), 2) and np.allclose(proba.sum(1), 1, atol=1e-6)
    assert model.score(x_test, small27.y_test) > 0.9


def test_labels_and_flat_images(small27):
    x = small27.x_train[:600].reshape(600, 784)
    y = np.where(small27.y_train[:600] == 1, "seven", "two")
    model = DeepNetClassifier(**FAST).fit(x, y)
    assert set(model.predict(x[:50])) <= {"seven", "two"}


def test_same_seed_same_model(xy):
    a = DeepNetClassifier(**FAST, seed=3).fit(*xy).predict_proba(xy[0][:100])
    b = DeepNetClassifier(**FAST, seed=3).fit(*xy).predict_proba(xy[0][:100])
    assert np.array_equal(a, b)


def test_works_inside_scikit_learns_own_search(xy):
    x, y = xy[0], xy[1].argmax(1)
    search = SklearnGridSearchCV(
        DeepNetClassifier(**FAST), {"optimizer": ["SGD", "Nadam"]}, cv=2
    ).fit(x, y)
    assert search.best_params_ == {"optimizer": "Nadam"}
    scores = cross_val_score(DeepNetClassifier(optimizer="Nadam", **FAST), x, y, cv=2)
    assert scores.shape == (2,) and scores.min() > 0.9


def test_divergence_raises_a_named_error(xy):
    wild = DeepNetClassifier(
        optimizer="Adam", learn_rate=1e8, activation="linear", init_mode="normal", epochs=4
    )
    with pytest.raises(DivergedError, match="training diverged"):
        wild.fit(*xy)


@pytest.mark.parametrize("shape", [(10, 28, 28, 3), (10, 783), (10,)])
def test_bad_image_shapes(shape):
    with pytest.raises(ConfigError, match="X has"):
        DeepNetClassifier(**FAST).fit(np.zeros(shape), np.arange(10) % 2)


def test_one_class_is_refused():
    with pytest.raises(ConfigError, match="one class"):
        DeepNetClassifier(**FAST).fit(np.zeros((10, 28, 28)), np.zeros(10))
