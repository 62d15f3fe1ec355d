import pytest


@pytest.fixture(scope="session")
def tiny(small27):
    """900 training images of 2 vs 7: enough for folds to disagree, fast to train."""
    return small27.x_train[:900], small27.y_train[:900]


def scores(outcome):
    """The part of a results table that must not depend on run order or interruptions."""
    return sorted(
        (
            r.state,
            r.score,
            r.std,
            tuple(r.fold_scores),
            tuple(sorted(r.params.items(), key=lambda kv: kv[0])),
        )
        for r in outcome.rows
    )
