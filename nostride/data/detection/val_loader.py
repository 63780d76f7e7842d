"""Validation loading: letterboxed rectangular batches, as YOLOv5's ``val.py`` loads data.

* Images are ordered by aspect ratio ``h / w`` (``numpy.argsort``'s classic order, ties included,
  as the reference: :func:`.aspect_order.classic_argsort`), and batch
  ``k`` holds positions ``k*bs .. k*bs+bs-1`` of that order.
* Each batch gets one canvas shape: ``[max_ar, 1]`` when every ratio in it is < 1, ``[1, 1/min_ar]``
  when every ratio is > 1, else ``[1, 1]``, times ``img_size / stride``, plus ``pad`` (0.5), rounded
  up, times ``stride``. A 640x480 image at 640 gets a 672x512 canvas.
* Each image is resized to long side ``img_size`` (:func:`.image.load_image`), then letterboxed into
  its batch's canvas without further scaling (``scaleup=False``).
* Labels follow the image: ``targets`` are ``[image index in batch, cls, xc, yc, w, h]``
  normalised to the letterboxed canvas (the layout the training loss takes); ``shapes`` carry
  ``((h0, w0), ((h / h0, w / w0), (pad_w, pad_h)))`` to map boxes back to the original image,
  where scoring happens.
* Under ``torch.distributed``, rank ``r`` of ``W`` takes batches ``r, r + W, ...``: the shards are
  disjoint, every image is scored exactly once, with the same canvas as in a single-process run.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .aspect_order import classic_argsort
from .dataset import DetectionDataset
from .letterbox import letterbox

__all__ = ["rect_batch_shapes", "LetterboxDataset", "RectBatchSampler", "collate_detection", "build_val_loader"]


def rect_batch_shapes(
    shapes: np.ndarray, batch_size: int, img_size: int, stride: int = 32, pad: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Order and per-batch canvas shapes of rectangular batching.

    Args:
        shapes: (n, 2) original ``(height, width)`` of the images.
        batch_size, img_size, stride, pad: as the validation loader uses them.

    Returns:
        ``(order, batch_shapes)``: image indices sorted by ``h / w``, and (nb, 2) canvas
        ``(height, width)`` of each batch of that order.
    """
    shapes = np.asarray(shapes, dtype=np.float64).reshape(-1, 2)
    n = len(shapes)
    ar = shapes[:, 0] / shapes[:, 1]  # h / w
    order = classic_argsort(ar)  # ties in the reference's order (see .aspect_order)
    ar = ar[order]
    nb = int(math.ceil(n / batch_size))
    bi = np.floor(np.arange(n) / batch_size).astype(int)
    canvas = [[1.0, 1.0] for _ in range(nb)]
    for i in range(nb):
        ari = ar[bi == i]
        mini, maxi = ari.min(), ari.max()
        if maxi < 1:
            canvas[i] = [maxi, 1.0]
        elif mini > 1:
            canvas[i] = [1.0, 1.0 / mini]
    batch_shapes = np.ceil(np.array(canvas) * img_size / stride + pad).astype(int) * stride
    return order, batch_shapes


class LetterboxDataset(Dataset):
    """Letterboxed items of a :class:`DetectionDataset`, in rectangular-batch order.

    Args:
        dataset: the index.
        img_size: long side images are resized to before letterboxing.
        batch_size: images per batch (decides the canvases; use the loader's batch size).
        stride: the model's largest stride.
        pad: extra canvas, in strides (YOLOv5 validates with 0.5).
        rect: rectangular canvases; ``False`` letterboxes every image into ``img_size`` squares.

    Item ``j`` is the ``order[j]``-th image of ``dataset``: ``(image uint8 (3, H, W), labels (k, 6)
    [0, cls, xc, yc, w, h] normalised to the canvas, path, shapes)``; see the module documentation.
    """

    def __init__(self, dataset: DetectionDataset, img_size: int = 640, batch_size: int = 32, stride: int = 32,
                 pad: float = 0.5, rect: bool = True) -> None:
        self.dataset, self.img_size, self.batch_size, self.stride, self.rect = dataset, img_size, batch_size, stride, rect
        if rect:
            self.order, self.batch_shapes = rect_batch_shapes(dataset.shapes, batch_size, img_size, stride, pad)
        else:
            self.order = np.arange(len(dataset))
            self.batch_shapes = None

    def __len__(self) -> int:
        return len(self.dataset)

    def positions(self) -> dict[str, int]:
        """Each image path's position in the loader order (a sort key that makes sharded results
        come together in single-process order; see :class:`~nostride.tasks.detect.DetectionEvaluator`)."""
        return {str(self.dataset.im_files[int(i)]): j for j, i in enumerate(self.order)}

    def canvas(self, j: int) -> tuple[int, int]:
        """Canvas ``(height, width)`` of item ``j``."""
        if self.batch_shapes is None:
            return self.img_size, self.img_size
        h, w = self.batch_shapes[j // self.batch_size]
        return int(h), int(w)

    def __getitem__(self, j: int) -> tuple[torch.Tensor, torch.Tensor, str, Any]:
        i = int(self.order[j])
        img, (h0, w0), (h, w) = self.dataset.load_image(i, self.img_size)
        img, ratio, pad = letterbox(img, self.canvas(j), auto=False, scaleup=False)
        labels = self.dataset.labels[i].copy()
        if len(labels):  # normalised xywh -> canvas pixels xyxy -> canvas-normalised xywh (clipped)
            xc, yc, bw, bh = (labels[:, k].copy() for k in range(1, 5))
            gw, gh = ratio[0] * w, ratio[1] * h
            x1, y1 = gw * (xc - bw / 2) + pad[0], gh * (yc - bh / 2) + pad[1]
            x2, y2 = gw * (xc + bw / 2) + pad[0], gh * (yc + bh / 2) + pad[1]
            H, W = img.shape[1], img.shape[2]
            eps = 1e-3
            x1, x2 = np.clip(x1, 0, W - eps), np.clip(x2, 0, W - eps)
            y1, y2 = np.clip(y1, 0, H - eps), np.clip(y2, 0, H - eps)
            labels[:, 1], labels[:, 2] = ((x1 + x2) / 2) / W, ((y1 + y2) / 2) / H
            labels[:, 3], labels[:, 4] = (x2 - x1) / W, (y2 - y1) / H
        out = torch.zeros((len(labels), 6), dtype=torch.float32)
        out[:, 1:] = torch.from_numpy(labels)
        shapes = ((h0, w0), ((h / h0, w / w0), pad))
        return img, out, str(self.dataset.im_files[i]), shapes


class RectBatchSampler(Sampler[list[int]]):
    """Consecutive batches of ``batch_size`` items; with ``world_size > 1``, rank ``r`` gets batches ``r::world_size``."""

    def __init__(self, n: int, batch_size: int, rank: int = 0, world_size: int = 1) -> None:
        self.n, self.batch_size, self.rank, self.world_size = n, batch_size, rank, world_size

    def batches(self) -> list[list[int]]:
        all_batches = [list(range(s, min(s + self.batch_size, self.n))) for s in range(0, self.n, self.batch_size)]
        return all_batches[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        return len(self.batches())


def collate_detection(batch: Sequence[tuple]) -> tuple[torch.Tensor, torch.Tensor, list[str], list[Any]]:
    """Stack a batch: ``(images uint8 (B, 3, H, W), targets (N, 6) [i, cls, xc, yc, w, h], paths, shapes)``."""
    images, labels, paths, shapes = zip(*batch)
    for i, lab in enumerate(labels):
        lab[:, 0] = i
    return _stack_images(images), torch.cat(labels, 0), list(paths), list(shapes)


def _stack_images(images: Sequence[torch.Tensor]) -> torch.Tensor:
    """``torch.stack(images)`` (contiguous (B, 3, H, W)); same-shape uint8 CPU images are copied by
    NumPy, which moves OpenCV's channels-last pixels into channels-first rows about twice as fast,
    straight into shared memory inside a DataLoader worker (as PyTorch's default collate does)."""
    first = images[0]
    if first.dtype != torch.uint8 or first.device.type != "cpu" or any(im.shape != first.shape for im in images):
        return torch.stack(images, 0)
    shape = (len(images), *first.shape)
    out = None
    if torch.utils.data.get_worker_info() is not None:
        try:  # the batch goes back to the main process through shared memory: allocate it there
            storage = first._typed_storage()._new_shared(math.prod(shape), device=first.device)
            out = first.new(storage).resize_(shape)
        except (AttributeError, RuntimeError):  # pragma: no cover - private API changed
            out = None
    if out is None:
        out = torch.empty(shape, dtype=torch.uint8)
    arr = out.numpy()
    for i, im in enumerate(images):
        arr[i] = im.numpy()
    return out


def build_val_loader(
    dataset: DetectionDataset,
    img_size: int = 640,
    batch_size: int = 32,
    stride: int = 32,
    pad: float = 0.5,
    rect: bool = True,
    workers: int | None = 2,
    rank: int | None = None,
    world_size: int | None = None,
    pin_memory: bool = False,
    persistent_workers: bool = False,
) -> DataLoader:
    """A DataLoader of letterboxed rectangular batches (:func:`collate_detection` batches).

    ``rank`` / ``world_size`` default to the ``torch.distributed`` process group's when one is
    initialised (each rank then loads a disjoint shard of whole batches). ``persistent_workers``:
    keep the worker processes between iterations (a training run's validation every epoch, as
    YOLOv5's validation loader does).
    """
    if rank is None or world_size is None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            rank, world_size = dist.get_rank(), dist.get_world_size()
        else:
            rank, world_size = 0, 1
    items = LetterboxDataset(dataset, img_size, batch_size, stride, pad, rect)
    sampler = RectBatchSampler(len(items), batch_size, rank, world_size)
    if workers is None:  # not given: the available CPUs (at most 8)
        from nostride.utils.workers import default_workers

        workers = default_workers()
    return DataLoader(items, batch_sampler=sampler, num_workers=workers, collate_fn=collate_detection,
                      pin_memory=pin_memory, persistent_workers=persistent_workers and workers > 0)
