"""Inputs of detection inference: image files or tensors, decoded and letterboxed for batching.

An unreadable file becomes an item carrying its error message, so that a run over a folder reports
it and goes on with the other images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ...data.detection.letterbox import letterbox
from ...data.io import ImageDecodeError, list_images, read_image_hwc
from ...data.opencv import from_hwc
from ...utils.paths import natural_key

__all__ = ["image_items", "LetterboxedImages", "collate_list", "VIDEO_EXTENSIONS", "is_video", "read_video",
           "natural_key"]

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv", ".webm")


def is_video(path: Any) -> bool:
    """Whether ``path`` names a video file by its extension (:data:`VIDEO_EXTENSIONS`)."""
    return isinstance(path, (str, Path)) and Path(path).suffix.lower() in VIDEO_EXTENSIONS


def read_video(path: str | Path, chunk: int = 32) -> Iterator[tuple[int, list[Tensor], float, int | None]]:
    """``(index of the first frame, up to chunk uint8 RGB (3, H, W) frames, frames per second, frame
    count or None)`` for a video file, read with OpenCV; a file OpenCV cannot open is a ``ValueError``."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"{path}: cannot open this video (OpenCV could not read it)")
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0) or 25.0
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) or None
    start, frames = 0, []
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(torch.from_numpy(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)).permute(2, 0, 1).contiguous())
            if len(frames) == chunk:
                yield start, frames, fps, total
                start, frames = start + chunk, []
        if frames:
            yield start, frames, fps, total
        elif start == 0:
            raise ValueError(f"{path}: no frame could be read from this video")
    finally:
        cap.release()


def image_items(source: Any) -> list[tuple[str | None, Path | Tensor]]:
    """(name, file or tensor) pairs; tensors are (3, H, W) uint8 or a (B, 3, H, W) batch. A video file
    gives its frames, decoded at once, named ``VIDEO#N`` (N from 1; ``nostride predict`` streams them instead)."""
    if is_video(source) and Path(source).is_file():
        return [(f"{source}#{start + k + 1}", frame) for start, frames, _, _ in read_video(source)
                for k, frame in enumerate(frames)]
    if isinstance(source, Tensor):
        if source.ndim == 3:
            source = [source]
        elif source.ndim == 4:
            source = list(source)
        else:
            raise ValueError(f"an image tensor must be (3, H, W) or (B, 3, H, W), got {tuple(source.shape)}")
    if isinstance(source, (list, tuple)) and source and all(isinstance(s, Tensor) for s in source):
        for s in source:
            if s.ndim != 3 or s.shape[0] != 3 or s.dtype != torch.uint8:
                raise ValueError(f"image tensors must be uint8 (3, H, W), got {s.dtype} {tuple(s.shape)}")
        return [(None, s) for s in source]
    files = list_images(source)
    if not isinstance(source, (list, tuple)):
        files = sorted(files, key=natural_key)  # a folder's frame2 before frame10
    return [(str(p), p) for p in files]


class LetterboxedImages(Dataset):
    """Items ``(name, original, letterboxed, ratio, pad, error)``; an unreadable file gives an error, not a raise.

    ``auto``: pad only to the next multiple of ``stride`` (YOLOv5 ``detect.py``'s minimal rectangle,
    for one image per batch); else to a ``size`` square (images of a batch share one shape).
    """

    def __init__(self, items: list[tuple[str | None, Path | Tensor]], size: int, stride: int,
                 auto: bool = False) -> None:
        self.items, self.size, self.stride, self.auto = items, size, stride, auto

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        name, item = self.items[i]
        if isinstance(item, Tensor):
            img0 = item
        else:
            try:
                img0 = from_hwc(read_image_hwc(item))
            except (ImageDecodeError, OSError) as e:
                return name, None, None, None, None, str(e)
        img, ratio, pad = letterbox(img0, self.size, auto=self.auto, stride=self.stride)
        return name, img0, img, ratio, pad, None


def collate_list(batch: list) -> list:
    """DataLoader ``collate_fn`` that keeps the items as a list: the originals differ in size, and
    the caller stacks the letterboxed images itself."""
    return batch
