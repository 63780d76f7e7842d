"""Classification transforms on uint8 image tensors (torchvision.transforms.v2) and normalisation constants."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torchvision.transforms import v2

__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "IMAGENET_MEAN", "IMAGENET_STD", "CropFlipNormalize", "crop_padding",
           "train_transform", "eval_transform"]

# CIFAR-10 per-channel mean / std over the 50,000 training images (pixel values in [0, 1]).
# (The often-copied std (0.2023, 0.1994, 0.2010) is the mean of per-image stds, not the dataset std.)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
# ImageNet constants (torchvision's); also used for Tiny ImageNet, an ImageNet subset.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Stats = Sequence[float]


def crop_padding(img_size: int) -> int:
    """Zero padding of the random crop: the standard 4 px at 32x32, scaled with the image size."""
    return max(1, round(4 * img_size / 32))


def _to_normalised_float(mean: Stats, std: Stats) -> list[v2.Transform]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]


def _to_size(img_size: int, resize: bool) -> list[v2.Transform]:
    # shorter side -> img_size, then the central square; skipped for data stored at img_size already
    if not resize:
        return []
    return [v2.Resize(img_size, antialias=True), v2.CenterCrop(img_size)]


def train_transform(img_size: int, mean: Stats, std: Stats, resize: bool = True, augment: bool = True) -> v2.Compose:
    """Training transform: uint8 (3, H, W) -> normalised float32 (3, img_size, img_size).

    ``augment``: random crop after zero padding (:func:`crop_padding`) + horizontal flip, the
    standard CIFAR / Tiny ImageNet augmentation. ``resize=False`` skips the resize + centre crop
    for images already stored at ``img_size`` x ``img_size`` (in-memory arrays), which is faster.
    """
    ops = _to_size(img_size, resize)
    if augment:
        ops += [v2.RandomCrop(img_size, padding=crop_padding(img_size)), v2.RandomHorizontalFlip()]
    return v2.Compose(ops + _to_normalised_float(mean, std))


def eval_transform(img_size: int, mean: Stats, std: Stats, resize: bool = True) -> v2.Compose:
    """Evaluation / prediction transform: uint8 (3, H, W) -> normalised float32 (3, img_size, img_size).

    Resizes the shorter side to ``img_size`` and takes the central square (a no-op for images that
    are already ``img_size`` square), then scales to [0, 1] and normalises with ``mean`` / ``std``.
    Use it with the ``img_size`` / ``mean`` / ``std`` of the data the model was trained on.
    """
    return v2.Compose(_to_size(img_size, resize) + _to_normalised_float(mean, std))


class CropFlipNormalize:
    """Fast path of :func:`train_transform` / :func:`eval_transform` for images already ``img_size`` square.

    Draws the same augmentation as ``v2.RandomCrop(img_size, padding=crop_padding(img_size))`` +
    ``v2.RandomHorizontalFlip()`` (uniform offsets in the zero-padded image, flip with p = 0.5,
    from torch's global RNG) and normalises like ``ToDtype(scale=True)`` + ``Normalize``, in a few
    tensor ops instead of four v2 transforms: the in-memory CIFAR datasets use it so that
    augmentation is not the bottleneck of training small models (benchmarks/classification_data.py).

    Args:
        img_size: side of the (square) input and output images.
        mean, std: normalisation constants for pixel values in [0, 1].
        augment: ``False`` only normalises (the evaluation transform).
    """

    def __init__(self, img_size: int, mean: Stats, std: Stats, augment: bool = True) -> None:
        self.img_size = img_size
        self.padding = crop_padding(img_size)
        self.augment = augment
        std_a = np.array([float(v) for v in std], dtype=np.float32).reshape(3, 1, 1)
        self.scale = 1.0 / (255.0 * std_a)
        self.shift = -np.array([float(v) for v in mean], dtype=np.float32).reshape(3, 1, 1) / std_a

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        s, p = self.img_size, self.padding
        if img.dtype != torch.uint8 or tuple(img.shape) != (3, s, s):
            raise ValueError(f"CropFlipNormalize({s}) expects uint8 (3, {s}, {s}) images, got {img.dtype} {tuple(img.shape)}")
        x = img.numpy()  # numpy: a fraction of torch's per-call overhead on such small arrays
        if self.augment:
            n = 2 * p + 1  # one draw for (top, left, flip): uniform over n * n * 2 outcomes
            r = int(torch.randint(0, 2 * n * n, ()))
            top, left, flip = r % n, (r // n) % n, r // (n * n)
            padded = np.zeros((3, s + 2 * p, s + 2 * p), dtype=np.uint8)
            padded[:, p:p + s, p:p + s] = x
            x = padded[:, top:top + s, left:left + s]
            if flip:
                x = x[:, :, ::-1]
        return torch.from_numpy(x * self.scale + self.shift)  # a new contiguous float32 array

    def __repr__(self) -> str:
        return f"{type(self).__name__}(img_size={self.img_size}, padding={self.padding}, augment={self.augment})"
