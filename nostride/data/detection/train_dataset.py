"""The detection training dataset: YOLOv5 v6.0's training ``__getitem__`` on a :class:`DetectionDataset`.

Per item ``i`` (augmenting):

1. with probability ``mosaic``: a mosaic of image ``i`` and three random others (shuffled) around a
   centre drawn from ``U(s/2, 3s/2)`` on a 2s x 2s canvas, then :func:`random_perspective` with
   border ``-s/2`` (output s x s); with probability ``mixup`` it is blended with a second mosaic;
2. otherwise: the image letterboxed into ``img_size`` (or its rectangular batch shape with
   ``rect``), then :func:`random_perspective` without border;
3. labels to normalised ``xywh`` clipped to the image (eps 1e-3);
4. HSV jitter, vertical flip (``flipud``), horizontal flip (``fliplr``).

Without augmentation (``augment=False``) only step 2's letterbox is applied. Items are
``(image uint8 (3, H, W), targets (n, 6) [0, cls, xc, yc, w, h], path, shapes)`` with ``shapes`` =
``((h0, w0), ((h / h0, w / w0), (pad_w, pad_h)))`` for letterboxed items and ``None`` for
mosaics; :func:`collate_detection` batches them (the first target column becomes the index in the
batch). Randomness comes from Python's ``random`` (and NumPy for mixup's ratio), which the engine
seeds per DataLoader worker at each epoch's start from the run seed, epoch and rank, so runs and
resumed runs repeat exactly.
"""

from __future__ import annotations

import math
import random
from typing import Any, Iterator, Mapping

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from .augment import augment_hsv, flip_lr, flip_ud, mixup, mosaic4, random_perspective
from .dataset import DetectionDataset
from .image_cache import ImageCache
from .letterbox import letterbox
from .val_loader import rect_batch_shapes

__all__ = ["DetectionTrainDataset", "RectTrainBatchSampler", "AUGMENT_DEFAULTS"]

#: augmentation hyperparameters and their YOLOv5 ``hyp.scratch.yaml`` values
AUGMENT_DEFAULTS: dict[str, float] = {
    "hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.4, "degrees": 0.0, "translate": 0.1, "scale": 0.5, "shear": 0.0,
    "perspective": 0.0, "flipud": 0.0, "fliplr": 0.5, "mosaic": 1.0, "mixup": 0.0,
}


class DetectionTrainDataset(Dataset):
    """Augmented training samples of a :class:`DetectionDataset` (see the module documentation).

    Args:
        index: the verified split (images, original sizes, labels).
        img_size: training size ``s`` (long side of loaded images, side of the square output).
        hyp: augmentation hyperparameters (missing keys: :data:`AUGMENT_DEFAULTS`).
        augment: apply the augmentations (``False``: letterbox only).
        rect: rectangular batches (aspect-ratio sorted, one canvas per batch; no mosaic). Use
            :class:`RectTrainBatchSampler` with the same ``batch_size``.
        batch_size: images per batch (decides the rectangular canvases).
        stride: the model's largest stride (canvas sides are multiples of it).
        cache: ``""``, ``"ram"`` or ``"disk"`` (see :mod:`.image_cache`).
        workers: threads filling the cache.

    Attributes:
        mosaic_enabled: set to ``False`` to stop using mosaics (``close_mosaic``).
    """

    #: attributes that may change between epochs: the training loader's persistent workers take
    #: their values at each epoch's start (:mod:`nostride.data.epoch_workers`)
    epoch_settings = ("mosaic_enabled",)

    def __init__(self, index: DetectionDataset, img_size: int = 640, hyp: Mapping[str, float] | None = None,
                 augment: bool = True, rect: bool = False, batch_size: int = 16, stride: int = 32, cache: str = "",
                 workers: int = 4, verbose: bool = True, prefix: str = "train: ") -> None:
        self.index = index
        self.img_size = int(img_size)
        self.hyp = {**AUGMENT_DEFAULTS, **{k: float(v) for k, v in (hyp or {}).items() if k in AUGMENT_DEFAULTS}}
        self.augment, self.rect, self.batch_size, self.stride = augment, rect, batch_size, stride
        self.mosaic_enabled = augment and not rect
        self.n = len(index)
        if rect:
            self.order, self.batch_shapes = rect_batch_shapes(index.shapes, batch_size, self.img_size, stride, pad=0.0)
        else:
            self.order, self.batch_shapes = np.arange(self.n), None
        self.load = ImageCache(index.im_files, index.shapes, self.img_size,
                               lambda i: index.load_image(i, self.img_size, augment), cache, workers, prefix,
                               verbose, tag="cv-linear" if augment else "cv-area")

    def __len__(self) -> int:
        return self.n

    @property
    def labels(self) -> list[np.ndarray]:
        """Per image (k, 5) ``[cls, xc, yc, w, h]`` normalised (the index's, in index order)."""
        return self.index.labels

    @property
    def names(self) -> list[str] | None:
        return self.index.names

    def pixel_labels(self, i: int, w: float, h: float, padw: float = 0.0, padh: float = 0.0) -> Tensor:
        """Image ``i``'s labels as (k, 5) ``[cls, x1, y1, x2, y2]`` for the image drawn ``w`` x ``h`` at ``(padw, padh)``."""
        x = self.index.labels[i]
        lab = x.copy()
        if len(lab):  # in NumPy: a few rows, where torch's per-operation overhead would dominate
            lab[:, 1] = w * (x[:, 1] - x[:, 3] / 2) + padw
            lab[:, 2] = h * (x[:, 2] - x[:, 4] / 2) + padh
            lab[:, 3] = w * (x[:, 1] + x[:, 3] / 2) + padw
            lab[:, 4] = h * (x[:, 2] + x[:, 4] / 2) + padh
        return torch.from_numpy(lab)

    def load_mosaic(self, i: int) -> tuple[Tensor, Tensor]:
        """A mosaic of image ``i`` and 3 random others, warped to ``img_size`` squares; pixel labels."""
        s, hyp = self.img_size, self.hyp
        yc, xc = (int(random.uniform(s // 2, 2 * s - s // 2)) for _ in range(2))
        indices = [i] + random.choices(range(self.n), k=3)
        random.shuffle(indices)
        images, labels = [], []
        for j in indices:
            img, _, (h, w) = self.load(j)
            images.append(img)
            labels.append(self.pixel_labels(j, w, h))
        canvas, lab = mosaic4(images, labels, s, (xc, yc))
        return random_perspective(canvas, lab, hyp["degrees"], hyp["translate"], hyp["scale"], hyp["shear"],
                                  hyp["perspective"], border=(-(s // 2), -(s // 2)))

    def __getitem__(self, j: int) -> tuple[Tensor, Tensor, str, Any]:
        i = int(self.order[j])
        hyp = self.hyp
        shapes = None
        if self.mosaic_enabled and random.random() < hyp["mosaic"]:
            img, labels = self.load_mosaic(i)
            if random.random() < hyp["mixup"]:
                img, labels = mixup(img, labels, *self.load_mosaic(random.randint(0, self.n - 1)))
        else:
            img, (h0, w0), (h, w) = self.load(i)
            shape = tuple(int(v) for v in self.batch_shapes[j // self.batch_size]) if self.rect else self.img_size
            img, ratio, pad = letterbox(img, shape, auto=False, scaleup=self.augment)
            shapes = ((h0, w0), ((h / h0, w / w0), pad))
            labels = self.pixel_labels(i, ratio[0] * w, ratio[1] * h, pad[0], pad[1])
            if self.augment:
                img, labels = random_perspective(img, labels, hyp["degrees"], hyp["translate"], hyp["scale"],
                                                 hyp["shear"], hyp["perspective"])
        H, W = img.shape[1:]
        if len(labels):  # xyxy pixels -> normalised xywh, corners clipped to [0, W - eps] (NumPy: a few rows)
            b = labels[:, 1:5].numpy().copy()
            b[:, [0, 2]] = b[:, [0, 2]].clip(0, W - 1e-3)
            b[:, [1, 3]] = b[:, [1, 3]].clip(0, H - 1e-3)
            labels = labels.clone()
            labels[:, 1:5] = torch.from_numpy(np.stack(((b[:, 0] + b[:, 2]) / 2 / W, (b[:, 1] + b[:, 3]) / 2 / H,
                                                        (b[:, 2] - b[:, 0]) / W, (b[:, 3] - b[:, 1]) / H), 1))
        if self.augment:
            img = augment_hsv(img, hyp["hsv_h"], hyp["hsv_s"], hyp["hsv_v"])
            if random.random() < hyp["flipud"]:
                img, labels = flip_ud(img, labels)
            if random.random() < hyp["fliplr"]:
                img, labels = flip_lr(img, labels)
        out = torch.zeros((len(labels), 6), dtype=torch.float32)
        out[:, 1:] = labels
        # the (3, H, W) view of OpenCV's (H, W, 3) memory: collating copies it into the batch once
        return img, out, str(self.index.im_files[i]), shapes


class RectTrainBatchSampler(Sampler[list[int]]):
    """Batches of rectangular training: item ranges ``[k bs, (k+1) bs)`` (one canvas each), in an
    order shuffled per epoch from ``seed + epoch`` (call :meth:`set_epoch`); under DDP rank ``r``
    of ``W`` takes batches ``r, r + W, ...`` of that order, the list padded by repeating its start
    so that every rank gets the same number of steps."""

    def __init__(self, n: int, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0,
                 shuffle: bool = True) -> None:
        self.n, self.batch_size, self.rank, self.world_size = n, batch_size, rank, world_size
        self.seed, self.shuffle, self.epoch = seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        batches = [list(range(s, min(s + self.batch_size, self.n))) for s in range(0, self.n, self.batch_size)]
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            batches = [batches[k] for k in torch.randperm(len(batches), generator=g).tolist()]
        total = math.ceil(len(batches) / self.world_size) * self.world_size
        batches += batches[: total - len(batches)]
        return batches[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches())

    def __len__(self) -> int:
        return math.ceil(math.ceil(self.n / self.batch_size) / self.world_size)
