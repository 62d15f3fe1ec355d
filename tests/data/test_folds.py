import numpy as np
import pytest

from deepnet.data import holdout_split, stratified_folds
from deepnet.errors import ConfigError


def test_folds_partition_and_stratify(mnist27):
    y = mnist27.y_train
    folds = stratified_folds(y, 3, seed=0)
    assert len(folds) == 3
    vals = np.concatenate([v for _, v in folds])
    assert np.array_equal(np.sort(vals), np.arange(len(y)))
    share = y.mean()
    for train, val in folds:
        assert np.intersect1d(train, val).size == 0
        assert abs(y[val].mean() - share) < 0.002


def test_folds_are_seeded_and_shuffled(mnist27):
    y = mnist27.y_train
    a, b, c = (stratified_folds(y, 3, s) for s in (0, 0, 1))
    assert all(np.array_equal(x[1], z[1]) for x, z in zip(a, b, strict=True))
    assert not np.array_equal(a[0][1], c[0][1])
    assert not np.array_equal(a[0][1], np.arange(len(a[0][1])))  # not plain KFold


def _sklearn_folds(y, n_splits, seed):
    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y))


@pytest.mark.parametrize(("n_splits", "seed"), [(3, 0), (5, 7), (2, 123)])
def test_folds_are_scikit_learns(mnist27, n_splits, seed):
    """The same folds as StratifiedKFold(shuffle=True), so that deepnet's CV scores compare
    with GridSearchCV's: on MNIST 2 vs 7 and on ten uneven classes whose first images come
    out of label order."""
    rng = np.random.default_rng(seed)
    uneven = rng.choice(10, size=997, p=np.arange(1, 11) / 55)
    uneven[:3] = (7, 2, 9)
    for y in (mnist27.y_train, uneven):
        ours = stratified_folds(y, n_splits, seed)
        for (train, val), (train_sk, val_sk) in zip(
            ours, _sklearn_folds(y, n_splits, seed), strict=True
        ):
            assert np.array_equal(train, train_sk) and np.array_equal(val, val_sk)


def test_more_folds_than_the_smallest_class():
    y = np.array([0] * 10 + [1] * 2)
    with pytest.raises(
        ConfigError,
        match=r"cv=3 folds cannot be stratified: the smallest class "
        r"has only 2 training images\. Use cv=2 or fewer",
    ):
        stratified_folds(y, 3)
    with pytest.raises(ConfigError, match=r"the smallest class \(dog\) has only 2 training"):
        stratified_folds(y, 3, class_names=("cat", "dog"))


@pytest.mark.parametrize("cv", [1, 0, 2.5, True])
def test_fold_count_must_be_an_integer_of_at_least_two(cv):
    with pytest.raises(ConfigError, match="at least 2 folds"):
        stratified_folds(np.array([0, 1] * 10), cv)


def test_holdout(mnist27):
    y = mnist27.y_train
    train, val = holdout_split(y, 0.1, seed=0)
    assert len(val) == round(0.1 * len(y)) or abs(len(val) - 0.1 * len(y)) <= 1
    assert np.intersect1d(train, val).size == 0 and len(train) + len(val) == len(y)
    assert abs(y[val].mean() - y.mean()) < 0.002
    everything, none = holdout_split(y, 0.0)
    assert len(everything) == len(y) and len(none) == 0


@pytest.mark.parametrize("fraction", [1.0, -0.1])
def test_holdout_fraction_range(fraction):
    with pytest.raises(ConfigError, match=r"validation_split=.* must be >= 0 and < 1"):
        holdout_split(np.array([0, 1] * 10), fraction)
