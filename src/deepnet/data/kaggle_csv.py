"""CSV files in the Kaggle digit-recognizer layout: a header ``label,pixel0,...,pixel783`` and
one image per row (its label, then its pixels 0..255 row by row; any square size).

Given a .csv file, it is the training data and LoadOptions' seeded test split is held out of
it. Given a folder holding ``train.csv`` (and optionally ``test.csv``), a labelled
``test.csv`` is the test split. Kaggle's own test.csv has no label column, so it cannot
measure accuracy: a test split is then held out of train.csv instead (with a warning), and
test.csv's images can be labelled with ``deepnet predict``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepnet.data.convert import convert_images
from deepnet.data.labelled import Labelled
from deepnet.data.memory import check_fits
from deepnet.data.options import LoadOptions
from deepnet.errors import DataError

CSV_SUFFIX = ".csv"
TRAIN_CSV, TEST_CSV = "train.csv", "test.csv"
LABEL = "label"


@dataclass(frozen=True)
class Table:
    """A CSV's images, uint8 (n, side, side, 1), and labels (None: the file has none)."""

    images: np.ndarray
    labels: np.ndarray | None


@dataclass(frozen=True)
class Row:
    """One data row as first scanned: where it is, how many values, its first value."""

    number: int  # 1-based data row, as names like "data.csv:row 3" count
    line: int  # 1-based line of the file
    values: int
    label: str


def read_kaggle_csv(path: Path, options: LoadOptions) -> Labelled:
    """A CSV file (test split held out) or a folder of train.csv and test.csv."""
    train_path = path / TRAIN_CSV if path.is_dir() else path
    if not train_path.is_file():
        raise DataError(
            f"{path} holds no {TRAIN_CSV}; give a Kaggle-layout .csv file, or a folder holding "
            f"{TRAIN_CSV} (and optionally {TEST_CSV})."
        )
    train = _labelled(read_table(train_path), train_path)
    test_path = path / TEST_CSV
    test = None
    if path.is_dir() and test_path.is_file() and _header(test_path)[0] == LABEL:
        test = read_table(test_path)
    elif path.is_dir() and test_path.is_file():
        warnings.warn(
            f"{test_path} has no label column (like Kaggle's test set), so it cannot be the "
            f"test split: a test split of {options.test_size:.3g} is held out of {train_path} "
            "instead. Label test.csv's images with `deepnet predict`.",
            stacklevel=3,
        )
    resize, grey = options.resize, options.grayscale
    return Labelled(
        convert_images(train.images, resize, grey),
        train.labels,
        convert_images(test.images, resize, grey) if test else None,
        test.labels if test else None,
        str(path),
    )


def read_table(path: Path) -> Table:
    """Images (and labels, if the header starts with ``label``) from a Kaggle-layout CSV."""
    header, rows = _scan(path)
    has_label = header[0] == LABEL
    n_pixels = len(header) - has_label
    side = math.isqrt(n_pixels)
    expected = [f"pixel{i}" for i in range(n_pixels)]
    if header[has_label:] != expected or side * side != n_pixels or n_pixels == 0:
        shown = ",".join(header[:4]) + (",..." if len(header) > 4 else "")
        raise DataError(
            f"{path} has the header '{shown}' ({len(header)} columns); a Kaggle "
            "digit-recognizer CSV's header is label,pixel0,pixel1,...,pixelN-1 (label optional "
            "for images to predict) with N a square number of pixels, e.g. 784 for 28x28."
        )
    check_fits(len(rows), (side, side, 1), str(path))
    labels = np.array([row.label for row in rows]) if has_label else None
    for row in rows:
        if row.values != len(header):
            raise DataError(
                f"{path} row {row.number} (line {row.line}) has {row.values - has_label} pixel "
                f"values but the header names {n_pixels}; fix or delete that row."
            )
        if has_label and not row.label:
            raise DataError(
                f"{path} row {row.number} (line {row.line}) has no label; label every row, or "
                "delete the unlabelled rows (or the label column, to predict them)."
            )
    pixels = _pixels(path, rows, has_label, n_pixels)
    return Table(pixels.reshape(len(rows), side, side, 1), labels)


def _scan(path: Path) -> tuple[list[str], list[Row]]:
    """The header and each non-blank row's value count and first value, read line by line."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as file:
            header = _names(file.readline())
            rows = []
            for line_number, line in enumerate(file, start=2):
                if line.strip():
                    first = line.split(",", 1)[0].strip()
                    rows.append(Row(len(rows) + 1, line_number, line.count(",") + 1, first))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path} as a CSV text file: {exc}.") from exc
    if not rows:
        raise DataError(f"{path} has no rows of images under its header; add some.")
    return header, rows


def _header(path: Path) -> list[str]:
    try:
        with path.open(encoding="utf-8-sig", newline="") as file:
            return _names(file.readline())
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path} as a CSV text file: {exc}.") from exc


def _names(line: str) -> list[str]:
    return [name.strip().lower() for name in line.split(",")]


def _pixels(path: Path, rows: list[Row], has_label: bool, n_pixels: int) -> np.ndarray:
    """The pixel columns as uint8; the first non-numeric or out-of-range value is named."""
    columns = range(int(has_label), int(has_label) + n_pixels)
    try:
        values = np.loadtxt(
            path,
            delimiter=",",
            skiprows=1,
            usecols=columns,
            dtype=np.float32,
            ndmin=2,
            encoding="utf-8-sig",
        )
    except ValueError:
        raise _first_non_numeric(path, rows, has_label) from None
    ok = (values >= 0) & (values <= 255) & (values == np.round(values))
    if not ok.all():
        index, column = np.argwhere(~ok)[0]
        row = rows[index]
        raise DataError(
            f"{path} row {row.number} (line {row.line}) has pixel{column} = "
            f"{values[index, column]:g}; pixels must be whole numbers 0..255. Fix that row."
        )
    return values.astype(np.uint8)


def _first_non_numeric(path: Path, rows: list[Row], has_label: bool) -> DataError:
    with path.open(encoding="utf-8-sig", newline="") as file:
        lines = file.read().splitlines()
    for row in rows:
        fields = lines[row.line - 1].split(",")[int(has_label) :]
        for column, text in enumerate(fields):
            try:
                float(text)
            except ValueError:
                return DataError(
                    f"{path} row {row.number} (line {row.line}) has pixel{column} = "
                    f"{text.strip()!r}, not a number; pixels must be whole numbers 0..255. "
                    "Fix that row."
                )
    return DataError(f"{path} holds values numpy cannot read as numbers; check the file.")


def _labelled(table: Table, path: Path) -> Table:
    if table.labels is None:
        raise DataError(
            f"{path} has no label column, so it cannot be trained on (it looks like Kaggle's "
            "unlabelled test.csv); give the labelled train.csv, or label these images with "
            "`deepnet predict`."
        )
    return table
