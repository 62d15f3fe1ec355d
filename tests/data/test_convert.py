import numpy as np
import pytest
from PIL import Image

from deepnet.data.convert import convert_images, decode, grey, read_header, to_uint8
from deepnet.errors import DataError
from tests.data.image_files import tinted

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (4, 9, 11, 3), dtype=np.uint8)


def test_grey_is_pillows_itu_r_601_2_luma():
    pillow = np.stack([np.asarray(Image.fromarray(image).convert("L")) for image in RGB])
    assert np.array_equal(grey(RGB)[..., 0], pillow)


def test_resizing_arrays_is_pillows_bilinear(digits):
    rgb = tinted(digits[0][:3])
    resized = convert_images(rgb, (16, 20), grayscale=False)
    pillow = Image.fromarray(rgb[1]).resize((20, 16), Image.Resampling.BILINEAR)
    assert resized.shape == (3, 16, 20, 3) and np.array_equal(resized[1], np.asarray(pillow))


def test_floats_become_the_exact_pixels():
    pixels = np.arange(256, dtype=np.uint8)
    assert np.array_equal(to_uint8(pixels / 255.0, "x"), pixels)
    assert np.array_equal(to_uint8((pixels / 255.0).astype(np.float32), "x"), pixels)
    with pytest.raises(DataError, match=r"x holds floats from -0.5 to 1; float pixels must"):
        to_uint8(np.array([-0.5, 1.0]), "x")


def test_colour_palettes_become_rgb_and_cmyk_too(tmp_path):
    image = Image.fromarray(RGB[0])
    image.quantize(16).save(tmp_path / "p.png")
    image.convert("CMYK").save(tmp_path / "c.jpg")
    palette = decode(tmp_path / "p.png", None, grayscale=False)
    assert palette.mode == "P" and palette.pixels.shape == (9, 11, 3)
    assert np.array_equal(palette.pixels, np.asarray(Image.open(tmp_path / "p.png").convert("RGB")))
    assert decode(tmp_path / "c.jpg", None, grayscale=False).pixels.shape == (9, 11, 3)


def test_photos_are_turned_upright_by_their_exif_orientation(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: viewers rotate it 90 degrees clockwise
    Image.fromarray(RGB[0]).save(tmp_path / "side.png", exif=exif)
    assert read_header(tmp_path / "side.png").size == (9, 11)
    upright = decode(tmp_path / "side.png", None, grayscale=False).pixels
    assert np.array_equal(upright, np.rot90(RGB[0], k=-1))
