"""``lowres``: a generated low-resolution classification set whose classes differ only in fine detail.

Each 32x32 image shows one patch of a fine periodic texture (the class: stripes, checkerboards,
dots or grids with periods of 2 to 4 pixels, in four orientations) in two random colours, at a random
place and size on a textured background, among clutter strokes. Colour, position and size say
nothing about the class; the period and orientation do. Downsampling the image to 16 px averages the
1-pixel patterns away (they alias to flat colour or to each other), and a network that discards
pixels early must recover them from what its first strided layer kept: the setting where the paper
expects SPD-Conv to help. Written in the image-folder layout (``train/``, ``val/``, ``test/`` with
one folder per class) that every command reads.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import torch

from ..io import write_image
from .draw import background, composite, contrasting_colour, stroke_mask, to_uint8, uniform

__all__ = ["LOWRES_CLASSES", "LOWRES_DEFAULTS", "lowres_image", "make_lowres", "pattern", "sample_generator"]

# class name -> binary pattern on integer pixel coordinates (x, y), in font-free "period-size" units
_PATTERNS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "hstripes-2": lambda x, y: y % 2 == 0,
    "vstripes-2": lambda x, y: x % 2 == 0,
    "checker-1": lambda x, y: (x + y) % 2 == 0,
    "hstripes-4": lambda x, y: y % 4 < 2,
    "vstripes-4": lambda x, y: x % 4 < 2,
    "checker-2": lambda x, y: (x // 2 + y // 2) % 2 == 0,
    "diagonal-4": lambda x, y: (x + y) % 4 < 2,
    "antidiagonal-4": lambda x, y: (x - y) % 4 < 2,
    "dots-3": lambda x, y: (x % 3 == 0) & (y % 3 == 0),
    "grid-3": lambda x, y: (x % 3 == 0) | (y % 3 == 0),
}
LOWRES_CLASSES = tuple(sorted(_PATTERNS))  # image-folder order: label = index
LOWRES_DEFAULTS = {"img_size": 32, "train": 300, "val": 50, "test": 100, "difficulty": 1.0, "seed": 0}
_SPLITS = ("train", "val", "test")


def sample_generator(seed: int, *keys: object) -> torch.Generator:
    """A generator seeded from ``seed`` and the sample's identity, so each image is independent of
    how many others are made (changing ``train`` leaves the test images as they were)."""
    digest = hashlib.blake2b("/".join(map(str, (seed, *keys))).encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)


def pattern(label: int, h: int, w: int, unit: int = 1, dx: int = 0, dy: int = 0) -> torch.Tensor:
    """The (h, w) bool pattern of class ``label``; ``unit`` image pixels per pattern pixel, phase (dx, dy)."""
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return _PATTERNS[LOWRES_CLASSES[label]]((xs + dx) // unit, (ys + dy) // unit)


def lowres_image(label: int, gen: torch.Generator, img_size: int = 32, difficulty: float = 1.0,
                 return_box: bool = False):
    """One uint8 (3, S, S) image of class ``label`` (the texture ``LOWRES_CLASSES[label]``), and with
    ``return_box`` the patch's ``(left, top, width, height)``.

    Args:
        difficulty: 0 = plain background, no clutter or noise, strong contrast; 1 = the default;
            2 = twice the clutter and noise, less contrast.
    """
    s = img_size
    unit = max(1, round(s / 32))  # pattern pixel size: 1 image pixel at 32 px
    img = background(gen, s, s, clutter=difficulty)
    for _ in range(int(torch.randint(0, 1 + round(3 * difficulty), (1,), generator=gen))):
        size = int(torch.randint(4 * unit, 12 * unit + 1, (1,), generator=gen))
        x, y = (int(v) for v in torch.randint(-2, s - size + 2, (2,), generator=gen))
        composite(img, stroke_mask(gen, size, width=uniform(gen, 0.8, 1.6) * unit), torch.rand(3, 1, 1, generator=gen),
                  x, y)
    # the textured patch: random size, place and phase; two colours of bounded contrast
    ph, pw = (int(v) for v in torch.randint(s * 5 // 16, s * 3 // 4 + 1, (2,), generator=gen))
    x = int(torch.randint(0, s - pw + 1, (1,), generator=gen))
    y = int(torch.randint(0, s - ph + 1, (1,), generator=gen))
    dx, dy = (int(v) for v in torch.randint(0, 12 * unit, (2,), generator=gen))
    ink = pattern(label, ph, pw, unit, dx, dy).float()
    base = torch.rand(3, 1, 1, generator=gen)
    colour = contrasting_colour(gen, base.expand(3, 2, 2), min_contrast=0.45 - 0.1 * min(difficulty, 2.0))
    composite(img, torch.ones(ph, pw), base, x, y)
    composite(img, ink, colour, x, y)
    # a stroke across the patch now and then (partial occlusion)
    if uniform(gen) < 0.3 * difficulty:
        size = int(torch.randint(6 * unit, 14 * unit + 1, (1,), generator=gen))
        composite(img, stroke_mask(gen, size, width=unit), torch.rand(3, 1, 1, generator=gen),
                  x + pw // 2 - size // 2, y + ph // 2 - size // 2)
    if difficulty > 0:
        img = img + 0.03 * difficulty * torch.randn(img.shape, generator=gen)
    return (to_uint8(img), (x, y, pw, ph)) if return_box else to_uint8(img)


def make_lowres(root: str | Path, *, img_size: int = 32, train: int = 300, val: int = 50, test: int = 100,
                difficulty: float = 1.0, seed: int = 0, progress: Callable[[int, int], None] | None = None) -> Path:
    """Write the set to ``root`` as ``{train,val,test}/<class>/<index>.png`` (``train``/``val``/``test``
    images per class); returns ``root``. Same options, same files, byte for byte."""
    if img_size < 16:
        raise ValueError(f"img_size must be >= 16, got {img_size}")
    counts = {"train": train, "val": val, "test": test}
    if train < 1 or val < 0 or test < 0:
        raise ValueError(f"need train >= 1 and val, test >= 0 images per class, got {counts}")
    root = Path(root)
    total, done = sum(counts.values()) * len(LOWRES_CLASSES), 0
    for split in _SPLITS:
        for label, name in enumerate(LOWRES_CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(counts[split]):
                gen = sample_generator(seed, "lowres", split, label, i)
                write_image(lowres_image(label, gen, img_size, difficulty), folder / f"{i:05d}.png")
                done += 1
                if progress is not None and done % 200 == 0:
                    progress(done, total)
    return root
