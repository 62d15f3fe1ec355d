import gzip

import numpy as np
import pytest

from deepnet.data.idx import find_idx, read_idx
from deepnet.data.sources import FASHION_DEFAULT
from deepnet.errors import DataError
from tests.conftest import requires_fashion_mnist
from tests.data.idx_files import idx_bytes

IMAGES = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_round_trip(tmp_path, compress):
    data = idx_bytes(IMAGES)
    path = tmp_path / "x"
    path.write_bytes(gzip.compress(data) if compress else data)
    assert np.array_equal(read_idx(path), IMAGES)


@requires_fashion_mnist
def test_real_fashion_mnist_files():
    images = read_idx(find_idx(FASHION_DEFAULT, "t10k-images", 3))
    labels = read_idx(find_idx(FASHION_DEFAULT, "t10k-labels", 1))
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)
    assert np.bincount(labels).tolist() == [1000] * 10


def test_wrong_magic_number(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(b"\x00\x00\x0d\x03" + b"\x00" * 20)  # 0x0d: float data
    with pytest.raises(
        DataError, match="not an unsigned-byte IDX file: its magic number is 00000d03"
    ):
        read_idx(path)


def test_not_idx_at_all(tmp_path):
    path = tmp_path / "readme.txt"
    path.write_text("hello")
    with pytest.raises(DataError, match="magic number is 68656c6c"):
        read_idx(path)


def test_truncated_body(tmp_path):
    path = tmp_path / "cut"
    path.write_bytes(idx_bytes(IMAGES)[:-5])
    with pytest.raises(
        DataError,
        match=r"truncated: the header declares shape \(2, 3, 4\) "
        r"\(24 bytes\) but the file holds 19",
    ):
        read_idx(path)


def test_truncated_header(tmp_path):
    path = tmp_path / "cut"
    path.write_bytes(idx_bytes(IMAGES)[:7])
    with pytest.raises(DataError, match="truncated inside its header"):
        read_idx(path)


def test_trailing_bytes(tmp_path):
    path = tmp_path / "long"
    path.write_bytes(idx_bytes(IMAGES) + b"\x00")
    with pytest.raises(DataError, match="longer than its header says"):
        read_idx(path)


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(idx_bytes(IMAGES))[:-10])
    with pytest.raises(DataError, match="cannot read IDX file"):
        read_idx(path)


def test_missing_file_lists_the_names_tried(tmp_path):
    with pytest.raises(DataError, match=r"no train-images file in .*train-images-idx3-ubyte\.gz"):
        find_idx(tmp_path, "train-images", 3)


def test_dotted_spelling_is_found(tmp_path):
    (tmp_path / "train-labels.idx1-ubyte").write_bytes(idx_bytes(np.zeros(3, np.uint8)))
    assert find_idx(tmp_path, "train-labels", 1).name == "train-labels.idx1-ubyte"
