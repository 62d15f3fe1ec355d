"""An image folder: one subfolder per class (its name is the class name), optionally inside
``train/`` and ``test/`` subfolders; without them LoadOptions' seeded test split is held out.

Every file under a class folder (recursively, in sorted order) is an image, decoded by Pillow
from its content (PNG, JPEG, BMP, GIF, TIFF, WebP); hidden files and the thumbnails caches
operating systems leave (Thumbs.db, desktop.ini) are passed over. The data set's size is
checked against memory from the first image's header before anything is decoded.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepnet.data.convert import BadImageError, Decoded, Header, decode, read_header
from deepnet.data.labelled import Labelled
from deepnet.data.memory import check_fits
from deepnet.data.options import LoadOptions
from deepnet.errors import DataError

OS_CLUTTER = frozenset({"thumbs.db", "desktop.ini"})
TRAIN, TEST = "train", "test"


@dataclass(frozen=True)
class ClassFiles:
    """The image files of one split, each with the name of its class folder."""

    files: tuple[Path, ...]
    labels: tuple[str, ...]


@dataclass(frozen=True)
class Images:
    """Decoded images and the files they came from; ``skipped``: unreadable files left out."""

    pixels: np.ndarray
    files: tuple[Path, ...]
    skipped: tuple[str, ...]


def read_image_folder(path: Path, options: LoadOptions) -> Labelled:
    """The images under ``path``, labelled by their class folders."""
    splits = {child.name.lower(): child for child in _subfolders(path)}
    if set(splits) >= {TRAIN, TEST}:
        train, test = class_files(splits[TRAIN]), class_files(splits[TEST])
        _check_same_classes(train, test, splits[TRAIN], splits[TEST])
    elif TRAIN in splits and len(splits) == 1:
        train, test = class_files(splits[TRAIN]), None
    else:
        train, test = class_files(path), None
    files = train.files + (test.files if test else ())
    images = decode_files(files, options, str(path))
    label_of = dict(zip(files, train.labels + (test.labels if test else ()), strict=True))
    labels = np.array([label_of[f] for f in images.files])
    train_files = set(train.files)
    n_train = sum(f in train_files for f in images.files)
    _check_none_emptied(train, labels[:n_train], path, images.skipped)
    if test is None:
        return Labelled(images.pixels, labels, None, None, str(path), skipped=images.skipped)
    _check_none_emptied(test, labels[n_train:], path, images.skipped)
    return Labelled(  # train files come first: both splits are views, not copies
        images.pixels[:n_train],
        labels[:n_train],
        images.pixels[n_train:],
        labels[n_train:],
        str(path),
        skipped=images.skipped,
    )


def class_files(folder: Path) -> ClassFiles:
    """The files of each class folder in ``folder``; every class folder must hold some."""
    loose = [f.name for f in _entries(folder) if f.is_file()]
    if loose:
        raise DataError(
            f"{folder} holds files itself ({', '.join(loose[:2])}); an image folder holds one "
            "subfolder per class (its name is the class name), with that class's images in it. "
            "Move the files into class folders."
        )
    classes = _subfolders(folder)
    if len(classes) < 2:
        found = f" ({classes[0].name})" if classes else ""
        raise DataError(
            f"{folder} has {len(classes)} class folder{found}; a classifier needs at least two: "
            "one subfolder per class, holding that class's images."
        )
    files: list[Path] = []
    labels: list[str] = []
    for child in classes:
        found = image_files(child)
        if not found:
            raise DataError(
                f"class folder {child} holds no images; add images to it or remove the folder."
            )
        files += found
        labels += [child.name] * len(found)
    return ClassFiles(tuple(files), tuple(labels))


def image_files(folder: Path) -> list[Path]:
    """Every file under ``folder``, recursively and sorted, but hidden files and OS clutter."""
    return sorted(
        f
        for f in folder.rglob("*")
        if f.is_file()
        and not any(part.startswith(".") for part in f.relative_to(folder).parts)
        and f.name.lower() not in OS_CLUTTER
    )


def decode_files(files: tuple[Path, ...], options: LoadOptions, source: str) -> Images:
    """All ``files`` decoded into one uint8 (n, h, w, c) array, after checking it fits.

    Every image must decode to the first one's size and channels (unless options resize or
    grey them); unreadable files raise, or are skipped and named if ``options.skip_bad``.
    """
    skipped: list[str] = []
    first = _first_readable(files, options, skipped)
    height, width = options.resize or first.size
    check_fits(len(files), (height, width, 1 if options.grayscale else first.channels), source)
    pixels: np.ndarray | None = None
    kept: list[Path] = []
    reference: tuple[Path, Decoded] | None = None
    alpha = 0
    for path in files[len(skipped) :]:
        try:
            image = decode(path, options.resize, options.grayscale)
        except BadImageError:
            if not options.skip_bad:
                raise
            skipped.append(str(path))
            continue
        if reference is None:
            reference = (path, image)
            pixels = np.empty((len(files), *image.pixels.shape), np.uint8)
        elif image.pixels.shape != reference[1].pixels.shape:
            raise _mismatch(reference, (path, image), options)
        pixels[len(kept)] = image.pixels  # type: ignore[index]
        kept.append(path)
        alpha += image.had_alpha
    if pixels is None:
        raise DataError(f"no file under {source} is a readable image; {len(skipped)} skipped.")
    if alpha:
        warnings.warn(
            f"{alpha} images under {source} have an alpha channel (first: "
            f"{next(str(p) for p in kept)}...); it is dropped, as the network reads RGB.",
            stacklevel=2,
        )
    return Images(pixels[: len(kept)], tuple(kept), tuple(skipped))


def _first_readable(files: tuple[Path, ...], options: LoadOptions, skipped: list[str]) -> Header:
    """The header of the first readable file; the unreadable ones before it are added to
    ``skipped`` (if allowed), so decoding starts after them."""
    for path in files:
        try:
            return read_header(path)
        except BadImageError:
            if not options.skip_bad:
                raise
            skipped.append(str(path))
    raise DataError(f"none of the {len(files)} files is a readable image; all were skipped.")


def _mismatch(a: tuple[Path, Decoded], b: tuple[Path, Decoded], options: LoadOptions) -> DataError:
    (path_a, image_a), (path_b, image_b) = a, b
    (ha, wa, ca), (hb, wb, cb) = image_a.pixels.shape, image_b.pixels.shape
    if (ha, wa) != (hb, wb):
        return DataError(
            f"images differ in size: {path_a} is {ha}x{wa} but {path_b} is {hb}x{wb}; resize "
            f"them all on load with --resize HxW (e.g. --resize {ha}x{wa})."
        )
    return DataError(
        f"images differ in channels: {path_a} is {image_a.mode} ({ca} channel"
        f"{'s' if ca > 1 else ''}) but {path_b} is {image_b.mode} ({cb} channel"
        f"{'s' if cb > 1 else ''}); load them all grey with --grayscale, or convert the files "
        "to one mode."
    )


def _check_same_classes(
    train: ClassFiles, test: ClassFiles, train_dir: Path, test_dir: Path
) -> None:
    only_train = sorted(set(train.labels) - set(test.labels))
    only_test = sorted(set(test.labels) - set(train.labels))
    if only_train or only_test:
        where = (
            (f"{', '.join(only_train)} only in {train_dir}" if only_train else "")
            + ("; " if only_train and only_test else "")
            + (f"{', '.join(only_test)} only in {test_dir}" if only_test else "")
        )
        raise DataError(
            f"train/ and test/ hold different class folders ({where}); give both the same "
            "class folders."
        )


def _check_none_emptied(
    split: ClassFiles, kept: np.ndarray, path: Path, skipped: tuple[str, ...]
) -> None:
    """A class whose every file was skipped as unreadable would silently vanish."""
    emptied = sorted(set(split.labels) - set(kept.tolist()))
    if emptied:
        raise DataError(
            f"class {emptied[0]} of {path} has no readable images: all its files were skipped "
            f"({len(skipped)} skipped in all); replace them or remove the class folder."
        )


def _entries(folder: Path) -> list[Path]:
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        raise DataError(f"cannot list {folder}: {exc}; check the path and permissions.") from exc
    return [e for e in entries if not e.name.startswith(".") and e.name.lower() not in OS_CLUTTER]


def _subfolders(folder: Path) -> list[Path]:
    return [e for e in _entries(folder) if e.is_dir()]
