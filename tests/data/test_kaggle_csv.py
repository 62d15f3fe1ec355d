import re

import numpy as np
import pytest

from deepnet.data import LoadOptions, load_dataset
from deepnet.errors import DataError
from tests.data.image_files import csv_text


@pytest.fixture
def train_csv(tmp_path, digits):
    images, names = digits
    path = tmp_path / "train.csv"
    path.write_text(csv_text(images, names))
    return path


def test_a_csv_file_loads_exactly_with_a_held_out_split(train_csv, digits):
    images = digits[0]
    data = load_dataset(path=train_csv)
    assert data.name == "csv" and data.class_names == ("2", "7") and data.classes == (2, 7)
    assert data.counts() == {"2": (50, 10), "7": (50, 10)}
    loaded = np.concatenate([data.x_train, data.x_test])
    assert {r.tobytes() for r in loaded} == {r.tobytes() for r in images}
    assert np.array_equal(load_dataset(path=train_csv).x_test, data.x_test)


def test_a_folder_with_a_labelled_test_csv(tmp_path, digits):
    images, names = digits
    (tmp_path / "train.csv").write_text(csv_text(images[10:110], names[10:110]))
    test = [*range(10), *range(110, 120)]
    (tmp_path / "test.csv").write_text(csv_text(images[test], names[test]))
    data = load_dataset(path=tmp_path, options=LoadOptions(resize=(32, 32)))
    assert data.name == "csv" and data.counts() == {"2": (50, 10), "7": (50, 10)}
    assert data.image_shape == (32, 32)


def test_kaggles_unlabelled_test_csv_is_not_a_test_split(tmp_path, digits):
    images, names = digits
    (tmp_path / "train.csv").write_text(csv_text(images, names))
    (tmp_path / "test.csv").write_text(csv_text(images[:5], None))
    with pytest.warns(UserWarning, match=r"test\.csv has no label column .* cannot be the test"):
        data = load_dataset(path=tmp_path)
    assert data.counts() == {"2": (50, 10), "7": (50, 10)}


def test_an_unlabelled_csv_cannot_be_trained_on(tmp_path, digits):
    path = tmp_path / "test.csv"
    path.write_text(csv_text(digits[0][:5], None))
    with pytest.raises(DataError, match=r"has no label column, so it cannot be trained on"):
        load_dataset(path=path)


def damaged(path, line, edit):
    lines = path.read_text().splitlines()
    lines[line - 1] = edit(lines[line - 1])
    path.write_text("\n".join(lines) + "\n")
    return re.escape(str(path))


def test_a_wrong_header(train_csv):
    at = damaged(train_csv, 1, lambda h: h.replace("pixel5,", "pixel05,"))
    with pytest.raises(
        DataError, match=rf"{at} has the header 'label,pixel0,pixel1,pixel2,\.\.\.' \(785 col"
    ):
        load_dataset(path=train_csv)


def test_a_non_numeric_pixel_names_its_row(train_csv):
    at = damaged(train_csv, 5, lambda row: row[:-2] + ",x")
    with pytest.raises(DataError, match=rf"{at} row 4 \(line 5\) has pixel783 = 'x', not a number"):
        load_dataset(path=train_csv)


def test_a_wrong_pixel_count_names_its_row(train_csv):
    at = damaged(train_csv, 9, lambda row: row.rsplit(",", 1)[0])
    with pytest.raises(
        DataError, match=rf"{at} row 8 \(line 9\) has 783 pixel values but the header names 784"
    ):
        load_dataset(path=train_csv)


def test_a_missing_label_names_its_row(train_csv):
    at = damaged(train_csv, 3, lambda row: "," + row.split(",", 1)[1])
    with pytest.raises(DataError, match=rf"{at} row 2 \(line 3\) has no label"):
        load_dataset(path=train_csv)


def test_a_pixel_out_of_range_names_its_row(train_csv):
    at = damaged(train_csv, 4, lambda row: row.rsplit(",", 1)[0] + ",256")
    with pytest.raises(
        DataError, match=rf"{at} row 3 \(line 4\) has pixel783 = 256; pixels must be whole"
    ):
        load_dataset(path=train_csv)


def test_a_folder_without_train_csv(tmp_path):
    with pytest.raises(DataError, match=r"holds no train\.csv"):
        load_dataset("csv", path=tmp_path)
