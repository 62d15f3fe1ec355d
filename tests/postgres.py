"""A real PostgreSQL server for tests: Debian's binaries, a fresh cluster in a temporary
folder, password authentication, listening on 127.0.0.1 only, stopped when the test ends.

The server runs as the ``postgres`` user when the tests run as root (CI), as PostgreSQL
refuses to run as root; otherwise as the current user.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BIN = Path("/usr/lib/postgresql/15/bin")
PASSWORD = "pg-secret-7f3a"  # the tests look for it in everything a search writes
USER = "deepnet"


def available() -> bool:
    return (BIN / "postgres").is_file()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a server with a database ``deepnet``; yields its URL (with the password).

    Its folder is a fresh one in the system's temporary folder (pytest's are private to
    root, which the ``postgres`` user cannot enter), removed when the server has stopped.
    """
    folder = Path(tempfile.mkdtemp(prefix="deepnet-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, pwfile, port = folder / "data", folder / "pw", free_port()
    pwfile.write_text(PASSWORD)
    if as_user:
        shutil.chown(pwfile, "postgres")

    def run(*args: str) -> None:
        subprocess.run([*as_user, *args], check=True, capture_output=True)

    auth = ["-U", USER, "-A", "scram-sha-256", f"--pwfile={pwfile}"]
    run(str(BIN / "initdb"), "-D", str(data), *auth)
    options = f"-h 127.0.0.1 -p {port} -k {folder} -c fsync=off"
    log = str(folder / "log")
    run(str(BIN / "pg_ctl"), "-D", str(data), "-o", options, "-l", log, "-w", "start")
    try:
        env = {**os.environ, "PGPASSWORD": PASSWORD}
        subprocess.run(
            [str(BIN / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", USER, "deepnet"],
            check=True,
            capture_output=True,
            env=env,
        )
        yield f"postgresql+psycopg://{USER}:{PASSWORD}@127.0.0.1:{port}/deepnet"
    finally:
        run(str(BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)
