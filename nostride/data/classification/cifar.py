"""CIFAR-10 in its official "python version" (cifar-10-batches-py/), read without running pickled code.

The batches are Python pickles of ``{b'data': uint8 array (10000, 3072), b'labels': [int],
b'batch_label': bytes, b'filenames': [bytes]}``; ``batches.meta`` holds ``b'label_names'``.
``pickle.load`` can execute arbitrary code from a crafted file, so :class:`_ArrayUnpickler` only
resolves the few globals that rebuild numpy arrays (and ``_codecs.encode``, which protocol-2
pickles use to store bytes); anything else raises ``pickle.UnpicklingError`` naming the global.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["CIFAR10_TRAIN_BATCHES", "CIFAR10_TEST_BATCH", "CIFAR10_META", "read_cifar_pickle", "load_cifar10_python"]

CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_BATCH = "test_batch"
CIFAR10_META = "batches.meta"

_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name} (only numpy arrays are allowed)")


def read_cifar_pickle(path: Path) -> dict:
    """Load one CIFAR pickle safely; keys are returned as ``str`` (``b'data'`` -> ``'data'``)."""
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR batch file not found: {path}")
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise ValueError(f"{path}: not a readable CIFAR python batch ({e})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _read_batch(path: Path, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    batch = read_cifar_pickle(path)
    for key in ("data", "labels"):
        if key not in batch:
            raise ValueError(f"{path}: missing key b'{key}' (keys: {sorted(batch)})")
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        shape = getattr(data, "shape", None)
        raise ValueError(f"{path}: b'data' must be a uint8 array (N, 3072), got {type(data).__name__} {shape}")
    raw = batch["labels"]
    # class ids, checked one by one before any conversion: a crafted list of nested shared lists
    # would expand to billions of values inside np.asarray (and str() of it too)
    if isinstance(raw, np.ndarray):
        if raw.dtype.kind not in "iu" or raw.ndim != 1:
            raise ValueError(f"{path}: b'labels' must be a list of whole-number class ids, got a {raw.dtype} "
                             f"array of shape {raw.shape}")
    else:
        ok = isinstance(raw, (list, tuple))
        bad = next((v for v in raw if not isinstance(v, (int, np.integer)) or isinstance(v, bool)), None) if ok else raw
        if not ok or bad is not None:
            shown = repr(bad)[:40] if isinstance(bad, (str, bytes, int, float)) else type(bad).__name__
            raise ValueError(f"{path}: b'labels' must be a list of whole-number class ids, found {shown}")
    labels = np.asarray(raw, dtype=np.int64)
    if labels.shape != (data.shape[0],):
        raise ValueError(f"{path}: {data.shape[0]} images but {labels.size} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{path}: labels must lie in [0, {num_classes}), found {labels.min()}..{labels.max()}")
    # rows are 1024 red, 1024 green, 1024 blue values, each a row-major 32x32 plane
    images = torch.from_numpy(np.ascontiguousarray(data).reshape(-1, 3, 32, 32).copy())
    return images, torch.from_numpy(labels)


def load_cifar10_python(root: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """Read ``cifar-10-batches-py/``: (train images, train labels, test images, test labels, class names).

    Images are uint8 (N, 3, 32, 32) tensors, labels int64 (N,).
    """
    meta = read_cifar_pickle(root / CIFAR10_META)
    if "label_names" not in meta:
        raise ValueError(f"{root / CIFAR10_META}: missing key b'label_names'")
    classes = [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in meta["label_names"]]
    train = [_read_batch(root / name, len(classes)) for name in CIFAR10_TRAIN_BATCHES]
    test_images, test_labels = _read_batch(root / CIFAR10_TEST_BATCH, len(classes))
    return (torch.cat([b[0] for b in train]), torch.cat([b[1] for b in train]), test_images, test_labels, classes)
