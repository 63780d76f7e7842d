"""Autoanchor: check that a detector's anchors fit the dataset's boxes, evolve better ones if not.

YOLOv5 v6.0 semantics (``utils/autoanchor.py``):

* label sizes in pixels of images resized to ``img_size`` (long side), each image's sizes
  multiplied by ``U(0.9, 1.1)``;
* a box fits an anchor when ``min(r, 1/r) > 1 / anchor_t`` for both width and height ratios ``r``;
  the *best possible recall* (BPR) is the share of boxes that fit at least one anchor;
* BPR >= 0.98 keeps the anchors; below, k-means on the (whitened) sizes of boxes with a side of at
  least 2 px gives ``na`` anchors, refined by 1000 generations of a genetic search (mutation
  probability 0.9, sigma 0.1, factors clipped to [0.3, 3], anchors >= 2 px) maximising
  ``mean(best * (best > 1 / anchor_t))``; they replace the old ones only when BPR improves.

The random draws come from generators seeded by ``seed``, so every DDP process computes the same
anchors without communicating.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["AnchorCheck", "label_wh", "anchor_metrics", "kmeans", "kmean_anchors", "check_anchors"]


@dataclass
class AnchorCheck:
    """What :func:`check_anchors` found and did."""

    bpr: float  # best possible recall of the anchors the model had
    aat: float  # anchors above threshold per box
    new_bpr: float | None = None  # BPR of the evolved anchors (None: not evolved)
    replaced: bool = False
    anchors: list[list[float]] = field(default_factory=list)  # pixel (w, h) per anchor, as used afterwards

    def summary(self) -> str:
        line = f"autoanchor: {self.aat:.2f} anchors/target, best possible recall {self.bpr:.4f}"
        if self.new_bpr is None:
            return line + " (anchors fit the data)"
        if self.replaced:
            return line + f" -> {self.new_bpr:.4f} with evolved anchors (saved in the model and checkpoint)"
        return line + f"; evolved anchors reach only {self.new_bpr:.4f}, keeping the original ones"


def label_wh(shapes_hw: np.ndarray, labels: Sequence[np.ndarray], img_size: int,
             rng: np.random.Generator | None = None) -> np.ndarray:
    """(n, 2) box width/height in pixels at ``img_size`` (long side); with ``rng``, each image's boxes
    scaled by ``U(0.9, 1.1)`` (the check's augmentation)."""
    wh_img = np.asarray(shapes_hw, dtype=np.float64)[:, ::-1]  # (w, h)
    wh_img = img_size * wh_img / wh_img.max(1, keepdims=True)
    if rng is not None:
        wh_img = wh_img * rng.uniform(0.9, 1.1, size=(len(wh_img), 1))
    parts = [lab[:, 3:5] * s for s, lab in zip(wh_img, labels) if len(lab)]
    return np.concatenate(parts, 0) if parts else np.zeros((0, 2))


def anchor_metrics(anchors: Tensor, wh: Tensor, anchor_t: float = 4.0) -> tuple[float, float]:
    """``(bpr, aat)`` of (k, 2) pixel anchors for (n, 2) box sizes."""
    r = wh[:, None] / anchors[None]
    x = torch.min(r, 1 / r).min(2)[0]
    best = x.max(1)[0]
    aat = (x > 1 / anchor_t).float().sum(1).mean()
    bpr = (best > 1 / anchor_t).float().mean()
    return float(bpr), float(aat)


def _fitness(k: np.ndarray, wh: Tensor, thr: float) -> float:
    r = wh[:, None] / torch.tensor(k, dtype=torch.float32)[None]
    best = torch.min(r, 1 / r).min(2)[0].max(1)[0]
    return float((best * (best > thr).float()).mean())


def kmeans(obs: np.ndarray, k: int, restarts: int = 30, rng: np.random.Generator | None = None,
           thresh: float = 1e-5) -> tuple[np.ndarray, float]:
    """k-means (Lloyd) from ``restarts`` random starts (k distinct observations each); the centres
    with the lowest mean distance, and that distance (``scipy.cluster.vq.kmeans`` semantics)."""
    rng = rng or np.random.default_rng(0)
    obs = np.asarray(obs, dtype=np.float64)
    if len(obs) < k:
        raise ValueError(f"k-means needs at least {k} boxes, got {len(obs)}")
    best, best_d = None, np.inf
    for _ in range(restarts):
        c = obs[rng.choice(len(obs), k, replace=False)]
        prev = np.inf
        for _ in range(300):
            d = ((obs[:, None] - c[None]) ** 2).sum(-1) ** 0.5
            a = d.argmin(1)
            dist = d[np.arange(len(obs)), a].mean()
            c = np.stack([obs[a == j].mean(0) if (a == j).any() else c[j] for j in range(k)])
            if prev - dist <= thresh:
                break
            prev = dist
        if dist < best_d:
            best, best_d = c, dist
    return best, float(best_d)


def kmean_anchors(wh0: np.ndarray, n: int = 9, anchor_t: float = 4.0, gen: int = 1000, seed: int = 0) -> np.ndarray:
    """Evolved (n, 2) pixel anchors for box sizes ``wh0``, sorted by area (see the module doc)."""
    thr = 1 / anchor_t
    rng = np.random.default_rng(seed)
    prng = random.Random(seed)
    wh = wh0[(wh0 >= 2.0).any(1)]
    if len(wh) < n:
        raise ValueError(f"autoanchor: {len(wh)} boxes of 2 pixels or more, need at least {n}")
    s = wh.std(0)
    s[s == 0] = 1.0
    k = kmeans(wh / s, n, rng=rng)[0] * s
    wh_t = torch.tensor(wh, dtype=torch.float32)
    k = k[np.argsort(k.prod(1))]
    f, sh, mp, sigma = _fitness(k, wh_t, thr), k.shape, 0.9, 0.1
    for _ in range(gen):
        v = np.ones(sh)
        while (v == 1).all():  # mutate until something changes
            v = ((rng.random(sh) < mp) * prng.random() * rng.standard_normal(sh) * sigma + 1).clip(0.3, 3.0)
        kg = (k * v).clip(min=2.0)
        fg = _fitness(kg, wh_t, thr)
        if fg > f:
            f, k = fg, kg
    return k[np.argsort(k.prod(1))]


def _anchor_order_ok(anchors: Tensor, stride: Tensor) -> bool:
    area = anchors.prod(-1).mean(-1).view(-1)
    return bool((area[-1] - area[0]).sign() == (stride[-1] - stride[0]).sign())


@torch.no_grad()
def check_anchors(detect: nn.Module, shapes_hw: np.ndarray, labels: Sequence[np.ndarray], img_size: int,
                  anchor_t: float = 4.0, gen: int = 1000, seed: int = 0) -> AnchorCheck:
    """Check (and, when BPR < 0.98, try to improve) the anchors of a YOLOv5 ``Detect`` head in place.

    Args:
        detect: the head; its ``anchors`` (nl, na, 2) are in grid units, ``stride`` set.
        shapes_hw: (n, 2) original image (h, w); ``labels``: per image (k, 5) normalised labels.
        img_size: training size (long side).
        anchor_t: the loss's anchor-multiple threshold.
        gen: generations of the genetic search.
        seed: seeds the size jitter, k-means and the search.
    """
    rng = np.random.default_rng(seed)
    stride = detect.stride.detach().cpu().view(-1, 1, 1)
    anchors_px = detect.anchors.detach().cpu() * stride
    wh = torch.tensor(label_wh(shapes_hw, labels, img_size, rng), dtype=torch.float32)
    if len(wh) == 0:
        return AnchorCheck(bpr=0.0, aat=0.0, anchors=anchors_px.view(-1, 2).tolist())
    bpr, aat = anchor_metrics(anchors_px.view(-1, 2), wh, anchor_t)
    result = AnchorCheck(bpr=bpr, aat=aat, anchors=anchors_px.view(-1, 2).tolist())
    if bpr > 0.98:
        return result
    na = detect.anchors.numel() // 2
    try:
        new = kmean_anchors(label_wh(shapes_hw, labels, img_size), na, anchor_t, gen, seed)
    except ValueError:
        return result  # too few boxes to cluster: keep the anchors
    new_t = torch.tensor(new, dtype=torch.float32)
    result.new_bpr = anchor_metrics(new_t, wh, anchor_t)[0]
    if result.new_bpr > bpr:
        grid = new_t.view_as(detect.anchors) / stride
        grid = grid.half().float()  # YOLOv5 rounds the anchors through float16 after the check
        if not _anchor_order_ok(grid, detect.stride.cpu()):
            grid = grid.flip(0)
        detect.anchors.copy_(grid.to(detect.anchors))
        result.replaced = True
        result.anchors = (grid * stride).view(-1, 2).tolist()
    return result
