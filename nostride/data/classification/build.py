"""``build_classification_data``: one call from a dataset path to train / val / test datasets."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from ...utils.bounds import check_img_size
from ...utils.memory import cache_fits
from ..io import ImageDecodeError, read_image_rgb
from .cifar import load_cifar10_python
from .datasets import BadFileLog, ImageFileDataset, TensorImageDataset
from .detect import resolve_dataset
from .image_folder import load_image_folder_splits
from .ram_cache import DecodedImages
from .split import first_per_class, stratified_split
from .tiny_imagenet import load_tiny_imagenet
from .transforms import CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD, eval_transform, train_transform

__all__ = ["ClassificationData", "build_classification_data", "estimate_mean_std"]

Stats = tuple[float, float, float]
STATS_SAMPLE = 256  # images decoded to estimate an image folder's mean / std


@dataclass
class ClassificationData:
    """Datasets of one classification problem; every item is ``(float (3, S, S) normalised, int label)``.

    Attributes:
        train: training samples with augmentation.
        val: samples carved from train (``val_fraction``) with the evaluation transform; ``None``
            when ``val_fraction == 0``. Choose checkpoints on it.
        test: the dataset's own test / val split with the evaluation transform (``None`` if the
            layout has none). Evaluate it once at the end.
        classes: class names, index = label.
        img_size: S.
        mean, std: normalisation constants (for :func:`eval_transform` at prediction time).
        format: ``"cifar10-python"``, ``"tiny-imagenet"`` or ``"image-folder"``.
        root: the dataset folder that was read.
        class_ids: dataset class identifiers where they differ from ``classes`` (Tiny ImageNet wnids).
    """

    train: Dataset
    val: Dataset | None
    test: Dataset | None
    classes: list[str]
    img_size: int
    mean: Stats
    std: Stats
    format: str
    root: Path | None = None
    class_ids: list[str] | None = field(default=None)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def skipped(self) -> int:
        """Unreadable image files skipped so far in train, val and test (exact after one full pass).

        Files are decoded lazily, so the count grows as the datasets are read; every bad file is
        also reported once with a ``RuntimeWarning`` naming it. In-memory CIFAR data has none.
        """
        return sum(bad.count for bad in self.bad_file_logs())

    def bad_file_logs(self) -> list[Any]:
        """The distinct :class:`~.datasets.BadFileLog` of the splits (train and val share one)."""
        logs: list[Any] = []
        for ds in (self.train, self.val, self.test):
            bad = getattr(ds, "bad", None)
            if bad is not None and all(bad is not seen for seen in logs):
                logs.append(bad)
        return logs


def _tuple3(x: Sequence[float], name: str) -> Stats:
    t = tuple(float(v) for v in x)
    if len(t) != 3:
        raise ValueError(f"{name} needs 3 values (R, G, B), got {x}")
    return t  # type: ignore[return-value]


def estimate_mean_std(paths: Sequence[str], img_size: int, seed: int = 0, sample: int = STATS_SAMPLE,
                      bad: BadFileLog | None = None) -> tuple[Stats, Stats] | None:
    """Per-channel mean / std (in [0, 1]) of up to ``sample`` randomly chosen images, as the model sees
    them (shorter side resized to ``img_size``, centre square). ``None`` if none could be decoded."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(paths), generator=gen)[:sample].tolist()
    s = torch.zeros(3, dtype=torch.float64)
    s2 = torch.zeros(3, dtype=torch.float64)
    n = 0
    for j in order:
        try:
            img = read_image_rgb(paths[j])
        except (ImageDecodeError, OSError) as e:
            if bad is not None:
                bad.mark(j, e)
            continue
        img = TF.center_crop(TF.resize(img, [img_size], antialias=True), [img_size])
        x = img.to(torch.float64).div_(255).flatten(1)
        s += x.sum(1)
        s2 += (x * x).sum(1)
        n += x.shape[1]
    if n == 0:
        return None
    mean = s / n
    std = (s2 / n - mean * mean).clamp_min(1e-12).sqrt()
    rounded = tuple(round(v, 4) for v in mean.tolist()), tuple(round(v, 4) for v in std.tolist())
    return rounded  # type: ignore[return-value]


def _resize_array(images: torch.Tensor, img_size: int, chunk: int = 4096) -> torch.Tensor:
    # resize the in-memory array once, not every item every epoch
    out = [TF.resize(images[i:i + chunk], [img_size, img_size], antialias=True) for i in range(0, len(images), chunk)]
    return torch.cat(out)


def _first_image_size(paths: Sequence[str]) -> int:
    for p in paths[:50]:
        try:
            return min(read_image_rgb(p).shape[1:])
        except (ImageDecodeError, OSError):
            continue
    raise ValueError(f"could not decode any of the first images (e.g. {paths[0]}) to infer img_size; pass img_size")


def build_classification_data(
    path: str | os.PathLike,
    img_size: int | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    augment: bool = True,
    max_per_class: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    strict: bool = False,
    cache: str = "",
    workers: int = 1,
    verbose: bool = False,
) -> ClassificationData:
    """Read a classification dataset (layout detected, see docs/data.md) into train / val / test datasets.

    Args:
        path: dataset root, or a folder holding exactly one dataset, or a built-in dataset
            ``"builtin:lowres"`` (generated into the cache folder on first use).
        img_size: side S of the square images served; default the dataset's own size (CIFAR 32,
            Tiny ImageNet 64, image folder: shorter side of its first training image). Other
            sizes resize every image (e.g. Tiny ImageNet at 32 to study low resolution).
        val_fraction: fraction of each training class held out as the validation split (not used
            for an image folder with both ``val/`` and ``test/``: its ``val/`` is the validation split).
        seed: seed of the validation split (and of the image-folder statistics sample).
        augment: random crop with padding + horizontal flip on train; ``False`` for none.
        max_per_class: keep only the first N training and test samples of each class.
        mean, std: override the normalisation constants (default: CIFAR-10's, ImageNet's for Tiny
            ImageNet, estimated from 256 training images for image folders).
        strict: an image folder whose class folder holds no image is an error (default: a warning;
            the empty class still counts, so class indices do not shift).
        cache: ``"ram"``: decode and resize every image file once, then serve it from memory
            (:class:`~.ram_cache.DecodedImages`; the same items as without, much less work per
            epoch); ``""``: decode on every access. In-memory CIFAR arrays need neither.
        workers: threads filling the cache.
        verbose: the cache's progress and size on stderr.

    Raises:
        FileNotFoundError: ``path`` or a file the layout needs does not exist.
        ValueError: unrecognised layout or malformed metadata (the message names file and line).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if cache not in ("", "ram"):
        raise ValueError(f"cache {cache!r}: classification keeps decoded images in memory only (cache 'ram', "
                         "or '' for none); 'disk' caches are for detection")
    if img_size is not None:
        check_img_size(img_size)  # before any image is resized to it
    from ..builtin import is_builtin, resolve_builtin

    if is_builtin(path):
        path = resolve_builtin(str(path))
    fmt, root = resolve_dataset(path)
    class_ids = None
    if fmt == "cifar10-python":
        tr_x, tr_y, te_x, te_y, classes = load_cifar10_python(root)
        keep_tr, keep_te = first_per_class(tr_y.tolist(), max_per_class), first_per_class(te_y.tolist(), max_per_class)
        tr_x, tr_y, te_x, te_y = tr_x[keep_tr], tr_y[keep_tr], te_x[keep_te], te_y[keep_te]
        size = img_size or 32
        if size != 32:
            tr_x, te_x = _resize_array(tr_x, size), _resize_array(te_x, size)
        m, s = _stats((CIFAR10_MEAN, CIFAR10_STD), mean, std)
        eval_tf = eval_transform(size, m, s, resize=False)
        tr_idx, va_idx = stratified_split(tr_y.tolist(), val_fraction, seed)
        train = TensorImageDataset(tr_x, tr_y, train_transform(size, m, s, resize=False, augment=augment), tr_idx)
        val = TensorImageDataset(tr_x, tr_y, eval_tf, va_idx) if va_idx else None
        test = TensorImageDataset(te_x, te_y, eval_tf)
        return ClassificationData(train, val, test, classes, size, m, s, format=fmt, root=root)

    if fmt == "tiny-imagenet":
        tiny = load_tiny_imagenet(root)
        train_samples, test_samples, classes, class_ids = tiny.train, tiny.test or None, tiny.classes, tiny.class_ids
        val_samples = None
        native = 64
    else:
        train_samples, val_samples, test_samples, classes = load_image_folder_splits(root, strict=strict)
        native = None
    train_samples = [train_samples[i] for i in first_per_class([y for _, y in train_samples], max_per_class)]
    if test_samples is not None:
        test_samples = [test_samples[i] for i in first_per_class([y for _, y in test_samples], max_per_class)]
    if val_samples is not None:
        val_samples = [val_samples[i] for i in first_per_class([y for _, y in val_samples], max_per_class)]
    paths, labels = [p for p, _ in train_samples], [y for _, y in train_samples]
    bad = BadFileLog(paths)
    size = img_size or native or _first_image_size(paths)
    if fmt == "tiny-imagenet":
        stats: tuple[Sequence[float], Sequence[float]] = (IMAGENET_MEAN, IMAGENET_STD)
    elif mean is not None and std is not None:
        stats = (mean, std)
    else:
        stats = estimate_mean_std(paths, size, seed=seed, bad=bad) or (IMAGENET_MEAN, IMAGENET_STD)
    m, s = _stats(stats, mean, std)
    # files are fitted to S x S whatever their size (a no-op for the 64 x 64 images of a real Tiny
    # ImageNet): one odd file in a user's copy is resized like an image folder's, not an error
    eval_tf = eval_transform(size, m, s, resize=True)
    if val_samples is not None:  # the folder's own val/ split (next to test/)
        tr_idx, va_idx = list(range(len(paths))), []
    else:
        tr_idx, va_idx = stratified_split(labels, val_fraction, seed)
    def decoded(split_paths: list[str], split_bad: BadFileLog, name: str) -> DecodedImages | None:
        if cache != "ram" or not cache_fits(len(split_paths) * 3 * size * size, f"{root} ({name})"):
            return None
        return DecodedImages(split_paths, size, eval_tf.fit, split_bad, workers=workers, desc=f"cache {name}",
                             verbose=verbose)

    train_images = decoded(paths, bad, "train")
    train = ImageFileDataset(paths, labels, train_transform(size, m, s, resize=True, augment=augment), tr_idx, bad,
                             images=train_images)
    val = ImageFileDataset(paths, labels, eval_tf, va_idx, bad, on_bad="exclude", images=train_images) if va_idx else None
    if val_samples:
        val = _file_split(val_samples, eval_tf, lambda p, b: decoded(p, b, "val"))
    test = None
    if test_samples:
        test = _file_split(test_samples, eval_tf, lambda p, b: decoded(p, b, "test"))
    elif test_samples is not None:
        warnings.warn(f"{root}: the test split has no images", RuntimeWarning, stacklevel=2)
    return ClassificationData(train, val, test, classes, size, m, s, format=fmt, root=root, class_ids=class_ids)


def _file_split(samples: list[tuple[str, int]], transform: Any,
                decoded: Any) -> ImageFileDataset:
    """An evaluation split of ``(path, label)`` samples, with its own bad-file log (and cache)."""
    split_paths = [p for p, _ in samples]
    bad = BadFileLog(split_paths)
    return ImageFileDataset(split_paths, [y for _, y in samples], transform, bad=bad, on_bad="exclude",
                            images=decoded(split_paths, bad))


def _stats(default: tuple[Sequence[float], Sequence[float]], mean: Sequence[float] | None,
           std: Sequence[float] | None) -> tuple[Stats, Stats]:
    chosen_mean = mean if mean is not None else default[0]
    chosen_std = std if std is not None else default[1]
    return _tuple3(chosen_mean, "mean"), _tuple3(chosen_std, "std")
