"""nostride: SPD-Conv ("No More Strided Convolutions or Pooling", Sunkara & Luo, 2022) for PyTorch.

Layers (:class:`SpaceToDepth`, :class:`SPDConv`), conversion of any CNN (:func:`spdify`), the
deployment form (:func:`fuse`), and the paper's models through :func:`create_model`; training
(:func:`train`, :func:`compare`), evaluation (:func:`val`) and inference (:func:`predict`;
:func:`load` gives a :class:`Detector` or :class:`Classifier` with ``.predict``, ``.val``, ``.export``).

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
    "Classifier": ".trained",
    "Detector": ".trained",
    "load": ".trained",
    "predict": ".trained",
}

if TYPE_CHECKING:  # pragma: no cover
    from .checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
    from .convert import convert_downsampling, fuse, spdify
    from .layers import list_downsample_ops
    from .layers import DepthToSpace, SPDConv, SpaceToDepth, depth_to_space, space_to_depth
    from .models import create_model, list_models
    from .models.yolo.import_yolov5 import load_yolov5
    from .trained import Classifier, Detector, load, predict


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nostride' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)  # the public names only (not this module's own imports and helpers)


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
    """Evaluate a model on a dataset and write a run folder (as ``nostride val``); returns the metrics dict.

    ``weights``: a nostride checkpoint (path or dict), a model exported by ``nostride export``
    (``.onnx``, ``.torchscript``), a YOLOv5 ``.pt`` or a detection model. Detectors: ``data`` is a
    dataset YAML; options as ``nostride val`` (``split``, ``img_size``, ``batch_size``, ``conf``, ``iou``,
    ``max_det``, ``single_cls``, ``save_json``, ``device``, ``project``, ``name``), see
    :func:`nostride.tasks.detect.evaluate.validate`. Classifiers: ``data`` defaults to the recorded
    training data; see :meth:`nostride.Classifier.val`.
    """
    import os

    from .tasks.detect.evaluate import validate

    if isinstance(weights, (str, os.PathLike)):
        from .checkpoint import open_weights

        ckpt = open_weights(weights)
        if ckpt.get("task") == "classify":
            from .trained import Classifier

            model = Classifier(ckpt)
            model.weights = weights
            return model.val(data, **options)
        options.setdefault("weights_name", str(weights))
        weights = ckpt
    return validate(weights, data, **options)


__all__ = [
    "Classifier",
    "DepthToSpace",
    "Detector",
    "SPDConv",
    "SpaceToDepth",
    "__version__",
    "compare",
    "convert_downsampling",
    "create_model",
    "depth_to_space",
    "fuse",
    "list_downsample_ops",
    "list_models",
    "load",
    "load_checkpoint",
    "load_yolov5",
    "model_from_checkpoint",
    "predict",
    "save_checkpoint",
    "space_to_depth",
    "spdify",
    "train",
    "val",
]
