"""nostride: SPD-Conv ("No More Strided Convolutions or Pooling", Sunkara & Luo, 2022) for PyTorch.

Layers (:class:`SpaceToDepth`, :class:`SPDConv`), conversion of any CNN (:func:`spdify`), the
deployment form (:func:`fuse`), and the paper's models through :func:`create_model`.

The public names are imported on first use (PEP 562), so ``import nostride`` and the ``nostride``
command's ``--help``/``--version`` do not pay for importing PyTorch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "load_checkpoint": ".checkpoint",
    "model_from_checkpoint": ".checkpoint",
    "save_checkpoint": ".checkpoint",
    "fuse": ".convert",
    "convert_downsampling": ".convert",
    "list_downsample_ops": ".layers",
    "spdify": ".convert",
    "DepthToSpace": ".layers",
    "SPDConv": ".layers",
    "SpaceToDepth": ".layers",
    "depth_to_space": ".layers",
    "space_to_depth": ".layers",
    "create_model": ".models",
    "list_models": ".models",
    "load_yolov5": ".models.yolo.import_yolov5",
}

if TYPE_CHECKING:  # pragma: no cover
    from .checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
    from .convert import convert_downsampling, fuse, spdify
    from .layers import list_downsample_ops
    from .layers import DepthToSpace, SPDConv, SpaceToDepth, depth_to_space, space_to_depth
    from .models import create_model, list_models
    from .models.yolo.import_yolov5 import load_yolov5


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nostride' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


def train(model=None, data=None, **options):
    """Train a model; returns the final metrics (see :func:`nostride.engine.train` for every option).

    Defaults follow the task of ``model``: a classifier trains 100 epochs at batch 64 (lr 0.1, no
    warm-up, no EMA), a detector as YOLOv5's ``train.py``: 300 epochs at batch 16, 640 px, lr 0.01,
    momentum 0.937, 3 warm-up epochs, EMA, patience 100. Imported lazily to keep ``import nostride`` light.
    """
    from .engine import train as _train

    return _train(model, data, **options)


def compare(models=None, data=None, **options):
    """Compare SPD models against strided baselines on the same data and seeds (see
    :func:`nostride.comparison.compare`; imported lazily)."""
    from .comparison import compare as _compare

    return _compare(models, data, **options)


def val(weights=None, data=None, **options):
    """Evaluate a detector on a dataset and write a run folder; returns the metrics dict.

    ``weights``: a nostride detection checkpoint (path or dict), a YOLOv5 ``.pt`` or a model;
    ``data``: a dataset YAML. Options as ``nostride val`` (``split``, ``img_size``, ``batch_size``,
    ``conf``, ``iou``, ``max_det``, ``single_cls``, ``save_json``, ``device``, ``project``, ``name``);
    see :func:`nostride.tasks.detect.evaluate.validate`. Classifiers are evaluated with
    :func:`nostride.tasks.classify.evaluate.evaluate_classifier` or ``nostride val``.
    """
    from .tasks.detect.evaluate import validate

    return validate(weights, data, **options)


__all__ = [
    "DepthToSpace",
    "SPDConv",
    "SpaceToDepth",
    "__version__",
    "compare",
    "create_model",
    "depth_to_space",
    "fuse",
    "list_models",
    "load_checkpoint",
    "load_yolov5",
    "model_from_checkpoint",
    "save_checkpoint",
    "space_to_depth",
    "spdify",
    "train",
    "val",
]
