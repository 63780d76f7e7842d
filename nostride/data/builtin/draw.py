"""Drawing primitives of the built-in datasets: cluttered backgrounds, glyphs, shapes, alpha compositing.

Everything works on float tensors in [0, 1] of shape (3, H, W) and draws with an explicit
``torch.Generator``, so a dataset is a pure function of its seed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["DIGIT_GLYPHS", "SHAPES", "background", "composite", "contrasting_colour", "glyph_mask",
           "shape_mask", "stroke_mask", "to_uint8", "uniform"]

# 3x5 bitmap font of the ten digits: "1" = ink. Two digits differ in as little as one pixel
# (8 / 0 / 6 / 9), so telling them apart needs the image's finest detail.
DIGIT_GLYPHS: dict[str, tuple[str, ...]] = {
    "0": ("111", "101", "101", "101", "111"),
    "1": ("010", "110", "010", "010", "111"),
    "2": ("111", "001", "111", "100", "111"),
    "3": ("111", "001", "111", "001", "111"),
    "4": ("101", "101", "111", "001", "001"),
    "5": ("111", "100", "111", "001", "111"),
    "6": ("111", "100", "111", "101", "111"),
    "7": ("111", "001", "010", "010", "010"),
    "8": ("111", "101", "111", "101", "111"),
    "9": ("111", "101", "111", "001", "111"),
}

# Shapes of the small-object set, as inside-tests on coordinates (u, v) in [-1, 1]^2 (v down).
# They come in look-alike groups told apart by a hole, a dot or a rotation, never by colour:
# disc / ring / target, square / frame, plus / cross, triangle.
SHAPES: tuple[str, ...] = ("disc", "ring", "target", "square", "frame", "plus", "cross", "triangle")


def uniform(gen: torch.Generator, low: float = 0.0, high: float = 1.0, n: int | None = None):
    """Uniform sample(s) in [low, high): a float, or a tensor of ``n``."""
    x = torch.rand(n if n is not None else 1, generator=gen) * (high - low) + low
    return x if n is not None else float(x)


def background(gen: torch.Generator, h: int, w: int, clutter: float = 1.0) -> torch.Tensor:
    """A textured background: two random colours blended by smooth noise, plus fine-grained noise
    and (``clutter`` > 0) random stripes, so that no single colour or frequency marks an object."""
    c0, c1 = torch.rand(3, 1, 1, generator=gen), torch.rand(3, 1, 1, generator=gen)
    cells = int(torch.randint(2, 6, (1,), generator=gen))
    blend = F.interpolate(torch.rand(1, 1, cells, cells, generator=gen), size=(h, w), mode="bicubic",
                          align_corners=False)[0].clamp(0, 1)
    img = c0 * (1 - blend) + c1 * blend
    if clutter > 0:
        # faint stripes of random period and orientation (texture, not objects)
        yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                                indexing="ij")
        angle = uniform(gen, 0, math.pi)
        period = uniform(gen, 3.0, 12.0)
        phase = (xx * math.cos(angle) + yy * math.sin(angle)) * (2 * math.pi / period)
        img = img + 0.06 * clutter * torch.sin(phase) * (torch.rand(3, 1, 1, generator=gen) - 0.5) * 2
        img = img + 0.05 * clutter * torch.randn(3, h, w, generator=gen)
    return img.clamp(0, 1)


def contrasting_colour(gen: torch.Generator, under: torch.Tensor, min_contrast: float = 0.25) -> torch.Tensor:
    """A random (3, 1, 1) colour whose brightness differs from the mean of ``under`` by at least
    ``min_contrast`` (so objects are visible, but their colour says nothing about their class)."""
    luma = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
    ref = float((under.mean(dim=(1, 2), keepdim=True) * luma).sum())
    for _ in range(32):
        c = torch.rand(3, 1, 1, generator=gen)
        if abs(float((c * luma).sum()) - ref) >= min_contrast:
            return c
    return torch.full((3, 1, 1), 0.0 if ref > 0.5 else 1.0)


def composite(img: torch.Tensor, alpha: torch.Tensor, colour: torch.Tensor, x: int, y: int) -> None:
    """Alpha-blend ``colour`` into ``img`` (in place) through ``alpha`` (h, w) placed at column ``x``,
    row ``y``; parts outside the image are clipped."""
    h, w = alpha.shape
    H, W = img.shape[1:]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
    if x1 <= x0 or y1 <= y0:
        return
    a = alpha[y0 - y:y1 - y, x0 - x:x1 - x].unsqueeze(0)
    region = img[:, y0:y1, x0:x1]
    img[:, y0:y1, x0:x1] = region * (1 - a) + colour * a


def glyph_mask(char: str, scale: int = 1) -> torch.Tensor:
    """The (5 * scale, 3 * scale) float mask of a digit of :data:`DIGIT_GLYPHS` (pixel-exact, no blur)."""
    rows = DIGIT_GLYPHS[char]
    m = torch.tensor([[float(c == "1") for c in r] for r in rows])
    return m.repeat_interleave(scale, 0).repeat_interleave(scale, 1)


def _inside(shape: str, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    r = torch.sqrt(u * u + v * v)
    box = torch.maximum(u.abs(), v.abs())
    if shape == "disc":
        return r <= 1
    if shape == "ring":
        return (r <= 1) & (r >= 0.55)
    if shape == "target":
        return ((r <= 1) & (r >= 0.7)) | (r <= 0.35)
    if shape == "square":
        return box <= 1
    if shape == "frame":
        return (box <= 1) & (box >= 0.55)
    if shape == "plus":
        return torch.minimum(u.abs(), v.abs()) <= 0.3
    if shape == "cross":
        d = torch.minimum((u - v).abs(), (u + v).abs()) / math.sqrt(2)
        return (d <= 0.3) & (box <= 1)
    if shape == "triangle":  # apex at the top centre, base along the bottom edge
        return (v <= 1) & (u.abs() <= (v + 1) / 2)
    raise ValueError(f"unknown shape {shape!r}; choose from {', '.join(SHAPES)}")


def shape_mask(shape: str, size: int, supersample: int = 4) -> torch.Tensor:
    """Anti-aliased (size, size) alpha mask of ``shape`` filling its square box; every shape touches
    all four sides of the box, so the box is the object's tight bounding box."""
    n = size * supersample
    t = (torch.arange(n, dtype=torch.float32) + 0.5) / n * 2 - 1  # cell centres in (-1, 1)
    v, u = torch.meshgrid(t, t, indexing="ij")
    m = _inside(shape, u, v).float()
    return F.avg_pool2d(m[None, None], supersample)[0, 0]


def stroke_mask(gen: torch.Generator, size: int, width: float = 1.0) -> torch.Tensor:
    """A random line segment within a (size, size) box: clutter, not an object. Anti-aliased
    analytically (alpha falls from 1 to 0 over the pixel at the stroke's edge)."""
    t = torch.arange(size, dtype=torch.float32) + 0.5
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    x0, y0, x1, y1 = (uniform(gen, 0, size) for _ in range(4))
    dx, dy = x1 - x0, y1 - y0
    length2 = dx * dx + dy * dy + 1e-6
    s = (((xx - x0) * dx + (yy - y0) * dy) / length2).clamp(0, 1)
    d = torch.sqrt((xx - x0 - s * dx) ** 2 + (yy - y0 - s * dy) ** 2)
    return (width / 2 + 0.5 - d).clamp(0, 1)


def to_uint8(img: torch.Tensor) -> torch.Tensor:
    """float [0, 1] -> uint8 (3, H, W)."""
    return (img.clamp(0, 1) * 255).round().to(torch.uint8)
