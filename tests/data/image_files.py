"""Writing real image files, CSVs and class folders from MNIST digits, for tests of the readers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image


def pil(image: np.ndarray) -> Image.Image:
    """A (h, w, c) uint8 array as a Pillow image ('L' or 'RGB')."""
    return Image.fromarray(image[..., 0] if image.shape[2] == 1 else image)


def write_folder(
    root: Path, images: np.ndarray, labels: Sequence[str], suffix: str = ".png", **save
) -> list[Path]:
    """Save image i as root/<labels[i]>/<i>.<suffix>; the paths, in image order."""
    paths = []
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        path = root / str(label) / f"{i:04d}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        pil(image).save(path, **save)
        paths.append(path)
    return paths


def tinted(grey: np.ndarray) -> np.ndarray:
    """Grey (n, h, w, 1) digits made RGB: each image tinted by its own colour."""
    rng = np.random.default_rng(0)
    colours = rng.uniform(0.3, 1.0, (len(grey), 1, 1, 3))
    return np.rint(grey * colours).astype(np.uint8)


def csv_text(images: np.ndarray, labels: Sequence[object] | None) -> str:
    """Kaggle's digit-recognizer layout: a header, then one image per row."""
    n_pixels = images[0].size
    header = ",".join(f"pixel{i}" for i in range(n_pixels))
    lines = [f"label,{header}" if labels is not None else header]
    for i, image in enumerate(images):
        pixels = ",".join(map(str, image.ravel()))
        lines.append(f"{labels[i]},{pixels}" if labels is not None else pixels)
    return "\n".join(lines) + "\n"
