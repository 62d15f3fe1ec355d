import os
import re
import time

import numpy as np
import pytest
from PIL import Image

from deepnet.data import LoadOptions, load_dataset
from deepnet.data.convert import grey
from deepnet.data.memory import available_memory
from deepnet.errors import DataError
from tests.data.image_files import pil, tinted, write_folder


def by_file(data, paths, images):
    """Each loaded image equals the file it came from (the split hides which is which)."""
    loaded = np.concatenate([data.x_train, data.x_test]).reshape(len(paths), -1)
    wanted = images.reshape(len(paths), -1)
    return {tuple(row) for row in loaded} == {tuple(row) for row in wanted}


def test_png_folder_loads_exactly_with_a_held_out_test_split(tmp_path, digits):
    images, names = digits
    paths = write_folder(tmp_path / "png", images, names)
    data = load_dataset(path=tmp_path / "png")
    assert data.name == "folder" and data.source == str(tmp_path / "png")
    assert data.class_names == ("2", "7") and data.classes == (2, 7)
    assert data.x_train.shape == (100, 28, 28, 1) and data.x_test.shape == (20, 28, 28, 1)
    assert data.counts() == {"2": (50, 10), "7": (50, 10)}  # stratified: 1/6 of each class
    assert by_file(data, paths, images)
    assert data.preprocessing.image_shape == (28, 28) and data.preprocessing.channels == 1


def test_the_held_out_split_is_the_same_every_time_and_follows_the_seed(tmp_path, digits):
    write_folder(tmp_path / "png", *digits)
    first, again = (load_dataset(path=tmp_path / "png") for _ in range(2))
    other = load_dataset(path=tmp_path / "png", options=LoadOptions(split_seed=1))
    assert np.array_equal(first.x_test, again.x_test)
    assert not np.array_equal(first.x_test, other.x_test)
    bigger = load_dataset(path=tmp_path / "png", options=LoadOptions(test_size=0.5))
    assert bigger.counts() == {"2": (30, 30), "7": (30, 30)}


def test_jpeg_folder_loads_close_to_the_digits(tmp_path, digits):
    images, names = digits
    write_folder(tmp_path / "jpg", images, names, ".jpg", quality=95)
    data = load_dataset(path=tmp_path / "jpg", classes=["7", "2"])
    assert data.class_names == ("7", "2") and data.x_train.shape[1:] == (28, 28, 1)
    sevens = np.concatenate([data.x_train[data.y_train == 0], data.x_test[data.y_test == 0]])
    assert abs(sevens.mean() - images[names == "7"].mean()) < 1.0


@pytest.mark.parametrize(
    ("suffix", "save"),
    [(".bmp", {}), (".gif", {}), (".tif", {}), (".webp", {"lossless": True})],
)
def test_other_formats_load_exactly(tmp_path, digits, suffix, save):
    images, names = digits[0][::6], digits[1][::6]
    paths = write_folder(tmp_path / "f", images, names, suffix, **save)
    data = load_dataset(path=tmp_path / "f")
    # WebP stores grey as RGB; every other format keeps grey (GIF through a grey palette)
    expected = np.repeat(images, 3, axis=3) if suffix == ".webp" else images
    assert by_file(data, paths, expected)


def test_train_and_test_subfolders_are_the_splits(tmp_path, digits):
    images, names = digits
    write_folder(tmp_path / "d" / "train", images[10:110], names[10:110])
    write_folder(
        tmp_path / "d" / "test",
        images[[*range(10), *range(110, 120)]],
        names[[*range(10), *range(110, 120)]],
    )
    data = load_dataset(path=tmp_path / "d")
    assert data.counts() == {"2": (50, 10), "7": (50, 10)}
    assert np.array_equal(data.x_test[data.y_test == 0], images[:10])


def test_rgb_folder_keeps_its_colours_and_grayscale_greys_it_as_pillow(tmp_path, digits):
    images, names = tinted(digits[0]), digits[1]
    paths = write_folder(tmp_path / "rgb", images, names)
    data = load_dataset(path=tmp_path / "rgb")
    assert data.channels == 3 and data.preprocessing.channels == 3
    assert by_file(data, paths, images)
    greyed = load_dataset(path=tmp_path / "rgb", options=LoadOptions(grayscale=True))
    assert greyed.channels == 1 and greyed.preprocessing.grayscale
    pillow = np.stack([np.asarray(Image.open(p).convert("L"))[..., None] for p in paths])
    assert by_file(greyed, paths, pillow) and np.array_equal(grey(images), pillow)


def test_alpha_is_dropped_with_a_note(tmp_path, digits):
    rgb = tinted(digits[0][:12])
    rgba = np.concatenate([rgb, np.full((12, 28, 28, 1), 128, np.uint8)], axis=3)
    for i, (image, name) in enumerate(zip(rgba, digits[1][[0] * 6 + [-1] * 6], strict=True)):
        (tmp_path / "a" / name).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, "RGBA").save(tmp_path / "a" / name / f"{i}.png")
    with pytest.warns(UserWarning, match=r"12 images under .* have an alpha channel .* dropped"):
        data = load_dataset(path=tmp_path / "a")
    assert data.channels == 3 and {
        tuple(r) for r in data.x_train.reshape(len(data.x_train), -1)
    } <= {tuple(r) for r in rgb.reshape(12, -1)}


def test_sixteen_bit_png_is_scaled_to_eight_bits(tmp_path, digits):
    images, names = digits[0][::10], digits[1][::10]
    for i, (image, name) in enumerate(zip(images, names, strict=True)):
        (tmp_path / "w" / name).mkdir(parents=True, exist_ok=True)
        wide = image[..., 0].astype(np.uint16) * 257  # 0..255 -> 0..65535
        Image.fromarray(wide).save(tmp_path / "w" / name / f"{i}.png")
    assert Image.open(next((tmp_path / "w" / "2").iterdir())).mode == "I;16"
    data = load_dataset(path=tmp_path / "w")
    assert by_file(data, list(range(len(images))), images)


def test_mixed_sizes_are_refused_naming_two_files_unless_resized(tmp_path, digits):
    images, names = digits[0][:24], digits[1][[0] * 12 + [-1] * 12]
    paths = write_folder(tmp_path / "m", images, names)
    pil(images[5]).resize((40, 30)).save(paths[5])
    with pytest.raises(
        DataError,
        match=rf"images differ in size: {re.escape(str(paths[0]))} is 28x28 but "
        rf"{re.escape(str(paths[5]))} is 30x40; resize them all on load with --resize HxW",
    ):
        load_dataset(path=tmp_path / "m")
    data = load_dataset(path=tmp_path / "m", options=LoadOptions(resize=(32, 32)))
    assert data.image_shape == (32, 32) and data.preprocessing.resize
    expected = np.asarray(Image.open(paths[5]).resize((32, 32), Image.Resampling.BILINEAR))
    loaded = np.concatenate([data.x_train, data.x_test])[..., 0]
    assert any(np.array_equal(image, expected) for image in loaded)


def test_mixed_channels_are_refused_suggesting_grayscale(tmp_path, digits):
    images, names = digits[0][:24], digits[1][[0] * 12 + [-1] * 12]
    paths = write_folder(tmp_path / "m", images, names)
    pil(tinted(images[3:4])[0]).save(paths[3])
    with pytest.raises(
        DataError,
        match=rf"images differ in channels: {re.escape(str(paths[0]))} is L \(1 channel\) but "
        rf"{re.escape(str(paths[3]))} is RGB \(3 channels\); load them all grey with --grayscale",
    ):
        load_dataset(path=tmp_path / "m")
    assert load_dataset(path=tmp_path / "m", options=LoadOptions(grayscale=True)).channels == 1


@pytest.mark.parametrize("damage", ["text", "truncated png", "truncated jpeg"])
def test_a_bad_file_is_named_and_can_be_skipped(tmp_path, digits, damage):
    images, names = digits[0][:24], digits[1][[0] * 12 + [-1] * 12]
    suffix = ".jpg" if damage == "truncated jpeg" else ".png"
    paths = write_folder(tmp_path / "b", images, names, suffix)
    bad = paths[7]
    if damage == "text":
        bad.write_text("not an image\n")
        message = "is not an image Pillow can read"
    else:
        bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
        message = "is not a complete image"
    with pytest.raises(DataError, match=rf"{re.escape(str(bad))} {message} .*--skip-bad"):
        load_dataset(path=tmp_path / "b")
    data = load_dataset(path=tmp_path / "b", options=LoadOptions(skip_bad=True))
    assert data.skipped == (str(bad),)
    assert len(data.y_train) + len(data.y_test) == 23


def test_hidden_files_and_os_clutter_are_passed_over(tmp_path, digits):
    write_folder(tmp_path / "c", digits[0][::10], digits[1][::10])
    (tmp_path / "c" / "2" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (tmp_path / "c" / "7" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    assert len(load_dataset(path=tmp_path / "c").skipped) == 0


def test_class_folders_named_by_words(tmp_path, digits):
    images, names = digits
    write_folder(tmp_path / "w", images, np.where(names == "2", "two", "seven"))
    data = load_dataset(path=tmp_path / "w")
    assert data.class_names == ("seven", "two") and data.classes == (0, 1)
    assert load_dataset(path=tmp_path / "w", classes="two,seven").class_names == ("two", "seven")


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("empty class", r"class folder .*[/\\]7 holds no images; add images to it or remove"),
        ("one class", r"has 1 class folder \(2\); a classifier needs at least two"),
        ("loose files", r"holds files itself \(loose\.png\); .* Move the files into class"),
        ("one image", r"class 7 of .* has 1 image; holding out a test split needs at least 2"),
        (
            "test classes",
            r"train/ and test/ hold different class folders \(7 only in .*train; 8 only in "
            r".*test\)",
        ),
    ],
)
def test_bad_layouts(tmp_path, digits, layout, message):
    images, names = digits
    root = tmp_path / "d"
    if layout == "test classes":
        write_folder(root / "train", images, names)
        write_folder(root / "test", images[[0, 1, -2, -1]], ["2", "2", "8", "8"])
    else:
        keep = names == "2" if layout in ("empty class", "one class") else slice(None)
        write_folder(root, images[keep], names[keep])
    if layout == "empty class":
        (root / "7").mkdir()
    elif layout == "loose files":
        pil(images[0]).save(root / "loose.png")
    elif layout == "one image":
        write_folder(tmp_path / "x", images[-1:], names[-1:])
        for f in (root / "7").iterdir():
            f.unlink()
        os.replace(next((tmp_path / "x" / "7").iterdir()), root / "7" / "only.png")
    with pytest.raises(DataError, match=message):
        load_dataset(path=root)


def test_a_folder_too_big_for_memory_is_refused_before_decoding(tmp_path):
    """Links to one 8000x8000 PNG (64 MB decoded, a few KB on disk): enough of them to
    exceed the memory this machine has, refused from the first header in well under the
    time decoding a single one would take."""
    big = tmp_path / "big.png"
    Image.new("L", (8000, 8000)).save(big)
    n = available_memory() // (8000 * 8000) + 1
    for name in ("a", "b"):
        (tmp_path / "d" / name).mkdir(parents=True)
        for i in range(n // 2 + 1):
            os.link(big, tmp_path / "d" / name / f"{i}.png")
    started = time.perf_counter()
    with pytest.raises(
        DataError,
        match=r"holds \d+ images of 8000x8000x1: about [\d.]+ GiB as uint8 .* GiB of memory "
        r"is available\. Load them smaller \(--resize",
    ):
        load_dataset(path=tmp_path / "d")
    assert time.perf_counter() - started < 5


def test_images_smaller_than_the_network_takes_say_the_minimum(tmp_path, digits):
    images, names = digits[0][::10, 11:16, 11:16], digits[1][::10]
    write_folder(tmp_path / "t", images, names)
    with pytest.raises(
        DataError, match=r"are 5x5 pixels, smaller than the network's minimum of 6x6 .*--resize"
    ):
        load_dataset(path=tmp_path / "t")
    assert load_dataset(path=tmp_path / "t", options=LoadOptions(resize=(6, 6))).image_shape == (
        6,
        6,
    )


def test_skipping_every_file_of_a_class_is_refused(tmp_path, digits):
    images, names = digits[0][::10], digits[1][::10]
    paths = write_folder(tmp_path / "d" / "train", images, names)
    write_folder(tmp_path / "d" / "test", images, names)
    for path in paths[len(paths) // 2 :]:  # every 7 of train/
        path.write_text("lost")
    with pytest.raises(
        DataError, match=r"class 7 of .* has no readable images: all its files were skipped \(6"
    ):
        load_dataset(path=tmp_path / "d", options=LoadOptions(skip_bad=True))
