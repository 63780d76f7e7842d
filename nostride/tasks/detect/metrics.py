"""Detection metrics as YOLOv5 v6.0 ``val.py`` computes them, plus AP by object size.

Matching (:func:`match_predictions`), per image, boxes in original-image pixels:

1. IoU of every (label, prediction) pair; candidates have IoU >= 0.5 and the same class.
2. Candidates sorted by decreasing IoU; the first per prediction is kept; then, among those
   (now ordered by prediction index, i.e. by decreasing confidence, as v6.0 leaves them), the
   first per label.
3. ``correct[p, t] = IoU >= t`` for each kept pair and the ten thresholds ``0.50:0.05:0.95``.

AP (:func:`ap_per_class`): predictions sorted by decreasing confidence; per class with labels,
``recall = cumTP / n_labels`` and ``precision = cumTP / (cumTP + cumFP)``; :func:`compute_ap`
closes the curve with ``(0, 1)`` and ``(1, 0)``, takes the precision envelope and integrates
its 101-point interpolation with the trapezoidal rule. Precision and recall are read at the
confidence maximising the class-mean F1 (on a 1000-point confidence grid). mAP50 is the mean over
classes of AP at IoU 0.5; mAP50-95 the mean of AP averaged over the ten thresholds. Classes come
from the labels: a class with labels and no predictions has AP 0; a class never labelled is not
in the mean.

AP by object size (:func:`size_matching`): COCO's rule applied to the same matching and AP. For an
area range ``[lo, hi]`` (COCO: small ``[0, 32^2]``, medium ``[32^2, 96^2]``, large ``[96^2, inf]``,
box areas in original-image pixels, bounds inclusive as in pycocotools) labels outside the range
are ignored: they are not counted, a prediction matching one (at a threshold) is left out at that
threshold, and an unmatched prediction whose own area is outside the range is left out too.
"""

from __future__ import annotations


import numpy as np
import torch
from torch import Tensor

from .boxes import box_iou

__all__ = [
    "IOU_THRESHOLDS",
    "SIZE_RANGES",
    "match_predictions",
    "size_matching",
    "compute_ap",
    "ap_per_class",
    "ConfusionMatrix",
]

IOU_THRESHOLDS = torch.linspace(0.5, 0.95, 10)  # float32, as the reference builds them
SIZE_RANGES: dict[str, tuple[float, float]] = {
    "small": (0.0, 32.0**2),
    "medium": (32.0**2, 96.0**2),
    "large": (96.0**2, 1e5**2),
}

_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy 2 renamed trapz


def _iou_np(labels: Tensor, detections: Tensor) -> np.ndarray:
    """(m, n) float32 IoU of labels x predictions (the reference's ``box_iou``, no eps)."""
    return box_iou(labels[:, 1:5].float(), detections[:, :4].float()).numpy()


def _greedy(iou: np.ndarray, same: np.ndarray, min_iou: float) -> np.ndarray:
    """Kept ``[label, detection, iou]`` rows (float32) of the v6.0 matching on an IoU matrix."""
    li, di = np.nonzero((iou >= min_iou) & same)  # row-major, as torch.where
    if not len(li):
        return np.zeros((0, 3), np.float32)
    matches = np.stack([li.astype(np.float32), di.astype(np.float32), iou[li, di]], 1)
    if len(li) > 1:
        matches = matches[matches[:, 2].argsort()[::-1]]
        matches = matches[np.unique(matches[:, 1], return_index=True)[1]]
        matches = matches[np.unique(matches[:, 0], return_index=True)[1]]
    return matches


def _correct(matches: np.ndarray, n: int, iouv: np.ndarray) -> np.ndarray:
    correct = np.zeros((n, len(iouv)), dtype=bool)
    if len(matches):
        correct[matches[:, 1].astype(np.int64)] = matches[:, 2:3] >= iouv
    return correct


def match_predictions(detections: Tensor, labels: Tensor, iouv: Tensor = IOU_THRESHOLDS) -> Tensor:
    """Which predictions are true positives at each IoU threshold (see the module documentation).

    Args:
        detections: (n, 6) ``[x1, y1, x2, y2, conf, cls]``, sorted by decreasing confidence.
        labels: (m, 5) ``[cls, x1, y1, x2, y2]``, same pixel space.
        iouv: the IoU thresholds (ascending, the first is the candidate threshold).

    Returns:
        (n, len(iouv)) bool.
    """
    n = detections.shape[0]
    if not n or not len(labels):
        return torch.zeros(n, iouv.shape[0], dtype=torch.bool)
    iou = _iou_np(labels, detections)
    same = labels[:, 0:1].numpy() == detections[:, 5].numpy()
    thr = iouv.cpu().numpy()
    return torch.from_numpy(_correct(_greedy(iou, same, float(thr[0])), n, thr))


def _area(boxes: Tensor) -> Tensor:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def size_matching(
    detections: Tensor, labels: Tensor, area_range: tuple[float, float], iouv: Tensor = IOU_THRESHOLDS,
    iou: np.ndarray | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Matching restricted to one object-size range (COCO's ignore rule; see the module documentation).

    Args:
        detections, labels, iouv: as :func:`match_predictions`.
        area_range: ``(lo, hi)`` box areas in pixels, both inclusive.
        iou: the (m, n) IoU matrix of ``labels`` x ``detections`` when already computed.

    Returns:
        ``(correct, ignore, label_in_range)``: (n, T) true positives among in-range labels, (n, T)
        predictions left out at each threshold, and (m,) which labels count.
    """
    n, thr = detections.shape[0], iouv.cpu().numpy()
    lo, hi = area_range
    label_area = _area(labels[:, 1:5]).numpy() if len(labels) else np.zeros(0, np.float32)
    in_range = (label_area >= lo) & (label_area <= hi)
    correct = np.zeros((n, len(thr)), dtype=bool)
    ignore = np.zeros((n, len(thr)), dtype=bool)
    if n and len(labels):
        if iou is None:
            iou = _iou_np(labels, detections)
        same = labels[:, 0:1].numpy() == detections[:, 5].numpy()
        inside = np.nonzero(in_range)[0]
        if len(inside):
            correct = _correct(_greedy(iou[inside], same[inside], float(thr[0])), n, thr)
        outside = np.nonzero(~in_range)[0]
        if len(outside):  # predictions not matched to a counted label but matching an ignored one
            for ti, t in enumerate(thr):
                free = np.nonzero(~correct[:, ti])[0]
                if len(free):
                    m = _greedy(iou[np.ix_(outside, free)], same[np.ix_(outside, free)], float(t))
                    ignore[free[m[:, 1].astype(np.int64)], ti] = True
    if n:
        det_area = _area(detections[:, :4]).numpy()
        det_outside = (det_area < lo) | (det_area > hi)
        ignore |= (~correct) & det_outside[:, None]
    return torch.from_numpy(correct), torch.from_numpy(ignore), torch.from_numpy(in_range)


def compute_ap(recall: np.ndarray, precision: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """101-point interpolated AP (trapezoidal integration of the precision envelope).

    Returns:
        ``(ap, envelope precision, recall)`` with the sentinel points added.
    """
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([1.0], precision, [0.0]))
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))
    x = np.linspace(0, 1, 101)
    ap = float(_trapezoid(np.interp(x, mrec, mpre), x))
    return ap, mpre, mrec


def ap_per_class(
    tp: np.ndarray,
    conf: np.ndarray,
    pred_cls: np.ndarray,
    target_cls: np.ndarray,
    ignore: np.ndarray | None = None,
    curves: bool = False,
) -> dict[str, np.ndarray]:
    """Per-class AP at each IoU threshold, and P / R / F1 at the max-mean-F1 confidence.

    Args:
        tp: (n, T) bool, true positives per prediction and threshold.
        conf: (n,) confidences; pred_cls: (n,) predicted classes.
        target_cls: (m,) classes of the counted labels.
        ignore: optional (n, T) bool, predictions left out per threshold (AP by size). P / R / F1
            then use threshold 0's kept predictions.
        curves: also return the PR curves at IoU 0.5 and the P / R / F1 confidence curves.

    Returns:
        dict with ``classes`` (the labelled classes, ascending), ``ap`` (nc, T), ``p``, ``r``,
        ``f1`` (nc,), and with ``curves``: ``px`` (1000,), ``pr`` (nc, 1000) precision at recall
        ``px``, ``p_curve``, ``r_curve``, ``f1_curve`` (nc, 1000) against confidence ``px``.
    """
    tp = np.asarray(tp, dtype=np.float64)
    tp = tp.reshape(len(conf), tp.shape[-1] if tp.ndim == 2 else -1)
    conf, pred_cls, target_cls = np.asarray(conf), np.asarray(pred_cls), np.asarray(target_cls)
    i = np.argsort(-conf)
    tp, conf, pred_cls = tp[i], conf[i], pred_cls[i]
    if ignore is not None:
        ignore = np.asarray(ignore, dtype=bool).reshape(tp.shape)[i]
    classes = np.unique(target_cls)
    nc, nt = classes.shape[0], tp.shape[1]
    px = np.linspace(0, 1, 1000)
    ap, p, r = np.zeros((nc, nt)), np.zeros((nc, 1000)), np.zeros((nc, 1000))
    pr = np.zeros((nc, 1000))
    for ci, c in enumerate(classes):
        sel = np.nonzero(pred_cls == c)[0]
        n_l = int((target_cls == c).sum())
        if not len(sel) or n_l == 0:
            continue
        for j in range(nt):
            k = sel[~ignore[sel, j]] if ignore is not None else sel
            if not len(k):
                continue
            tpc = tp[k, j].cumsum(0)
            fpc = (1 - tp[k, j]).cumsum(0)
            recall = tpc / (n_l + 1e-16)
            precision = tpc / (tpc + fpc)
            if j == 0:
                r[ci] = np.interp(-px, -conf[k], recall, left=0)
                p[ci] = np.interp(-px, -conf[k], precision, left=1)
            ap[ci, j], mpre, mrec = compute_ap(recall, precision)
            if curves and j == 0:
                pr[ci] = np.interp(px, mrec, mpre)
    f1 = 2 * p * r / (p + r + 1e-16)
    best = int(f1.mean(0).argmax()) if nc else 0
    out = {"classes": classes.astype(np.int64), "ap": ap, "p": p[:, best], "r": r[:, best], "f1": f1[:, best],
           "conf": float(px[best])}
    if curves:
        out.update(px=px, pr=pr, p_curve=p, r_curve=r, f1_curve=f1)
    return out


class ConfusionMatrix:
    """Detection confusion matrix with a background row and column (YOLOv5's definition).

    ``matrix[predicted, true]``, size (nc + 1, nc + 1), index ``nc`` = background. Per image,
    predictions with confidence > ``conf`` are matched to labels with IoU > ``iou_thres``
    (greedy by IoU, one-to-one); a matched pair counts at (predicted class, true class), an
    unmatched label at (background, true class), an unmatched prediction at (predicted class,
    background). Unlike v6.0, false positives on images without labels are counted too.
    """

    def __init__(self, nc: int, conf: float = 0.25, iou_thres: float = 0.45) -> None:
        self.nc, self.conf, self.iou_thres = nc, conf, iou_thres
        self.matrix = np.zeros((nc + 1, nc + 1), dtype=np.int64)

    def process(self, detections: Tensor, labels: Tensor) -> None:
        """Add one image: ``detections`` (n, 6) xyxy/conf/cls, ``labels`` (m, 5) cls/xyxy."""
        detections = detections[detections[:, 4] > self.conf]
        gc = labels[:, 0].long().tolist()
        dc = detections[:, 5].long().tolist()
        if not len(labels):
            for d in dc:
                self.matrix[d, self.nc] += 1
            return
        if not len(detections):
            for g in gc:
                self.matrix[self.nc, g] += 1
            return
        iou = box_iou(labels[:, 1:].float(), detections[:, :4].float())
        x = torch.where(iou > self.iou_thres)
        if x[0].shape[0]:
            m = torch.cat((torch.stack(x, 1), iou[x[0], x[1]][:, None]), 1).cpu().numpy()
            if x[0].shape[0] > 1:
                m = m[m[:, 2].argsort()[::-1]]
                m = m[np.unique(m[:, 1], return_index=True)[1]]
                m = m[m[:, 2].argsort()[::-1]]
                m = m[np.unique(m[:, 0], return_index=True)[1]]
        else:
            m = np.zeros((0, 3))
        m0, m1 = m[:, 0].astype(int), m[:, 1].astype(int)
        for i, g in enumerate(gc):
            j = m0 == i
            if j.sum() == 1:
                self.matrix[dc[int(m1[j][0])], g] += 1
            else:
                self.matrix[self.nc, g] += 1
        for i, d in enumerate(dc):
            if not (m1 == i).any():
                self.matrix[d, self.nc] += 1

    def merge(self, other: np.ndarray) -> None:
        """Add another matrix (from another rank)."""
        self.matrix += np.asarray(other, dtype=np.int64)
