import re

import numpy as np
import pytest
from PIL import Image

from deepnet.data import Preprocessing, read_images
from deepnet.data.convert import grey
from deepnet.errors import DataError
from tests.data.image_files import csv_text, pil, tinted, write_folder

GREY28 = Preprocessing((28, 28), 1)


def test_files_folders_csvs_and_arrays_in_order(tmp_path, digits):
    images, names = digits[0][:12], digits[1][:12]
    paths = write_folder(tmp_path / "f", images[:6], names[:6])
    (tmp_path / "rows.csv").write_text(csv_text(images[6:9], names[6:9]))
    np.savez(tmp_path / "x.npz", x=images[9:] / 255.0)
    read = read_images(
        [paths[0], tmp_path / "f", tmp_path / "rows.csv", tmp_path / "x.npz"], GREY28
    )
    assert read.names == (
        str(paths[0]),
        *map(str, paths),
        *(f"{tmp_path / 'rows.csv'}:row {i}" for i in (1, 2, 3)),
        *(f"{tmp_path / 'x.npz'}[{i}]" for i in (0, 1, 2)),
    )
    assert np.array_equal(read.images, np.concatenate([images[:1], images]))


def test_a_size_the_run_did_not_train_on(tmp_path, digits):
    path = tmp_path / "big.png"
    pil(digits[0][0]).resize((40, 36)).save(path)
    with pytest.raises(
        DataError,
        match=rf"{re.escape(str(path))} holds 36x40 images but the run was trained on 28x28 ones "
        "without --resize",
    ):
        read_images([path], GREY28)
    resized = read_images([path], Preprocessing((28, 28), 1, resize=True))
    expected = np.asarray(Image.open(path).resize((28, 28), Image.Resampling.BILINEAR))
    assert np.array_equal(resized.images[0, ..., 0], expected)


def test_channels_the_run_did_not_train_on(tmp_path, digits):
    rgb = tinted(digits[0][:2])
    path = tmp_path / "rgb.png"
    pil(rgb[0]).save(path)
    with pytest.raises(
        DataError,
        match=r"holds RGB \(3 channels\) images but the run was trained on grey \(1 channel\) "
        r"ones; convert the images first, or train a run with --grayscale",
    ):
        read_images([path], GREY28)
    greyed = read_images([path], Preprocessing((28, 28), 1, grayscale=True))
    assert np.array_equal(greyed.images, grey(rgb[:1]))
    with pytest.raises(DataError, match=r"holds grey \(1 channel\) images but .* RGB \(3"):
        read_images([tmp_path / "rgb.png"], Preprocessing((28, 28), 3, grayscale=True))


def test_bad_files_are_named_or_skipped(tmp_path, digits):
    paths = write_folder(tmp_path / "f", digits[0][:3], digits[1][:3])
    paths[1].write_bytes(b"GIF89a")
    with pytest.raises(DataError, match=rf"{re.escape(str(paths[1]))} is not an image"):
        read_images([tmp_path / "f"], GREY28)
    read = read_images([tmp_path / "f"], GREY28, skip_bad=True)
    assert read.names == (str(paths[0]), str(paths[2])) and read.skipped == (str(paths[1]),)
    with pytest.raises(DataError, match=r"nowhere does not exist"):
        read_images([tmp_path / "nowhere"], GREY28)
