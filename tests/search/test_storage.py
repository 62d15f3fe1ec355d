"""Study storages: URLs redacted, bad ones refused before training, a real PostgreSQL server."""

import time

import optuna
import pytest

from deepnet.errors import SearchError
from deepnet.search.storage import open_storage, redact, storage_url
from tests import postgres


def test_redact_hides_the_password_only():
    url = "postgresql+psycopg://ann:hunter2@db.example:5432/searches"
    assert redact(url) == "postgresql+psycopg://ann:***@db.example:5432/searches"
    assert redact("sqlite:///runs/x/study.db") == "sqlite:///runs/x/study.db"
    assert "hunter2" not in redact("postgresql://ann:hunter2@/db?host=/tmp")


def test_storage_url_falls_back_to_the_environment(monkeypatch):
    monkeypatch.setenv("DEEPNET_STORAGE", "sqlite:///from-env.db")
    assert storage_url(None) == "sqlite:///from-env.db"
    assert storage_url("sqlite:///given.db") == "sqlite:///given.db"
    monkeypatch.delenv("DEEPNET_STORAGE")
    assert storage_url(None) is None


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("not a url", "is not a database URL"),
        ("mysql://u:p@127.0.0.1/db", "deepnet supports SQLite files and PostgreSQL"),
    ],
    ids=["malformed", "other-backend"],
)
def test_bad_urls_are_refused_with_examples(url, says):
    with pytest.raises(SearchError, match=says) as info:
        open_storage(url)
    assert "postgresql+psycopg://" in str(info.value)


def test_an_unreachable_server_fails_fast_without_the_password():
    port = postgres.free_port()  # nothing listens there
    start = time.monotonic()
    with pytest.raises(SearchError, match="cannot open the study storage") as info:
        open_storage(f"postgresql+psycopg://u:topsecret@127.0.0.1:{port}/db")
    assert time.monotonic() - start < 15
    assert "topsecret" not in str(info.value) and "u:***@" in str(info.value)


def test_a_wrong_password_is_refused_without_quoting_it(postgres_url):
    wrong = postgres_url.replace(postgres.PASSWORD, "not-the-password")
    with pytest.raises(SearchError, match=r"password|authentication") as info:
        open_storage(wrong)
    assert "not-the-password" not in str(info.value)


def test_a_study_lives_in_the_real_server(postgres_url):
    storage = open_storage(postgres_url)
    study = optuna.create_study(storage=storage, study_name="roundtrip", direction="maximize")
    study.enqueue_trial({"x": 1.0})
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 2)})
    study.tell(trial, 0.5)
    again = optuna.load_study(
        study_name="roundtrip", storage=open_storage(postgres_url, create=False)
    )
    assert [t.value for t in again.trials] == [0.5]
    assert again.trials[0].params == {"x": 1.0}


def test_an_sqlite_file_in_a_missing_folder_says_so(tmp_path):
    with pytest.raises(SearchError, match="Check that its folder exists and is writable"):
        open_storage(f"sqlite:///{tmp_path}/no/such/folder/study.db")
