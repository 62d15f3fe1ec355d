"""How images are loaded and made network inputs: recorded in a run, so that evaluating,
reporting and predicting later use exactly the images and conversions it trained on."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from deepnet.errors import ConfigError

DEFAULT_TEST_SIZE = 1 / 6  # MNIST's share: 10000 of 70000 images


@dataclass(frozen=True)
class LoadOptions:
    """Conversions and the held-out split applied while a source is read.

    ``resize``: (height, width) every image is resized to (None: keep sizes, which must then
    agree). ``grayscale``: colour images become grey. ``test_size`` and ``split_seed``: the
    stratified test split held out of a source that has none of its own. ``skip_bad``: skip
    unreadable image files (reported) instead of refusing the source.
    """

    resize: tuple[int, int] | None = None
    grayscale: bool = False
    test_size: float = DEFAULT_TEST_SIZE
    split_seed: int = 0
    skip_bad: bool = False

    def __post_init__(self) -> None:
        """Refuse options no source could honour, before anything is read."""
        if self.resize is not None and (
            len(self.resize) != 2 or not all(isinstance(s, int) and s > 0 for s in self.resize)
        ):
            raise ConfigError(
                f"resize={self.resize!r} is not a size: give (height, width) in whole pixels, "
                "e.g. (32, 32)."
            )
        if not 0 < self.test_size < 1:
            raise ConfigError(
                f"test_size={self.test_size!r} is not allowed: it is the share of images held "
                f"out for testing, above 0 and below 1 (default {DEFAULT_TEST_SIZE:.4g})."
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoadOptions:
        resize = data.get("resize")
        return cls(**{**data, "resize": tuple(resize) if resize else None})


DEFAULT_OPTIONS = LoadOptions()


@dataclass(frozen=True)
class Preprocessing:
    """What the network takes: images of ``image_shape`` (height, width) with ``channels``
    (1 grey, 3 RGB), pixels scaled by ``scale`` (the seed's 1/255), and whether other sizes
    are resized (``resize``) and colour made grey (``grayscale``) on the way in."""

    image_shape: tuple[int, int]
    channels: int
    resize: bool = False
    grayscale: bool = False
    scale: float = 1 / 255

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        return cls(**{**data, "image_shape": tuple(data["image_shape"])})


SIZE = re.compile(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*")


def parse_size(text: str) -> tuple[int, int]:
    """(height, width) from "HxW" (e.g. "32x32"), as --resize takes it."""
    match = SIZE.fullmatch(text)
    if not match or 0 in (size := (int(match[1]), int(match[2]))):
        raise ConfigError(
            f"{text!r} is not an image size: give HEIGHTxWIDTH in pixels, e.g. 32x32 or 28x28."
        )
    return size
