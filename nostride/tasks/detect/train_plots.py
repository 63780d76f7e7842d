"""Pictures a detection run writes at its start: the labels plot and the first training batches."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from nostride.data.io import write_image

from .boxes import xywh2xyxy
from .draw import _PALETTE

__all__ = ["plot_labels", "draw_batch", "size_shares"]

# COCO's object size classes by area in original-image pixels
SMALL, MEDIUM = 32**2, 96**2


def size_shares(labels: Sequence[np.ndarray], shapes_hw: np.ndarray) -> dict[str, float]:
    """Share of boxes that are small (< 32^2 px), medium and large (> 96^2 px) in their original images."""
    areas = [lab[:, 3] * lab[:, 4] * float(h) * float(w) for lab, (h, w) in zip(labels, shapes_hw) if len(lab)]
    a = np.concatenate(areas) if areas else np.zeros(0)
    n = max(len(a), 1)
    return {"small": float((a < SMALL).sum() / n), "medium": float(((a >= SMALL) & (a <= MEDIUM)).sum() / n),
            "large": float((a > MEDIUM).sum() / n)}


def plot_labels(labels: Sequence[np.ndarray], shapes_hw: np.ndarray, names: Sequence[str], path: str | Path) -> Path:
    """``labels.jpg``: instances per class, box centres, box sizes (normalised) and the small /
    medium / large shares."""
    from nostride.utils.figures import new_figure, save_figure

    flat = np.concatenate([lab for lab in labels if len(lab)], 0) if any(len(lab) for lab in labels) else np.zeros((0, 5))
    nc = len(names)
    fig = new_figure(12, 9)
    ax = fig.subplots(2, 2).ravel()
    counts = np.bincount(flat[:, 0].astype(int), minlength=nc) if len(flat) else np.zeros(nc)
    ax[0].bar(range(nc), counts, color=[np.array(_PALETTE[i % len(_PALETTE)]) / 255 for i in range(nc)])
    ax[0].set_ylabel("instances")
    ax[0].set_title(f"{int(counts.sum())} instances in {len(labels)} images, {int((counts > 0).sum())} of {nc} classes")
    if nc <= 30:
        ax[0].set_xticks(range(nc))
        ax[0].set_xticklabels(names, rotation=90, fontsize=8)
    ax[1].hist2d(flat[:, 1], flat[:, 2], bins=50, range=[[0, 1], [0, 1]], cmap="Blues") if len(flat) else None
    ax[1].set_xlabel("x")
    ax[1].set_ylabel("y")
    ax[1].set_title("box centres")
    ax[1].invert_yaxis()
    ax[2].hist2d(flat[:, 3], flat[:, 4], bins=50, range=[[0, 1], [0, 1]], cmap="Blues") if len(flat) else None
    ax[2].set_xlabel("width")
    ax[2].set_ylabel("height")
    ax[2].set_title("box sizes (fraction of the image)")
    shares = size_shares(labels, shapes_hw)
    ax[3].bar(list(shares), [100 * v for v in shares.values()], color=["#d62728", "#ff7f0e", "#2ca02c"])
    for i, v in enumerate(shares.values()):
        ax[3].text(i, 100 * v, f"{100 * v:.1f} %", ha="center", va="bottom")
    ax[3].set_ylabel("% of instances")
    ax[3].set_title("object size (area < 32² px, 32²-96², > 96² in the original image)")
    return save_figure(fig, Path(path))


def draw_batch(images: Tensor, targets: Tensor, names: Sequence[str], path: str | Path, max_images: int = 16) -> Path:
    """``train_batchN.jpg``: up to ``max_images`` uint8 images of a batch in a grid, each with its
    target boxes (``[i, cls, xc, yc, w, h]`` normalised) and class names drawn."""
    from torchvision.utils import draw_bounding_boxes, make_grid

    images = images[:max_images].cpu()
    if images.dtype != torch.uint8:
        images = (images * 255).round().clamp(0, 255).to(torch.uint8)
    targets = targets.detach().cpu()
    h, w = images.shape[2:]
    drawn = []
    for i, img in enumerate(images):
        t = targets[targets[:, 0] == i]
        if len(t):
            boxes = xywh2xyxy(t[:, 2:6] * torch.tensor([w, h, w, h], dtype=torch.float32))
            cls = t[:, 1].long().tolist()
            img = draw_bounding_boxes(img, boxes, labels=[str(names[c]) if c < len(names) else str(c) for c in cls],
                                      colors=[_PALETTE[c % len(_PALETTE)] for c in cls], width=1)
        drawn.append(img)
    nrow = math.ceil(math.sqrt(len(drawn)))
    grid = make_grid(torch.stack(drawn), nrow=nrow, padding=2, pad_value=255)
    return write_image(grid, Path(path), quality=90)
