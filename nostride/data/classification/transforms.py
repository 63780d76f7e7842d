"""Classification transforms on uint8 image tensors and the normalisation constants."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "IMAGENET_MEAN", "IMAGENET_STD", "ClassificationTransform", "crop_padding",
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


class ClassificationTransform:
    """uint8 image (3, H, W) -> normalised float32 (3, S, S), with optional training augmentation.

    1. ``resize``: images that are not S x S get their shorter side resized to S (antialiased,
       ``torchvision.transforms.v2.functional.resize``) and the central S x S square cropped.
    2. ``augment``: the standard CIFAR / Tiny ImageNet augmentation, drawn exactly as
       ``v2.RandomCrop(S, padding=crop_padding(S))`` + ``v2.RandomHorizontalFlip()`` draw it
       (uniform offsets into the zero-padded image, flip with probability 1/2, torch's global RNG,
       so DataLoader worker seeding applies).
    3. Scale to [0, 1] and normalise per channel: ``(x / 255 - mean) / std``.

    Steps 2-3 run as a handful of numpy operations instead of four v2 transforms (about 6x faster
    for 32x32 images, benchmarks/classification_data.py), so augmentation does not limit training
    of small models; tests/test_data_classification.py checks every crop/flip outcome against v2.

    Args:
        img_size: S.
        mean, std: normalisation constants for pixel values in [0, 1].
        augment: random crop + flip (training) or none (evaluation).
        resize: ``False`` requires S x S inputs (in-memory arrays stored at S) and skips step 1.
    """

    def __init__(self, img_size: int, mean: Stats, std: Stats, augment: bool = False, resize: bool = True) -> None:
        if img_size < 1:
            raise ValueError(f"img_size must be positive, got {img_size}")
        self.img_size = img_size
        self.padding = crop_padding(img_size)
        self.augment = augment
        self.resize = resize
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"mean and std need 3 values (R, G, B), got {mean} and {std}")
        std_a = np.array(self.std, dtype=np.float32).reshape(3, 1, 1)
        self._scale = 1.0 / (255.0 * std_a)
        self._shift = -np.array(self.mean, dtype=np.float32).reshape(3, 1, 1) / std_a

    def fit(self, img: torch.Tensor) -> torch.Tensor:
        """Step 1 alone: the uint8 (3, S, S) image the rest of the transform starts from (what a
        decoded-image cache keeps, so cached and uncached items are the same)."""
        s = self.img_size
        if img.dtype != torch.uint8 or img.ndim != 3 or img.shape[0] != 3:
            raise ValueError(f"expected a uint8 RGB image tensor (3, H, W), got {img.dtype} {tuple(img.shape)}")
        if tuple(img.shape[1:]) != (s, s):
            if not self.resize:
                raise ValueError(f"expected a (3, {s}, {s}) image (resize=False), got {tuple(img.shape)}")
            if min(img.shape[1:]) != s:
                img = TF.resize(img, [s], antialias=True)
            img = TF.center_crop(img, [s, s])
        return img

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        s, p = self.img_size, self.padding
        x = self.fit(img).numpy()  # numpy: a fraction of torch's per-call overhead on such small arrays
        if self.augment:
            n = 2 * p + 1  # one draw for (top, left, flip): uniform over n * n * 2 outcomes
            r = int(torch.randint(0, 2 * n * n, ()))
            top, left, flip = r % n, (r // n) % n, r // (n * n)
            padded = np.zeros((3, s + 2 * p, s + 2 * p), dtype=np.uint8)
            padded[:, p:p + s, p:p + s] = x
            x = padded[:, top:top + s, left:left + s]
            if flip:
                x = x[:, :, ::-1]
        return torch.from_numpy(x * self._scale + self._shift)  # a new contiguous float32 array

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(img_size={self.img_size}, augment={self.augment} (padding {self.padding}), "
                f"resize={self.resize}, mean={self.mean}, std={self.std})")


def train_transform(img_size: int, mean: Stats, std: Stats, resize: bool = True,
                    augment: bool = True) -> ClassificationTransform:
    """Training transform: uint8 (3, H, W) -> normalised float32 (3, img_size, img_size).

    ``augment``: random crop after zero padding (:func:`crop_padding`) + horizontal flip.
    ``resize=False`` is for images already stored at ``img_size`` square (in-memory arrays).
    See :class:`ClassificationTransform`.
    """
    return ClassificationTransform(img_size, mean, std, augment=augment, resize=resize)


def eval_transform(img_size: int, mean: Stats, std: Stats, resize: bool = True) -> ClassificationTransform:
    """Evaluation / prediction transform: uint8 (3, H, W) -> normalised float32 (3, img_size, img_size).

    Resizes the shorter side to ``img_size`` and takes the central square (a no-op for images that
    are already ``img_size`` square), then scales to [0, 1] and normalises with ``mean`` / ``std``.
    Use it with the ``img_size`` / ``mean`` / ``std`` of the data the model was trained on.
    """
    return ClassificationTransform(img_size, mean, std, augment=False, resize=resize)
