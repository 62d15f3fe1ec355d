"""Study storage URLs: an SQLite file by default, a PostgreSQL server for clusters.

Only the search driver opens a storage for writing, once, before any worker starts, so
Optuna's schema is created by one process (two creating it at once race: optuna#1092).
A URL may carry a password: it is taken from ``DEEPNET_STORAGE`` when not given, and only
its redacted form (``redact``) is ever written to a run folder, a log or a message.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from deepnet.errors import SearchError

if TYPE_CHECKING:
    import optuna

ENV_VAR = "DEEPNET_STORAGE"
CONNECT_TIMEOUT_S = 10
EXAMPLES = "sqlite:///runs/my-search/study.db or postgresql+psycopg://USER:PASSWORD@HOST:5432/DB"


def storage_url(given: str | None) -> str | None:
    """The storage the user asked for: ``given``, else $DEEPNET_STORAGE, else None."""
    return given or os.environ.get(ENV_VAR) or None


def redact(url: str | None) -> str | None:
    """``url`` with its password replaced by ***, for anything written or shown."""
    if url is None:
        return None
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<a storage URL that cannot be parsed>"


def same_storage(url: str | None, recorded: str | None) -> bool:
    """Whether ``url`` names the storage recorded (redacted) in a run folder."""
    return redact(url) == recorded


def open_storage(url: str, *, create: bool = True) -> optuna.storages.RDBStorage:
    """The Optuna storage at ``url``, checked to be reachable now (not at the first trial).

    SQLite files run in WAL mode with synchronous=NORMAL, so a commit (several per trial and
    epoch) costs about 1.4 ms instead of 4; a killed process loses nothing, a power cut may
    lose the last commits, whose trials a resumed search runs again. ``create=False`` opens
    an existing storage for reading: no tables created, the journal mode left alone.
    """
    import optuna
    import sqlalchemy
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise SearchError(
            f"the study storage {redact(url)} is not a database URL; give one such as {EXAMPLES}."
        ) from None
    backend = parsed.get_backend_name()
    kwargs: dict[str, Any] = {}
    if backend == "postgresql":
        kwargs = {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}}
    elif backend != "sqlite":
        raise SearchError(
            f"the study storage {redact(url)} uses {backend!r}; deepnet supports SQLite files "
            f"and PostgreSQL servers: give a URL such as {EXAMPLES}."
        )
    try:
        rdb = optuna.storages.RDBStorage(url, engine_kwargs=kwargs, skip_table_creation=not create)
    except ImportError:
        raise SearchError(
            f"the study storage {redact(url)} needs the PostgreSQL driver psycopg: "
            "pip install 'deepnet[postgres]' (or psycopg[binary])."
        ) from None
    except sqlalchemy.exc.SQLAlchemyError as exc:
        check = (
            "Check that its folder exists and is writable"
            if backend == "sqlite"
            else "Check that the server runs and accepts this user and password"
        )
        raise SearchError(
            f"cannot open the study storage {redact(url)}: {reason(exc, url)}. {check}, or "
            "give another --storage."
        ) from None
    if backend == "sqlite" and create:
        sqlalchemy.event.listen(rdb.engine, "connect", _fast_sqlite)
        rdb.engine.dispose()  # reconnect: the pooled connections predate the listener
    return rdb


def password(url: str) -> str | None:
    """The password in ``url`` (None without one, or for text that is not a URL)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).password
    except ArgumentError:
        return None


def reason(exc: Exception, url: str) -> str:
    """The driver's first line of complaint, without the password should it quote the URL."""
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    text = lines[0] if lines else ""
    secret = password(url)
    return text.replace(secret, "***") if secret else text


def _fast_sqlite(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
