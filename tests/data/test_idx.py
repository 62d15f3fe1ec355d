import gzip
import json
import re
import struct
import subprocess
import sys

import numpy as np
import pytest

from deepnet.data import load_dataset
from deepnet.data.idx import find_idx, read_idx
from deepnet.data.sources import FASHION_DEFAULT
from deepnet.errors import DataError
from tests.conftest import requires_fashion_mnist
from tests.data.idx_files import idx_bytes, write_idx_folder

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


GIB = 1 << 30
MEASURE = """
import json, resource, sys
from pathlib import Path
from deepnet.data.idx import read_idx
from deepnet.errors import DataError

before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    read_idx(Path(sys.argv[1]))
    error = None
except DataError as exc:
    error = str(exc)
grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({"grew_mib": grew / 1024, "error": error}))
"""


def gzip_bomb(path, shape, expands_to=GIB):
    """An IDX header for ``shape``, then ``expands_to`` zero bytes, as a ~1 MB gzip.

    Gzip members concatenate, so one 16 MiB member of zeros, repeated, makes the bomb fast.
    """
    header = bytes([0, 0, 0x08, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)
    block = 16 << 20
    zeros = gzip.compress(bytes(block), compresslevel=9)
    path.write_bytes(gzip.compress(header) + zeros * (expands_to // block))
    return path


def peak_while_reading(path):
    """Read ``path`` in a fresh interpreter: how much its peak memory grew, and the error."""
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(path)], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


def test_gzip_bomb_stops_at_the_declared_size(tmp_path):
    bomb = gzip_bomb(tmp_path / "train-images-idx3-ubyte.gz", (60000, 28, 28))
    assert bomb.stat().st_size < 1.5e6
    outcome = peak_while_reading(bomb)
    assert outcome["error"] is not None and "longer than its header says" in outcome["error"]
    assert "(60000, 28, 28) (47040000 bytes)" in outcome["error"]
    assert outcome["grew_mib"] < 300  # the declared 45 MiB, not the 1 GiB it expands to


def test_absurd_header_is_refused_before_reading(tmp_path):
    bomb = gzip_bomb(tmp_path / "train-images-idx3-ubyte.gz", (60000, 28000, 28000))
    outcome = peak_while_reading(bomb)
    assert re.search(
        r"truncated: the header declares shape \(60000, 28000, 28000\) \(47040000000000 bytes\) "
        r"but a gzip file of \d+ bytes expands to at most \d+ bytes",
        outcome["error"],
    )
    assert outcome["grew_mib"] < 50


def test_plain_file_declaring_more_than_it_holds(tmp_path):
    path = tmp_path / "huge"
    path.write_bytes(bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 2**32 - 1, 2**16, 2**16) + b"x")
    with pytest.raises(DataError, match=r"declares shape \(4294967295, 65536, 65536\).*holds 1 b"):
        read_idx(path)


def test_images_are_counted_against_their_labels_before_they_are_read(tmp_path):
    """A bomb whose header is consistent with the 1 GiB it expands to (1.3 M images), beside
    a labels file of 1200: refused from the headers, before a byte of images is held."""
    folder = tmp_path / "data"
    image, label = np.zeros((1, 28, 28), np.uint8), np.zeros(1, np.uint8)
    write_idx_folder(folder, (image, np.zeros(1200, np.uint8), image, label))
    (folder / "train-images-idx3-ubyte").unlink()
    gzip_bomb(folder / "train-images-idx3-ubyte.gz", (GIB // 784, 28, 28), expands_to=GIB)
    with pytest.raises(
        DataError, match=r"declares 1369568 items but its labels file holds 1200 labels"
    ):
        load_dataset("mnist", (0, 1), folder)
