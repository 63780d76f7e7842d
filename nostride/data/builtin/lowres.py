"""``lowres``: a generated low-resolution classification set whose classes differ only in fine detail.

Each 32x32 image shows one digit of a 3x5 pixel font (the class) drawn once at 1x or 2x scale
somewhere on a textured background, among clutter strokes and 3x3 "fragment" marks. Its colour is
random (only its contrast with the background is bounded), so colour says nothing about the class,
and digits such as 8 / 0 / 6 / 9 differ in a single font pixel: downsampling the image (or a network
throwing pixels away early) destroys exactly what separates the classes. Written in the image-folder
layout (``train/``, ``val/``, ``test/`` with one folder per class) that every command reads.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import torch

from ..io import write_image
from .draw import DIGIT_GLYPHS, background, composite, contrasting_colour, glyph_mask, stroke_mask, to_uint8, uniform

__all__ = ["LOWRES_CLASSES", "LOWRES_DEFAULTS", "lowres_image", "make_lowres", "sample_generator"]

LOWRES_CLASSES = tuple(DIGIT_GLYPHS)  # "0" ... "9"
LOWRES_DEFAULTS = {"img_size": 32, "train": 300, "val": 50, "test": 100, "difficulty": 1.0, "small": 0.5, "seed": 0}
_SPLITS = ("train", "val", "test")


def sample_generator(seed: int, *keys: object) -> torch.Generator:
    """A generator seeded from ``seed`` and the sample's identity, so each image is independent of
    how many others are made (changing ``train`` leaves the test images as they were)."""
    digest = hashlib.blake2b("/".join(map(str, (seed, *keys))).encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)


def lowres_image(label: int, gen: torch.Generator, img_size: int = 32, difficulty: float = 1.0,
                 small: float = 0.5) -> torch.Tensor:
    """One uint8 (3, S, S) image of class ``label`` (the digit ``LOWRES_CLASSES[label]``).

    Args:
        difficulty: 0 = plain background and no clutter; 1 = the default; 2 = twice the clutter,
            less contrast.
        small: probability that the digit is drawn at the smallest scale (1 font pixel = 1 image
            pixel at 32 px) rather than twice that.
    """
    s = img_size
    unit = max(1, round(s / 32))  # font pixel size at the small scale
    img = background(gen, s, s, clutter=difficulty)
    # clutter: strokes and 3x3 fragments (never 3x5, so never a digit)
    for _ in range(int(torch.randint(0, 1 + round(3 * difficulty), (1,), generator=gen))):
        size = int(torch.randint(4 * unit, 10 * unit + 1, (1,), generator=gen))
        m = stroke_mask(gen, size, width=uniform(gen, 0.8, 1.6) * unit)
        x, y = (int(v) for v in torch.randint(-2, s - size + 2, (2,), generator=gen))
        composite(img, m, torch.rand(3, 1, 1, generator=gen), x, y)
    for _ in range(int(torch.randint(0, 1 + round(2 * difficulty), (1,), generator=gen))):
        frag = (torch.rand(3, 3, generator=gen) < 0.55).float()
        frag = frag.repeat_interleave(unit, 0).repeat_interleave(unit, 1)
        x, y = (int(v) for v in torch.randint(0, s - 3 * unit + 1, (2,), generator=gen))
        composite(img, frag, torch.rand(3, 1, 1, generator=gen), x, y)
    # the digit
    scale = unit if uniform(gen) < small else 2 * unit
    mask = glyph_mask(LOWRES_CLASSES[label], scale)
    h, w = mask.shape
    x = int(torch.randint(0, s - w + 1, (1,), generator=gen))
    y = int(torch.randint(0, s - h + 1, (1,), generator=gen))
    colour = contrasting_colour(gen, img[:, y:y + h, x:x + w], min_contrast=0.45 - 0.1 * min(difficulty, 2.0))
    composite(img, mask, colour, x, y)
    return to_uint8(img)


def make_lowres(root: str | Path, *, img_size: int = 32, train: int = 300, val: int = 50, test: int = 100,
                difficulty: float = 1.0, small: float = 0.5, seed: int = 0,
                progress: Callable[[int, int], None] | None = None) -> Path:
    """Write the set to ``root`` as ``{train,val,test}/<digit>/<index>.png`` (``train``/``val``/``test``
    images per class); returns ``root``. Same options, same files, byte for byte."""
    if img_size < 8:
        raise ValueError(f"img_size must be >= 8, got {img_size}")
    counts = {"train": train, "val": val, "test": test}
    for k, n in counts.items():
        if n < 0:
            raise ValueError(f"{k} must be >= 0 images per class, got {n}")
    if train < 1:
        raise ValueError("train must be >= 1 image per class")
    root = Path(root)
    total, done = sum(counts.values()) * len(LOWRES_CLASSES), 0
    for split in _SPLITS:
        for label, name in enumerate(LOWRES_CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(counts[split]):
                gen = sample_generator(seed, "lowres", split, label, i)
                write_image(lowres_image(label, gen, img_size, difficulty, small), folder / f"{i:05d}.png")
                done += 1
                if progress is not None and done % 200 == 0:
                    progress(done, total)
    return root
