"""GridSearchCV and RandomizedSearchCV with scikit-learn's arguments, on deepnet's engine.

They take what scikit-learn's classes take (``param_grid`` / ``param_distributions``,
``cv``, ``n_iter``, ``n_jobs``, ``refit``, ``verbose``, ``random_state``) and expose what
they expose (``cv_results_``, ``best_params_``, ``best_score_``, ``best_index_``,
``best_estimator_``), but train through deepnet's engine and an Optuna study, so
``strategy="halving"`` prunes hopeless configurations, ``storage=`` makes a search
resumable and ``executor="ray"`` trains on the Ray cluster this machine belongs to (or
``executor=Executor("ray", "HOST:PORT")``); ``ensemble=K`` (or ``"folds"``) refits the best
configuration as an ensemble; a validation share of X held out from its members chooses
between it and its first member alone (``ensemble_`` says which; ``best_estimator_``
predicts with the choice). The seed's notebook runs with only its imports changed::

    from deepnet import DeepNetClassifier, GridSearchCV
    grid = GridSearchCV(DeepNetClassifier(), param_grid=dict(optimizer=[...]), n_jobs=-1)
    grid.fit(x_train, y_train)
    grid.best_score_, grid.best_params_
"""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.base import BaseEstimator, MetaEstimatorMixin, clone
from sklearn.model_selection import check_cv

from deepnet.config import PARAMS
from deepnet.data.arrays import as_images_and_labels
from deepnet.data.folds import Split, check_folds, stratified_folds
from deepnet.ensemble import EnsemblePlan, FittedEnsemble, fit_ensemble
from deepnet.errors import ConfigError, DivergedError
from deepnet.estimator import DeepNetClassifier, FittedState, NotFittedError
from deepnet.search import SearchSpec, Space, Stage, cv_results, run_search
from deepnet.search.results import row_of
from deepnet.search.study import optuna_quieted

if TYPE_CHECKING:
    from deepnet.search.executor import Executor


class _SearchCV(FittedState, MetaEstimatorMixin, BaseEstimator):
    """What GridSearchCV and RandomizedSearchCV share; subclasses name the space."""

    _space_arg: str

    def __init__(
        self,
        estimator: DeepNetClassifier,
        *,
        scoring: str | None,
        n_jobs: int | None,
        refit: bool,
        cv: Any,
        verbose: int,
        random_state: int | None,
        strategy: str,
        storage: str | None,
        study_name: str | None,
        executor: str | Executor,
        ensemble: int | str | None,
    ):
        self.estimator = estimator
        self.scoring = scoring
        self.n_jobs = n_jobs
        self.refit = refit
        self.cv = cv
        self.verbose = verbose
        self.random_state = random_state
        self.strategy = strategy
        self.storage = storage
        self.study_name = study_name
        self.executor = executor
        self.ensemble = ensemble

    def _space(self) -> dict[str, Any]:
        return getattr(self, self._space_arg)

    def _stage(self, space: Space) -> Stage:
        raise NotImplementedError

    def fit(self, X: np.ndarray, y: np.ndarray) -> _SearchCV:
        if not isinstance(self.estimator, DeepNetClassifier):
            raise ConfigError(
                "estimator must be a DeepNetClassifier; for other estimators use "
                "scikit-learn's own search classes."
            )
        if self.scoring not in (None, "accuracy"):
            raise ConfigError(f"scoring={self.scoring!r}: deepnet scores by accuracy only.")
        images, original = as_images_and_labels(X, y)
        classes, labels = np.unique(original, return_inverse=True)
        seed = 0 if self.random_state is None else int(self.random_state)
        plan = None if self.ensemble is None else EnsemblePlan.parse(self.ensemble)
        if plan is not None and not self.refit:  # refused before anything trains
            raise ConfigError(
                "an ensemble is built by the refit: set refit=True, or ensemble=None."
            )
        searched = Space.from_dict(self._space())
        base = {k: v for k, v in self.estimator.get_params().items() if k in PARAMS}
        stage = self._stage(searched.fixed(base))
        folds = self._folds(images, labels, seed)
        spec = SearchSpec((stage,), cv=len(folds), seed=seed)
        if self.verbose:
            print(
                f"Fitting {len(folds)} folds for each of {stage.n_trials} candidates, "
                f"totalling {len(folds) * stage.n_trials} fits"
            )
        digest = hashlib.sha1(np.ascontiguousarray(images).tobytes()).hexdigest()[:12]
        with optuna_quieted():
            outcome = run_search(
                spec,
                images,
                labels,
                len(classes),
                storage=self.storage,
                study_name=self.study_name or f"deepnet-{digest}",
                n_jobs=self.n_jobs,
                executor=self.executor,
                folds=folds,
                data={"sha1": digest, "classes": [str(c) for c in classes]},
                on_trial=self._report if self.verbose > 1 else None,
            )
        rows = sorted(outcome.rows, key=lambda r: (r.stage, r.number))  # trial order
        names = list(searched.dims)
        self.cv_results_ = cv_results(rows, len(folds), names)
        self.best_index_ = rows.index(outcome.best)
        self.best_params_ = {n: outcome.best.params[n] for n in names}
        self.best_score_ = float(outcome.best.score)
        self.n_splits_ = len(folds)
        self.study_ = outcome.studies[-1]
        self.classes_ = classes
        if self.refit:
            start = time.perf_counter()
            best = clone(self.estimator).set_params(**self.best_params_)
            if plan is None:
                self.best_estimator_ = best.fit(images, original)
            else:
                self.ensemble_ = fit_ensemble(
                    best.config(), images, labels, len(classes), plan.for_cv(len(folds)), best.seed
                )
                self.best_estimator_ = _fitted(best, self.ensemble_, images, classes)
            self.refit_time_ = time.perf_counter() - start
        return self

    def _folds(self, images: np.ndarray, labels: np.ndarray, seed: int) -> list[Split]:
        if self.cv is None or isinstance(self.cv, int):
            return stratified_folds(labels, 3 if self.cv is None else self.cv, seed)
        splitter = check_cv(self.cv, labels, classifier=True)  # a splitter or an iterable
        folds = list(splitter.split(np.zeros(len(labels)), labels))
        check_folds(folds, len(labels))
        return folds

    def _report(self, trial) -> None:
        row = row_of(trial)
        score = f"{row.score:.4f}" if row.ok else row.state
        print(f"[trial {row.number}] {score} {row.params}")

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self._best("predict").predict(X)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self._best("predict_proba").predict_proba(X)

    def score(self, X: np.ndarray, y: np.ndarray) -> float:
        return self._best("score").score(X, y)

    def _best(self, use: str) -> DeepNetClassifier:
        """The refitted best estimator, or NotFittedError saying why there is none."""
        self._require_fitted(use)
        if "best_estimator_" not in vars(self):
            raise NotFittedError(
                f"this {type(self).__name__} was fitted with refit=False, so it has no "
                f"best_estimator_ to {use} with; fit it with refit=True, or fit "
                "DeepNetClassifier(**best_params_) yourself."
            )
        return self.best_estimator_


def _fitted(
    estimator: DeepNetClassifier, fitted: FittedEnsemble, images: np.ndarray, classes: np.ndarray
) -> DeepNetClassifier:
    """``estimator`` (the best parameters) fitted as the ensemble's chosen model: the fitted
    attributes ``DeepNetClassifier.fit`` sets, with the first member's history."""
    first = fitted.usable[0] if fitted.usable else None
    if first is None:
        raise DivergedError(
            f"every member of the ensemble diverged ({fitted.members[0].history[-1].reason}); "
            "try a smaller learn_rate or weight_constraint=3."
        )
    estimator.classes_ = classes
    estimator.model_ = fitted.model()
    estimator.history_ = first.history
    estimator.image_shape_ = images.shape[1:]
    estimator.n_features_in_ = int(np.prod(estimator.image_shape_))
    return estimator


class GridSearchCV(_SearchCV):
    """Every configuration of ``param_grid``, cross-validated (strategy "grid" or "halving")."""

    _space_arg = "param_grid"

    def __init__(
        self,
        estimator: DeepNetClassifier,
        param_grid: dict[str, Any],
        *,
        scoring: str | None = None,
        n_jobs: int | None = None,
        refit: bool = True,
        cv: Any = None,
        verbose: int = 0,
        random_state: int | None = None,
        strategy: str = "grid",
        storage: str | None = None,
        study_name: str | None = None,
        executor: str | Executor = "local",
        ensemble: int | str | None = None,
    ):
        super().__init__(
            estimator,
            scoring=scoring,
            n_jobs=n_jobs,
            refit=refit,
            cv=cv,
            verbose=verbose,
            random_state=random_state,
            strategy=strategy,
            storage=storage,
            study_name=study_name,
            executor=executor,
            ensemble=ensemble,
        )
        self.param_grid = param_grid

    def _stage(self, space: Space) -> Stage:
        if self.strategy not in ("grid", "halving", "hyperband"):
            raise ConfigError(
                f"GridSearchCV runs every configuration: strategy must be grid, "
                f"halving or hyperband, not {self.strategy!r}."
            )
        return Stage(space, self.strategy)


class RandomizedSearchCV(_SearchCV):
    """``n_iter`` configurations sampled from ``param_distributions`` (or TPE, halving)."""

    _space_arg = "param_distributions"

    def __init__(
        self,
        estimator: DeepNetClassifier,
        param_distributions: dict[str, Any],
        *,
        n_iter: int = 10,
        scoring: str | None = None,
        n_jobs: int | None = None,
        refit: bool = True,
        cv: Any = None,
        verbose: int = 0,
        random_state: int | None = None,
        strategy: str = "random",
        storage: str | None = None,
        study_name: str | None = None,
        executor: str | Executor = "local",
        ensemble: int | str | None = None,
    ):
        super().__init__(
            estimator,
            scoring=scoring,
            n_jobs=n_jobs,
            refit=refit,
            cv=cv,
            verbose=verbose,
            random_state=random_state,
            strategy=strategy,
            storage=storage,
            study_name=study_name,
            executor=executor,
            ensemble=ensemble,
        )
        self.param_distributions = param_distributions
        self.n_iter = n_iter

    def _stage(self, space: Space) -> Stage:
        if self.strategy == "grid":
            raise ConfigError(
                "RandomizedSearchCV samples n_iter configurations: strategy must "
                "be random, halving, hyperband or tpe."
            )
        return Stage(space, self.strategy, n_iter=self.n_iter)
