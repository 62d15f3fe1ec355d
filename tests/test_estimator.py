import inspect
import subprocess
import sys

import numpy as np
import pytest
import sklearn.exceptions
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV as SklearnGridSearchCV
from sklearn.model_selection import cross_val_score

from deepnet import PARAMS, ConfigError, DataError, DeepNetClassifier, DivergedError, TrainConfig
from deepnet.estimator import NotFittedError

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
    assert set(signature.parameters) == {*PARAMS, "seed", "verbose", "device", "precision"}


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


@pytest.mark.parametrize("shape", [(10, 28, 28, 2), (10, 783), (10,), (0, 28, 28)])
def test_bad_image_shapes(shape):
    with pytest.raises(DataError, match="X has"):
        DeepNetClassifier(**FAST).fit(np.zeros(shape), np.arange(shape[0]) % 2)


def test_one_class_is_refused():
    with pytest.raises(ConfigError, match="one class"):
        DeepNetClassifier(**FAST).fit(np.zeros((10, 28, 28)), np.zeros(10))


@pytest.fixture(scope="module")
def fitted(xy):
    return DeepNetClassifier(**FAST).fit(*xy)


SEGFAULT_CASE = """
import sys
import numpy as np
from deepnet import DataError, DeepNetClassifier

data = np.load(sys.argv[1])
X, y = data["x"], data["y"]
try:
    DeepNetClassifier(epochs=1).fit(X[:300], y)
except DataError as exc:
    print(exc)
"""


def test_fewer_images_than_labels_is_refused_not_a_segfault(small27, tmp_path):
    """The report's case, in a fresh interpreter so that a segfault fails this test."""
    path = tmp_path / "xy.npz"
    np.savez(path, x=small27.x_train[:613], y=small27.y_train[:613])
    done = subprocess.run(
        [sys.executable, "-c", SEGFAULT_CASE, str(path)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith(
        "Found input variables with inconsistent numbers of samples: X has 300 images but y "
        "has 613 labels"
    )


@pytest.mark.parametrize("n_images", [600, 700])
def test_images_and_labels_of_other_lengths_are_refused(small27, n_images):
    x, y = small27.x_train[:n_images], small27.y_train[:613]
    with pytest.raises(DataError, match=f"X has {n_images} images but y has 613 labels"):
        DeepNetClassifier(**FAST).fit(x, y)


def test_score_checks_lengths_too(fitted, small27):
    with pytest.raises(DataError, match="X has 400 images but y has 399 labels"):
        fitted.score(small27.x_test, small27.y_test[:-1])


def test_non_finite_pixels_are_refused(xy):
    x = xy[0].copy()
    x[41, 3, 5, 0] = np.nan
    x[60, 0, 0, 0] = np.inf
    with pytest.raises(DataError, match=r"X\[41\] holds nan \(2 images are not finite"):
        DeepNetClassifier(**FAST).fit(x, xy[1])


@pytest.mark.parametrize(("bad", "shown"), [(np.nan, "nan"), (0.5, "0.5")])
def test_nan_and_fractional_labels_are_refused(small27, bad, shown):
    y = small27.y_train[:600].astype(np.float64)
    y[7] = bad
    with pytest.raises(DataError, match=rf"y\[7\] is {shown}: class labels must be whole"):
        DeepNetClassifier(**FAST).fit(small27.x_train[:600], y)


def test_a_matrix_that_is_not_one_hot_is_refused(small27):
    y = np.eye(2)[small27.y_train[:600]]
    y[3] = [0.3, 0.7]
    with pytest.raises(DataError, match=r"not one-hot: row 3 is \[0.3, 0.7\]"):
        DeepNetClassifier(**FAST).fit(small27.x_train[:600], y)


def test_labels_of_mixed_kinds_are_refused(small27):
    y = np.array([1, "two", None] * 200, dtype=object)
    with pytest.raises(DataError, match="numbers mixed with strings or None"):
        DeepNetClassifier(**FAST).fit(small27.x_train[:600], y)


def test_predict_before_fit_raises_not_fitted(small27):
    model = DeepNetClassifier()
    for use in (model.predict, model.predict_proba):
        with pytest.raises(NotFittedError, match=r"not fitted yet: call fit\(X, y\) before"):
            use(small27.x_test)
    with pytest.raises(sklearn.exceptions.NotFittedError, match="before score"):
        model.score(small27.x_test, small27.y_test)
    with pytest.raises(NotFittedError, match="before classes_"):
        _ = model.classes_
    assert not hasattr(model, "model_")


def test_predict_refuses_images_of_another_size(fitted, small27):
    with pytest.raises(DataError, match=r"X holds 14x14 images .* fitted on 28x28 images"):
        fitted.predict(small27.x_test[:, ::2, ::2])


def tinted(images):
    """Grey digits (n, h, w, 1) as colour images: each channel a different share of the grey."""
    return np.rint(images * np.array([1.0, 0.6, 0.3])).astype(np.uint8)


@pytest.fixture(scope="module")
def fitted_rgb(small27):
    return DeepNetClassifier(optimizer="Nadam", **FAST).fit(
        tinted(small27.x_train[:900]), small27.y_train[:900]
    )


def test_fits_and_scores_colour_images(fitted_rgb, small27):
    assert fitted_rgb.image_shape_ == (28, 28, 3) and fitted_rgb.n_features_in_ == 28 * 28 * 3
    assert fitted_rgb.model_.conv1.in_channels == 3
    assert fitted_rgb.score(tinted(small27.x_test), small27.y_test) > 0.9
    channels_first = np.moveaxis(tinted(small27.x_test[:50]), 3, 1)  # (n, 3, h, w), as torch
    assert np.array_equal(
        fitted_rgb.predict_proba(channels_first),
        fitted_rgb.predict_proba(tinted(small27.x_test[:50])),
    )


def test_predict_refuses_images_of_other_channels(fitted, fitted_rgb, small27):
    with pytest.raises(
        DataError,
        match=r"^X holds 28x28 images with 1 channel \(784 features\) but this DeepNetClassifier "
        r"was fitted on 28x28 images with 3 channels \(2352 features\); pass images of the "
        r"fitted size and channels\.$",
    ):
        fitted_rgb.predict(small27.x_test)
    with pytest.raises(DataError, match=r"X holds 28x28 images with 3 channels .* with 1 channel"):
        fitted.predict_proba(tinted(small27.x_test))


@pytest.mark.parametrize("side", [5, 4])
def test_images_smaller_than_the_network_takes_are_refused(small27, side):
    with pytest.raises(
        DataError, match=rf"the images in X are {side}x{side} pixels, .* minimum of 6x6"
    ):
        DeepNetClassifier(**FAST).fit(
            small27.x_train[:600, 11 : 11 + side, 11 : 11 + side], small27.y_train[:600]
        )


def test_the_smallest_images_the_network_takes_train_and_predict(small27):
    crop = np.s_[:, 11:17, 11:17]
    model = DeepNetClassifier(**FAST).fit(small27.x_train[crop], small27.y_train)
    assert model.score(small27.x_test[crop], small27.y_test) > 0.6
