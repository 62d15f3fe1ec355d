"""Image files and arrays to uint8 (h, w, c) pixels, converted as LoadOptions ask.

Decoding goes through Pillow, which reads PNG, JPEG, BMP, GIF, TIFF and WebP by content (not
by file name). Modes become grey (1 channel) or RGB (3): palette images by their palette
(grey palettes stay grey), 16-bit and 32-bit grey scaled to 8 bits, alpha dropped (the network
reads no transparency; the caller notes it), CMYK and other colour spaces to RGB; photos are
turned upright by their EXIF orientation, as viewers show them. ``--grayscale``
uses Pillow's 'L' conversion (ITU-R 601-2 luma) and ``--resize`` Pillow's bilinear filter.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from deepnet.errors import DataError

GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
Size = tuple[int, int]  # (height, width)


class BadImageError(DataError):
    """A file Pillow cannot read as an image, or a truncated one (``skip_bad`` skips it)."""


@dataclass(frozen=True)
class Header:
    """What an image file declares before its pixels are decoded."""

    size: Size
    mode: str

    @property
    def channels(self) -> int:
        return 1 if self.mode in GREY_MODES else 3


@dataclass(frozen=True)
class Decoded:
    """One image's uint8 (h, w, c) pixels, its file's mode, and whether alpha was dropped."""

    pixels: np.ndarray
    mode: str
    had_alpha: bool


def read_header(path: Path) -> Header:
    """The file's size and mode, read without decoding its pixels."""
    with _opened(path) as image:
        return Header((image.height, image.width), image.mode)


def decode(path: Path, resize: Size | None, grayscale: bool) -> Decoded:
    """The pixels of ``path``, grey or RGB, greyed and resized if asked."""
    with _opened(path) as image:
        try:
            image.load()
        except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt data
            raise BadImageError(
                f"{path} is not a complete image ({exc}); replace the file, or skip unreadable "
                "files with --skip-bad."
            ) from exc
        mode, had_alpha = image.mode, image.mode in ALPHA_MODES or "transparency" in image.info
        plain = _plain(ImageOps.exif_transpose(image), path)
    if grayscale and plain.mode == "RGB":
        plain = plain.convert("L")
    if resize is not None and (plain.height, plain.width) != resize:
        plain = plain.resize((resize[1], resize[0]), Image.Resampling.BILINEAR)
    pixels = np.asarray(plain, dtype=np.uint8)
    return Decoded(pixels[..., np.newaxis] if pixels.ndim == 2 else pixels, mode, had_alpha)


def convert_images(images: np.ndarray, resize: Size | None, grayscale: bool) -> np.ndarray:
    """uint8 (n, h, w, c) images greyed and resized as ``decode`` would the same files."""
    if grayscale and images.shape[3] == 3:
        images = grey(images)
    if resize is None or images.shape[1:3] == resize:
        return images
    out = np.empty((len(images), *resize, images.shape[3]), np.uint8)
    mode = "L" if images.shape[3] == 1 else "RGB"
    for i, image in enumerate(images):
        source = Image.fromarray(image[..., 0] if mode == "L" else image, mode)
        resized = np.asarray(source.resize((resize[1], resize[0]), Image.Resampling.BILINEAR))
        out[i] = resized[..., np.newaxis] if mode == "L" else resized
    return out


def grey(images: np.ndarray) -> np.ndarray:
    """RGB (..., 3) uint8 to grey (..., 1) exactly as Pillow's convert("L"): ITU-R 601-2 luma
    L = R * 299/1000 + G * 587/1000 + B * 114/1000, in its 16-bit fixed point."""
    r, g, b = (images[..., i].astype(np.uint32) for i in range(3))
    luma = (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16
    return luma.astype(np.uint8)[..., np.newaxis]


def to_uint8(x: np.ndarray, what: str) -> np.ndarray:
    """uint8 pixels from uint8, whole numbers 0..255, or floats in [0, 1] (round(x * 255))."""
    if x.dtype == np.uint8:
        return x
    if x.dtype.kind == "f":
        if x.size and (np.nanmin(x) < 0 or np.nanmax(x) > 1 or np.isnan(x).any()):
            raise DataError(
                f"{what} holds floats from {np.nanmin(x):g} to {np.nanmax(x):g}; float pixels "
                "must lie in [0, 1] (e.g. x / 255) and uint8 pixels in 0..255. Rescale them."
            )
        return np.rint(x * 255).astype(np.uint8)
    if x.dtype.kind in "iu":
        if x.size and (x.min() < 0 or x.max() > 255):
            raise DataError(
                f"{what} holds whole numbers from {x.min()} to {x.max()}; pixels must lie in "
                "0..255 (or be floats in [0, 1]). Rescale them."
            )
        return x.astype(np.uint8)
    raise DataError(f"{what} holds {x.dtype} values; pass uint8 pixels or floats in [0, 1].")


def _opened(path: Path) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(
            f"{path} declares an image too large to decode safely ({exc}); resize the file "
            "itself, or remove it."
        ) from exc
    except (OSError, ValueError, SyntaxError) as exc:  # UnidentifiedImageError is an OSError
        raise BadImageError(
            f"{path} is not an image Pillow can read ({exc}); remove it, convert it to PNG or "
            "JPEG, or skip unreadable files with --skip-bad."
        ) from exc


def _plain(image: Image.Image, path: Path) -> Image.Image:
    """The image as mode 'L' (grey) or 'RGB'."""
    mode = image.mode
    if mode in ("L", "RGB"):
        return image
    if mode in ("1", "LA", "La"):
        return image.convert("L")
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_eight_bits(np.asarray(image), mode, path), "L")
    if mode in ("P", "PA"):
        rgb = np.asarray(image.convert("RGB"))
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
            return Image.fromarray(rgb[..., 0], "L")  # a grey palette (GIFs of grey images)
        return Image.fromarray(rgb, "RGB")
    return image.convert("RGB")  # RGBA, CMYK, YCbCr, LAB, HSV


def _eight_bits(pixels: np.ndarray, mode: str, path: Path) -> np.ndarray:
    """Wide grey pixels to 0..255: 16-bit ones (mode I;16, or I/F values above 255) / 257,
    I/F values within 0..255 as they are."""
    low, top = (float(pixels.min()), float(pixels.max())) if pixels.size else (0.0, 0.0)
    if low < 0 or top > 65535:
        raise DataError(
            f"{path} holds grey values from {low:g} to {top:g}, outside 16 bits; save it as an "
            "8- or 16-bit image."
        )
    if top <= 255 and not mode.startswith("I;16"):
        return np.rint(pixels).astype(np.uint8)
    return np.rint(pixels / 257).astype(np.uint8)
