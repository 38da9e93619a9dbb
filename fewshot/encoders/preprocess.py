"""Image preprocessing: PIL image -> float tensor [C, H, W], described by a plain dict.

The description goes into the encoder's fingerprint, so two encoders with equal
weights but different preprocessing are never confused by an index.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image, ImageOps

_INTERP = {"box": Image.Resampling.BOX, "bilinear": Image.Resampling.BILINEAR,
           "bicubic": Image.Resampling.BICUBIC, "nearest": Image.Resampling.NEAREST,
           "lanczos": Image.Resampling.LANCZOS}


def _border_mean(a: np.ndarray) -> float:
    """Mean of the outermost rows and columns: the background of a drawing."""
    return float(np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]]).mean())


@dataclass(frozen=True)
class ImagePreprocess:
    """How an encoder sees an image.

    ``resize="pad"``: pad to a square with the background colour, then resize to
    ``size`` (keeps handwriting undistorted). ``resize="crop"``: resize the shorter
    side to ``resize_size`` then centre-crop ``size`` (the ImageNet recipe).
    ``invert="auto"`` makes ink bright on a dark background, as Omniglot encoders
    are trained, by inverting grayscale images whose border (the background) is
    lighter than mid-grey.
    """

    size: int = 28
    channels: int = 1
    resize: str = "pad"
    resize_size: int = 0
    invert: str = "auto"
    interpolation: str = "box"
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        if self.channels not in (1, 3) or self.resize not in ("pad", "crop") or self.invert not in ("auto", "never"):
            raise ValueError(f"invalid preprocessing {self}")
        if self.interpolation not in _INTERP:
            raise ValueError(f"unknown interpolation {self.interpolation!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ImagePreprocess":
        d = dict(d)
        d["mean"], d["std"] = tuple(d.get("mean", (0.0,))), tuple(d.get("std", (1.0,)))
        return cls(**d)

    def to_array(self, im: Image.Image) -> np.ndarray:
        """uint8 [size, size] or [size, size, 3], before normalisation."""
        im = im.convert("L" if self.channels == 1 else "RGB")
        interp = _INTERP[self.interpolation]
        if self.resize == "pad":
            w, h = im.size
            if w != h:
                corner = im.getpixel((0, 0))
                side = max(w, h)
                im = ImageOps.pad(im, (side, side), color=corner, centering=(0.5, 0.5))
            if im.size != (self.size, self.size):
                im = im.resize((self.size, self.size), interp)
        else:
            w, h = im.size
            s = (self.resize_size or self.size) / min(w, h)
            im = im.resize((max(self.size, round(w * s)), max(self.size, round(h * s))), interp)
            w, h = im.size
            left, top = (w - self.size) // 2, (h - self.size) // 2
            im = im.crop((left, top, left + self.size, top + self.size))
        a = np.asarray(im, dtype=np.uint8)
        if self.channels == 1 and self.invert == "auto" and _border_mean(a) > 127.5:
            a = 255 - a
        return a

    def normalize(self, batch: np.ndarray) -> torch.Tensor:
        """uint8 [n, h, w(, c)] -> float [n, c, h, w], scaled to [0, 1] then (x - mean) / std."""
        x = torch.from_numpy(np.ascontiguousarray(batch)).float().div_(255.0)
        x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return ((x - mean) / std).contiguous()
