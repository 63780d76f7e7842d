"""A trained model with its options: ``nostride.load("best.pt").predict(...)``, ``.val(...)``, ``.export(...)``.

:func:`load` reads a nostride checkpoint, a model exported by ``nostride export`` (``.onnx``,
``.torchscript``) or a YOLOv5 ``.pt`` once and returns a :class:`Detector` or a :class:`Classifier`
holding the model and the options given to it (device, image size, thresholds ...), which every
call uses unless it overrides them, as ultralytics' ``YOLO("best.pt").predict(...)``::

    >>> det = nostride.load("runs/train/exp/weights/best.pt", device="cpu", conf=0.4)  # doctest: +SKIP
    >>> det.predict("images/")                     # list of Detections                  # doctest: +SKIP
    >>> det.val("data.yaml", split="val")          # metrics dict, writes runs/val/exp   # doctest: +SKIP
    >>> det.export("best.onnx")                    # path of the checked ONNX file       # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from torch import nn

__all__ = ["TrainedModel", "Detector", "Classifier", "load", "predict"]


class TrainedModel:
    """A loaded model file and its default options (see the subclasses)."""

    task = ""
    _PREDICT: tuple[str, ...] = ()

    def __init__(self, weights: str | os.PathLike | dict[str, Any], **options: Any) -> None:
        from .checkpoint import model_from_checkpoint, open_weights

        self.ckpt = weights if isinstance(weights, dict) else open_weights(weights)
        self.weights = weights if not isinstance(weights, dict) else self.ckpt.get("_path")
        if self.ckpt.get("task") not in (None, self.task):
            raise ValueError(f"{self.weights or 'checkpoint'} holds a {self.ckpt.get('task')} model, not a "
                             f"{type(self).__name__.lower()}; nostride.load picks the right kind")
        self.model: nn.Module = model_from_checkpoint(self.ckpt)
        self.options = dict(options)

    @property
    def names(self) -> list[str]:
        """The class names."""
        return list(self.ckpt.get("names") or getattr(self.model, "names", None) or [])

    def _merged(self, options: dict[str, Any]) -> dict[str, Any]:
        return {**self.options, **options}

    def export(self, output: str | os.PathLike | None = None, format: str = "onnx", **options: Any) -> Path:
        """Export as ``nostride export`` does (:func:`nostride.exported.export_weights`); returns the file.

        The held ``img_size`` is the export's input size unless ``img_size`` is given here."""
        from .exported import export_weights

        if "img_size" not in options and self.options.get("img_size"):
            options["img_size"] = self.options["img_size"]
        if output is None and isinstance(self.weights, (str, os.PathLike)):
            output = Path(self.weights).with_suffix(".onnx" if format == "onnx" else f".{format}")
        return export_weights(self.ckpt, output=output, format=format, **options)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.weights)!r}, {len(self.names)} classes, options={self.options})"


class Detector(TrainedModel):
    """A detector (nostride YOLOv5 / YOLOv5-SPD checkpoint, exported file or YOLOv5 ``.pt``) with options.

    ``options``: defaults of :meth:`predict` (``img_size``, ``conf``, ``iou``, ``max_det``, ``classes``,
    ``agnostic``, ``device``, ``batch_size``, ...) and :meth:`val` (``img_size``, ``device``,
    ``batch_size``, ``workers``, ...); each call's keywords override them.
    """

    task = "detect"
    _PREDICT = ("img_size", "conf", "iou", "max_det", "agnostic", "classes", "device", "batch_size", "names",
                "progress", "workers")
    _VAL = ("split", "img_size", "batch_size", "conf", "iou", "max_det", "single_cls", "device", "half", "workers",
            "save_json", "plots", "progress", "verbose", "cache", "rect", "project", "name", "exist_ok")

    def predict(self, source: Any, **options: Any) -> list:
        """Detections of each image in ``source`` (:func:`nostride.tasks.detect.predict.predict`)."""
        from .tasks.detect.predict import default_img_size, predict

        opts = {k: v for k, v in self._merged(options).items() if k in self._PREDICT}
        opts["img_size"] = opts.get("img_size") or default_img_size(self.ckpt)
        opts.setdefault("names", self.names or None)
        return predict(self.model, source, **opts)  # the held model: nothing rebuilt per call

    def val(self, data: str | os.PathLike | None = None, **options: Any) -> dict[str, Any]:
        """Metrics on a dataset YAML (default: the training data the checkpoint records), written to
        ``project/name`` as ``nostride val`` does (:func:`nostride.tasks.detect.evaluate.validate`)."""
        from .checkpoint import recorded_option
        from .tasks.detect.evaluate import validate

        data = data or recorded_option(self.ckpt, "data")
        if not data:
            raise ValueError("no data given (a dataset YAML) and the checkpoint does not record its training data")
        opts = {k: v for k, v in self._merged(options).items() if k in self._VAL}
        return validate(self.ckpt, data, weights_name=str(self.weights), **opts)


class Classifier(TrainedModel):
    """A classifier (nostride checkpoint or exported file) with options.

    ``options``: defaults of :meth:`predict` (``topk``, ``img_size``, ``device``, ``batch_size``, ...)
    and :meth:`val` (``split``, ``device``, ``batch_size``, ``workers``, ``project``, ``name``, ...).
    """

    task = "classify"
    _PREDICT = ("topk", "img_size", "device", "class_names", "mean", "std", "batch_size", "workers", "progress")

    def predict(self, source: Any, **options: Any) -> list[dict[str, Any]]:
        """Top-k classes of each image (:func:`nostride.tasks.classify.predict.predict_classes`)."""
        from .tasks.classify.predict import predict_classes, preprocessing_from_checkpoint

        opts = {k: v for k, v in self._merged(options).items() if k in self._PREDICT}
        prep = preprocessing_from_checkpoint(self.ckpt, opts.get("img_size"))  # as training prepared images
        opts.update(img_size=prep.img_size, mean=opts.get("mean") or prep.mean, std=opts.get("std") or prep.std)
        opts.setdefault("class_names", self.names or None)
        return predict_classes(self.model, source, **opts)  # the held model: nothing rebuilt per call

    def val(self, data: str | os.PathLike | None = None, **options: Any) -> dict[str, Any]:
        """Metrics on the test or validation split, built as in training, written to ``project/name`` as
        ``nostride val`` does; returns what ``metrics.json`` holds, with ``save_dir``."""
        from .tasks.classify.evaluate import validate_classifier

        opts = self._merged(options)
        args = argparse.Namespace(
            weights=str(self.weights), data=data, split=opts.get("split"), img_size=opts.get("img_size"),
            batch_size=opts.get("batch_size", 128), device=opts.get("device") or "", workers=opts.get("workers"),
            max_per_class=opts.get("max_per_class"), project=opts.get("project", "runs/val"),
            name=opts.get("name", "exp"), exist_ok=opts.get("exist_ok", False))
        return validate_classifier(args, self.ckpt)


_KINDS = {"detect": Detector, "classify": Classifier}


def load(weights: str | os.PathLike | dict[str, Any], **options: Any) -> TrainedModel:
    """A :class:`Detector` or :class:`Classifier` (by the task the file records) holding ``options``."""
    from .checkpoint import open_weights

    ckpt = weights if isinstance(weights, dict) else open_weights(weights)
    kind = _KINDS.get(ckpt.get("task") or "detect")
    if kind is None:
        raise ValueError(f"{weights if not isinstance(weights, dict) else 'checkpoint'}: unknown task {ckpt.get('task')!r}")
    model = kind(ckpt, **options)
    model.weights = weights if not isinstance(weights, dict) else model.weights
    return model


def predict(weights: str | os.PathLike | dict[str, Any], source: Any, **options: Any) -> list:
    """Predict with a model file in one call: ``load(weights).predict(source, **options)``."""
    return load(weights).predict(source, **options)
