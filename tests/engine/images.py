"""Colour images of several sizes made from real digits, for the engines' channel tests."""

from __future__ import annotations

import numpy as np

# Crops of 32x32 images: CIFAR-10's size, odd sides, and near the network's 6x6 minimum.
SIZES = {
    "32x32": (slice(None), slice(None)),
    "29x31": (slice(1, 30), slice(0, 31)),
    "7x9": (slice(12, 19), slice(11, 20)),
}


def colour_digits(digits: np.ndarray, seed: int = 1) -> np.ndarray:
    """28x28 grey digits (n, 28, 28) or (n, 28, 28, 1) as RGB 32x32 images (n, 32, 32, 3)
    uint8: each tinted a colour of its own (seeded), padded by 2 pixels a side."""
    grey = digits.reshape(-1, 28, 28, 1)
    tint = np.random.default_rng(seed).uniform(0.3, 1.0, (len(grey), 1, 1, 3))
    return np.pad(grey * tint, ((0, 0), (2, 2), (2, 2), (0, 0))).round().astype(np.uint8)


def crop(images: np.ndarray, size: str) -> np.ndarray:
    """``images`` (n, 32, 32, c) cropped to one of SIZES, as a contiguous array."""
    rows, cols = SIZES[size]
    return np.ascontiguousarray(images[:, rows, cols])
