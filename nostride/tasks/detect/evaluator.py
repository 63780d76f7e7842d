"""``DetectionEvaluator``: accumulate per-image predictions and labels, then compute every metric.

Follows the evaluator protocol of :mod:`nostride.tasks.base` (``reset`` / ``process`` /
``evaluate``). ``process`` takes boxes in original-image pixels (:func:`to_original` maps a
validation batch there, as YOLOv5 does before scoring); ``evaluate`` gathers what every rank
processed (once, ordered by the images' keys so that a distributed run scores exactly as a
single process) and returns the metrics dict (:meth:`DetectionEvaluator.evaluate`).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from ...data.detection.letterbox import scale_boxes
from .boxes import xywh2xyxy
from .nms import non_max_suppression
from .metrics import (IOU_THRESHOLDS, SIZE_RANGES, ConfusionMatrix, _iou_np, ap_per_class, match_predictions,
                      size_matching)

__all__ = ["DetectionEvaluator", "nonfinite_images", "to_original", "val_nms"]


def nonfinite_images(pred: Tensor) -> list[bool]:
    """Per image of a batch of decoded head outputs: does it hold a NaN or infinite value?"""
    if isinstance(pred, (tuple, list)):
        pred = pred[0]
    if not pred.numel():
        return [False] * len(pred)
    return (~torch.isfinite(pred).flatten(1).all(1)).tolist()


def val_nms(pred: Tensor, conf: float = 0.001, iou: float = 0.6, max_det: int = 300,
            single_cls: bool = False) -> list[Tensor]:
    """NMS as YOLOv5 v6.0 validation runs it: multi-label, class-agnostic only with ``single_cls``,
    and classes offset by 4096 px (v6.0's value; the offset changes the float32 IoUs NMS compares,
    so it matters for bit-exact agreement) unless a box reaches beyond that (then a larger offset).

    Args:
        pred: (bs, N, 5 + nc) decoded head outputs in canvas pixels (or the eval-mode ``(decoded, raw)``).

    Returns:
        Per image (n, 6) ``[x1, y1, x2, y2, conf, cls]`` in canvas pixels, float32, on the CPU.
    """
    if isinstance(pred, (tuple, list)):
        pred = pred[0]
    if pred.numel() and not bool(torch.isfinite(pred).all()):
        # a NaN/inf output is no detection (the evaluator marks its image and makes the metrics undefined)
        pred = torch.nan_to_num(pred, nan=0.0, posinf=0.0, neginf=0.0)
    extent = float((pred[..., :2].abs() + pred[..., 2:4].abs() / 2).amax()) if pred.numel() else 0.0
    max_wh = 4096 if extent < 4096 else 7680 * (1 + int(extent // 7680))  # offsets must exceed every box
    dets = non_max_suppression(pred, conf, iou, multi_label=True, agnostic=single_cls, max_det=max_det,
                               max_wh=max_wh)
    return [d.float().cpu() for d in dets]


def to_original(
    preds: Sequence[Tensor], targets: Tensor, canvas: tuple[int, int], shapes: Sequence[Any]
) -> tuple[list[Tensor], list[Tensor]]:
    """Map a validation batch to original-image pixels, as YOLOv5 ``val.py`` does before scoring.

    Args:
        preds: per image (n, 6) ``[x1, y1, x2, y2, conf, cls]`` in canvas pixels (NMS output).
        targets: (N, 6) ``[image index, cls, xc, yc, w, h]`` normalised to the canvas.
        canvas: the batch's ``(height, width)``.
        shapes: per image ``((h0, w0), ((h / h0, w / w0), (pad_w, pad_h)))``.

    Returns:
        ``(preds, labels)``: per image (n, 6) predictions and (m, 5) ``[cls, x1, y1, x2, y2]``
        labels, in original pixels, clipped to the image.
    """
    height, width = canvas
    targets = targets.detach().float().cpu().clone()
    targets[:, 2:] *= torch.tensor([width, height, width, height], dtype=torch.float32)
    out_p, out_l = [], []
    for si, pred in enumerate(preds):
        shape0, ratio_pad = shapes[si]
        predn = pred.detach().float().cpu().clone()
        scale_boxes(canvas, predn[:, :4], shape0, ratio_pad)
        labels = targets[targets[:, 0] == si, 1:]
        tbox = xywh2xyxy(labels[:, 1:5])
        scale_boxes(canvas, tbox, shape0, ratio_pad)
        out_p.append(predn)
        out_l.append(torch.cat((labels[:, 0:1], tbox), 1))
    return out_p, out_l


class DetectionEvaluator:
    """Detection metrics over a dataset (see :mod:`.metrics` for the definitions).

    Args:
        nc: number of classes.
        names: class names (default ``"0"``, ``"1"``, ...).
        single_cls: score every prediction as class 0 (labels must be class 0 already).
        sizes: area ranges for AP by object size (default COCO's small / medium / large).
        confusion: also build the confusion matrix.
        json_categories: when set, collect COCO results records (``category_id`` =
            ``json_categories[cls]``) for ``--save-json`` / pycocotools.
    """

    def __init__(self, nc: int, names: Sequence[str] | None = None, single_cls: bool = False,
                 sizes: dict[str, tuple[float, float]] | None = None, confusion: bool = True,
                 json_categories: Sequence[int] | None = None) -> None:
        self.nc = int(nc)
        self.names = list(names) if names is not None else [str(i) for i in range(self.nc)]
        self.single_cls = single_cls
        self.sizes = dict(SIZE_RANGES if sizes is None else sizes)
        self.confusion = confusion
        self.json_categories = list(json_categories) if json_categories is not None else None
        self.iouv = IOU_THRESHOLDS.clone()
        self.reset()

    def reset(self) -> None:
        """Forget everything processed."""
        self._records: list[dict[str, Any]] = []
        self._cm = ConfusionMatrix(self.nc)
        self.jdict: list[dict[str, Any]] = []
        self.curves: dict[str, Any] | None = None

    def process(self, preds: Sequence[Tensor], labels: Sequence[Tensor], keys: Sequence[Any] | None = None,
                image_ids: Sequence[Any] | None = None, nonfinite: Sequence[bool] | None = None) -> None:
        """Add images.

        Args:
            preds: per image (n, 6) ``[x1, y1, x2, y2, conf, cls]`` in original pixels, in
                decreasing confidence (NMS order).
            labels: per image (m, 5) ``[cls, x1, y1, x2, y2]`` in original pixels.
            keys: a sortable key per image (e.g. its position in the loader): results are put in
                key order before scoring, so sharded runs match single-process runs exactly.
            image_ids: COCO image id per image (for the json records).
            nonfinite: per image, whether the model's outputs held NaN or infinite values
                (:func:`nonfinite_images`); any such image makes every metric undefined (NaN).
        """
        for k, (pred, lab) in enumerate(zip(preds, labels)):
            pred = pred.detach().float().cpu()
            lab = lab.detach().float().cpu().reshape(-1, 5)
            if self.single_cls:  # one class: every prediction and label is class 0
                pred, lab = pred.clone(), lab.clone()
                pred[:, 5] = 0
                lab[:, 0] = 0
            rec: dict[str, Any] = {
                "key": keys[k] if keys is not None else None,
                "tcls": lab[:, 0].numpy().copy(),
                "conf": pred[:, 4].numpy().copy(),
                "pcls": pred[:, 5].numpy().copy(),
                "correct": match_predictions(pred, lab, self.iouv).numpy(),
                "sizes": {},
                "nonfinite": bool(nonfinite[k]) if nonfinite is not None else False,
            }
            iou = _iou_np(lab, pred) if len(lab) and len(pred) else None
            for name, rng in self.sizes.items():
                correct, ignore, in_range = size_matching(pred, lab, rng, self.iouv, iou=iou)
                rec["sizes"][name] = (correct.numpy(), ignore.numpy(), lab[in_range.bool(), 0].numpy().copy())
            self._records.append(rec)
            if self.confusion:
                self._cm.process(pred, lab)
            if self.json_categories is not None and image_ids is not None:
                iid = image_ids[k]
                for p in pred.tolist():
                    x1, y1, x2, y2 = p[:4]
                    self.jdict.append({"image_id": iid, "category_id": self.json_categories[int(p[5])],
                                       "bbox": [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)],
                                       "score": round(p[4], 5)})

    # ---- reduction over ranks ----------------------------------------------------------------

    def _gather(self) -> tuple[list[dict[str, Any]], np.ndarray, list[dict[str, Any]]]:
        import torch.distributed as dist

        records, matrix, jdict = self._records, self._cm.matrix, self.jdict
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            parts: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(parts, (records, matrix, jdict))
            records = [r for part in parts for r in part[0]]
            matrix = sum((np.asarray(part[1]) for part in parts), np.zeros_like(matrix))
            jdict = [j for part in parts for j in part[2]]
        if records and all(r["key"] is not None for r in records):
            records = sorted(records, key=lambda r: r["key"])
        return records, matrix, jdict

    # ---- metrics -----------------------------------------------------------------------------

    @staticmethod
    def _summary(tp: np.ndarray, conf: np.ndarray, pcls: np.ndarray, tcls: np.ndarray, ignore=None,
                 curves: bool = False) -> dict[str, Any]:
        out = ap_per_class(tp, conf, pcls, tcls, ignore=ignore, curves=curves)
        if not tp.any():  # no true positive anywhere: every figure is 0 (as the reference reports it)
            for k in ("ap", "p", "r", "f1"):
                out[k] = np.zeros_like(out[k])
            out["conf"] = 0.0
        return out

    def evaluate(self) -> dict[str, Any]:
        """All metrics (gathered over ranks; every rank gets the same dict).

        Keys: ``precision``, ``recall`` (class means at the max-F1 confidence), ``mAP50``,
        ``mAP50-95``, ``AP_small`` / ``AP_medium`` / ``AP_large`` (mAP50-95 by object size;
        ``None`` when no label has that size) and ``AP50_small`` ..., ``instances_small`` ...,
        ``images``, ``instances``, ``per_class`` (list of dicts: class, name, images, instances,
        precision, recall, mAP50, mAP50-95), ``confusion`` (nested list, ``[predicted][true]``,
        background last), ``conf_at_max_f1``.
        """
        records, matrix, jdict = self._gather()
        self.jdict = jdict
        nt = len(self.iouv)

        def cat(key: str) -> np.ndarray:
            return np.concatenate([r[key] for r in records], 0) if records else np.zeros(0)

        tp = np.concatenate([r["correct"] for r in records], 0) if records else np.zeros((0, nt), bool)
        conf, pcls, tcls = cat("conf"), cat("pcls"), cat("tcls")
        s = self._summary(tp, conf, pcls, tcls, curves=True)
        ap = s["ap"]
        ap50, ap_mean = (ap[:, 0], ap.mean(1)) if len(ap) else (np.zeros(0), np.zeros(0))
        self.curves = {k: s[k] for k in ("px", "pr", "p_curve", "r_curve", "f1_curve") if k in s}
        self.curves["classes"] = s["classes"]
        self.curves["ap50"] = ap50
        image_counts = np.zeros(self.nc, np.int64)
        for r in records:
            for c in np.unique(r["tcls"]).astype(np.int64):
                if 0 <= c < self.nc:
                    image_counts[c] += 1
        instances = np.bincount(tcls.astype(np.int64), minlength=self.nc) if len(tcls) else np.zeros(self.nc, np.int64)
        per_class = []
        for i, c in enumerate(s["classes"]):
            c = int(c)
            per_class.append({"class": c, "name": self.names[c] if c < len(self.names) else str(c),
                              "images": int(image_counts[c]), "instances": int(instances[c]),
                              "precision": float(s["p"][i]), "recall": float(s["r"][i]),
                              "mAP50": float(ap50[i]), "mAP50-95": float(ap_mean[i])})
        metrics: dict[str, Any] = {
            "precision": float(s["p"].mean()) if len(s["p"]) else 0.0,
            "recall": float(s["r"].mean()) if len(s["r"]) else 0.0,
            "mAP50": float(ap50.mean()) if len(ap50) else 0.0,
            "mAP50-95": float(ap_mean.mean()) if len(ap_mean) else 0.0,
        }
        size_curves = {}
        for name in self.sizes:
            tps = [r["sizes"][name][0] for r in records]
            tp_s = np.concatenate(tps, 0) if tps else np.zeros((0, nt), bool)
            ig_s = np.concatenate([r["sizes"][name][1] for r in records], 0) if tps else np.zeros((0, nt), bool)
            tc_s = np.concatenate([r["sizes"][name][2] for r in records], 0) if tps else np.zeros(0)
            metrics[f"instances_{name}"] = int(len(tc_s))
            if not len(tc_s):
                metrics[f"AP_{name}"] = metrics[f"AP50_{name}"] = None
                continue
            ss = self._summary(tp_s, conf, pcls, tc_s, ignore=ig_s)
            metrics[f"AP_{name}"] = float(ss["ap"].mean()) if len(ss["ap"]) else 0.0
            metrics[f"AP50_{name}"] = float(ss["ap"][:, 0].mean()) if len(ss["ap"]) else 0.0
            size_curves[name] = ss
        metrics.update({
            "images": len(records),
            "instances": int(len(tcls)),
            "conf_at_max_f1": float(s["conf"]),
            "per_class": per_class,
        })
        if self.confusion:
            metrics["confusion"] = np.asarray(matrix).tolist()
            self._cm.matrix = np.asarray(matrix)
        metrics["nonfinite"] = sum(1 for r in records if r.get("nonfinite"))
        if metrics["nonfinite"]:
            _make_undefined(metrics)
            metrics["undefined_reason"] = (
                f"the model's outputs are not finite for {metrics['nonfinite']} of {len(records)} images (NaN/inf: "
                "diverged or damaged weights), so no metric is defined")
        return metrics

    @property
    def confusion_matrix(self) -> ConfusionMatrix:
        """The confusion matrix (after :meth:`evaluate`, summed over ranks)."""
        return self._cm


_COUNTS = ("images", "instances", "nonfinite", "confusion", "class", "name")


def _make_undefined(metrics: dict[str, Any]) -> None:
    """Every score of ``metrics`` (and of its per-class rows) set to NaN; counts are kept."""
    for key, value in metrics.items():
        if key in _COUNTS or key.startswith("instances_"):
            continue
        if isinstance(value, float):
            metrics[key] = float("nan")
        elif key == "per_class":
            for row in value:
                _make_undefined(row)
