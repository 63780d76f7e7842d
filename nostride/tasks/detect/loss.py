"""The YOLOv5 training loss (v6.0 ``ComputeLoss`` semantics, value for value).

``YOLOv5Loss(model)(preds, targets) -> (total, items)``:

* ``preds``: the training-mode outputs of a YOLOv5 ``Detect`` head, one raw map per level of
  shape (bs, na, ny, nx, 5 + nc) = [x, y, w, h, obj, cls...] (logits);
* ``targets``: (nt, 6) rows ``[image index, class, x, y, w, h]``, xywh normalised to [0, 1];
* ``total``: shape (1,), ``(lbox * box + lobj * obj + lcls * cls) * bs``;
* ``items``: shape (3,), ``[lbox, lobj, lcls]`` after the gains, detached (for logging).

Everything the reference does is reproduced, including its quirks, because the loss value is
meant to be checked against it on identical inputs: the anchor-ratio match (``max(r, 1/r) <
anchor_t``), the two extra neighbour cells chosen with ``g = 0.5`` (and the duplicate centre
entries that appear for targets at exact integer grid coordinates), the in-place clamping of the
cell indices that also shifts the box targets, objectness targets ``iou.detach().clamp(0)``
(``gr = 1``) where the last write to a cell wins, per-level objectness weights
``[4.0, 1.0, 0.4]`` (``[4.0, 1.0, 0.25, 0.06, 0.02]`` for other level counts), the class term
only when ``nc > 1``, label smoothing, and focal loss when ``fl_gamma > 0``.

The hyperparameter gains are scaled to the number of classes, levels and the image size by
:func:`scale_loss_gains` (in the reference this is done by ``train.py`` before the loss is built).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor, nn

from .boxes import bbox_iou

__all__ = ["LOSS_HYP_DEFAULTS", "YOLOv5Loss", "FocalLoss", "scale_loss_gains", "smooth_bce"]

#: The loss-related entries of YOLOv5's ``hyp.scratch.yaml`` (identical in scratch-low).
LOSS_HYP_DEFAULTS: dict[str, float] = {
    "box": 0.05,  # box loss gain
    "cls": 0.5,  # class loss gain
    "obj": 1.0,  # objectness loss gain (scales with pixels)
    "cls_pw": 1.0,  # class BCE positive weight
    "obj_pw": 1.0,  # objectness BCE positive weight
    "anchor_t": 4.0,  # anchor-multiple threshold for matching targets to anchors
    "fl_gamma": 0.0,  # focal loss gamma (0: plain BCE)
    "label_smoothing": 0.0,  # class label smoothing epsilon
}

# objectness weight per level: P3, P4, P5 (and P3..P7 for other level counts)
_BALANCE = {3: [4.0, 1.0, 0.4]}
_BALANCE_OTHER = [4.0, 1.0, 0.25, 0.06, 0.02]

# neighbour-cell offsets: centre, left (j), up (k), right (l), down (m), in units of g = 0.5
_OFFSETS = [[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]]
_G = 0.5


def scale_loss_gains(hyp: Mapping[str, float], nc: int, nl: int, img_size: int) -> dict[str, float]:
    """The gain scaling YOLOv5's ``train.py`` applies before building the loss.

    ``box *= 3 / nl``, ``cls *= nc / 80 * 3 / nl``, ``obj *= (img_size / 640) ** 2 * 3 / nl``: the
    gains in the hyp files are tuned for COCO (80 classes), 3 levels and 640-pixel images; this
    keeps the three terms in proportion for other class counts, level counts and sizes.

    Returns:
        A new dict (``hyp`` is not modified).
    """
    out = dict(hyp)
    # same evaluation order as the reference: the factor first, then the multiplication
    out["box"] = out["box"] * (3.0 / nl)
    out["cls"] = out["cls"] * (nc / 80.0 * 3.0 / nl)
    out["obj"] = out["obj"] * ((img_size / 640) ** 2 * 3.0 / nl)
    return out


def smooth_bce(eps: float = 0.1) -> tuple[float, float]:
    """Label-smoothed BCE targets ``(positive, negative) = (1 - eps / 2, eps / 2)``."""
    return 1.0 - 0.5 * eps, 0.5 * eps


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017) wrapped around a ``BCEWithLogitsLoss``, as YOLOv5 does it.

    ``loss = bce * alpha_t * (1 - p_t) ** gamma`` with ``p_t = y p + (1 - y)(1 - p)`` and
    ``alpha_t = y alpha + (1 - y)(1 - alpha)``, then reduced as the wrapped loss was.
    """

    def __init__(self, loss_fcn: nn.BCEWithLogitsLoss, gamma: float = 1.5, alpha: float = 0.25) -> None:
        super().__init__()
        self.loss_fcn = loss_fcn
        self.gamma = gamma
        self.alpha = alpha
        self.reduction = loss_fcn.reduction
        self.loss_fcn.reduction = "none"  # focal weights apply per element

    def forward(self, pred: Tensor, true: Tensor) -> Tensor:
        loss = self.loss_fcn(pred, true)
        pred_prob = torch.sigmoid(pred)
        p_t = true * pred_prob + (1 - true) * (1 - pred_prob)
        alpha_factor = true * self.alpha + (1 - true) * (1 - self.alpha)
        modulating_factor = (1.0 - p_t) ** self.gamma
        loss = loss * (alpha_factor * modulating_factor)
        if self.reduction == "mean":
            return loss.mean()
        if self.reduction == "sum":
            return loss.sum()
        return loss


def _detect_head(model_or_detect: nn.Module) -> nn.Module:
    """The Detect module: the object itself if it has ``anchors``, else ``model.model[-1]``."""
    m = model_or_detect
    if hasattr(m, "module") and isinstance(m.module, nn.Module) and not hasattr(m, "anchors"):
        m = m.module  # DataParallel / DistributedDataParallel
    if hasattr(m, "anchors") and hasattr(m, "nl"):
        return m
    inner = getattr(m, "model", None)
    if inner is not None and hasattr(inner[-1], "anchors"):
        return inner[-1]
    raise TypeError(
        f"{type(model_or_detect).__name__}: expected a YOLOv5 model (with .model[-1] a Detect head) "
        "or a Detect head (with anchors, nl, na, nc, stride)"
    )


class YOLOv5Loss:
    """YOLOv5 (v6.0) loss: CIoU box loss, IoU-targeted objectness BCE and class BCE.

    Args:
        model_or_detect: a YOLOv5 model (its ``model[-1]`` is the Detect head) or the Detect head
            itself; the head's ``anchors`` buffer (nl, na, 2) is in grid units (pixels / stride).
        hyp: loss hyperparameters; missing keys take :data:`LOSS_HYP_DEFAULTS`.
        num_classes: overrides the head's ``nc`` (rarely needed).
        img_size: training image size, used by the gain scaling.
        autobalance: adapt the per-level objectness weights during training (off in YOLOv5).
        scale_gains: apply :func:`scale_loss_gains` to ``hyp`` (as YOLOv5's train script does);
            pass ``False`` if ``hyp`` already holds the scaled gains.

    Attributes:
        hyp: the gains and settings in use (after scaling).
        balance: per-level objectness weights.
    """

    gr = 1.0  # objectness target = (1 - gr) + gr * iou

    @property
    def anchors(self) -> Tensor:
        """The head's anchors (nl, na, 2) in grid units, read at each call (autoanchor, ``.to()``)."""
        return self.det.anchors

    def __init__(
        self,
        model_or_detect: nn.Module,
        hyp: Mapping[str, Any] | None = None,
        *,
        num_classes: int | None = None,
        img_size: int = 640,
        autobalance: bool = False,
        scale_gains: bool = True,
    ) -> None:
        det = _detect_head(model_or_detect)
        self.nc = int(num_classes if num_classes is not None else det.nc)
        self.nl = int(det.nl)
        self.na = int(det.na)
        self.det = det
        self.device = det.anchors.device

        h = dict(LOSS_HYP_DEFAULTS)
        if hyp is not None:
            h.update({k: hyp[k] for k in hyp})
        if scale_gains:
            h = scale_loss_gains(h, self.nc, self.nl, img_size)
        self.hyp = h

        bce_cls = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([h["cls_pw"]], device=self.device))
        bce_obj = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([h["obj_pw"]], device=self.device))
        self.cp, self.cn = smooth_bce(h.get("label_smoothing", 0.0))
        if h["fl_gamma"] > 0:
            bce_cls, bce_obj = FocalLoss(bce_cls, h["fl_gamma"]), FocalLoss(bce_obj, h["fl_gamma"])
        self.bce_cls, self.bce_obj = bce_cls, bce_obj

        self.balance = list(_BALANCE.get(self.nl, _BALANCE_OTHER))
        self.autobalance = autobalance
        # the stride-16 level is the reference level for autobalance
        self.ssi = [int(s) for s in det.stride].index(16) if autobalance else 0

    def __call__(self, preds: list[Tensor], targets: Tensor) -> tuple[Tensor, Tensor]:
        """Loss of training-mode head outputs against normalised targets.

        Args:
            preds: nl tensors (bs, na, ny, nx, 5 + nc) of raw logits.
            targets: (nt, 6) ``[image, class, x, y, w, h]``, xywh normalised.

        Returns:
            ``(total (1,), items (3,) = [lbox, lobj, lcls] detached)``, the terms after the gains.
        """
        if len(preds) != self.nl:
            raise ValueError(f"expected {self.nl} prediction levels, got {len(preds)}")
        if targets.ndim != 2 or targets.shape[1] != 6:
            raise ValueError(f"targets must be (nt, 6) [image, class, x, y, w, h], got {tuple(targets.shape)}")
        device = preds[0].device
        if device != self.device:  # the model moved after the loss was built: move pos_weight too
            self.bce_cls.to(device)
            self.bce_obj.to(device)
            self.device = device
        targets = targets.to(device=device, dtype=torch.float32)
        lcls = torch.zeros(1, device=device)
        lbox = torch.zeros(1, device=device)
        lobj = torch.zeros(1, device=device)
        tcls, tbox, indices, anchors = self.build_targets(preds, targets)

        for i, pi in enumerate(preds):
            b, a, gj, gi = indices[i]
            tobj = torch.zeros(pi.shape[:4], dtype=pi.dtype, device=device)
            n = b.shape[0]
            if n:
                ps = pi[b, a, gj, gi]  # predictions at the matched cells
                pxy = ps[:, :2].sigmoid() * 2 - 0.5
                pwh = (ps[:, 2:4].sigmoid() * 2) ** 2 * anchors[i]
                pbox = torch.cat((pxy, pwh), 1)
                iou = bbox_iou(pbox, tbox[i], xywh=True, ciou=True)
                lbox += (1.0 - iou).mean()

                score_iou = iou.detach().clamp(0).type(tobj.dtype)
                _assign_last_wins(tobj, (b, a, gj, gi), (1.0 - self.gr) + self.gr * score_iou)

                if self.nc > 1:  # a single class needs no class term (objectness covers it)
                    t = torch.full_like(ps[:, 5:], self.cn)
                    t[torch.arange(n, device=device), tcls[i]] = self.cp
                    lcls += self.bce_cls(ps[:, 5:], t)

            obji = self.bce_obj(pi[..., 4], tobj)
            lobj += obji * self.balance[i]
            if self.autobalance:
                self.balance[i] = self.balance[i] * 0.9999 + 0.0001 / obji.detach().item()

        if self.autobalance:
            self.balance = [x / self.balance[self.ssi] for x in self.balance]
        lbox *= self.hyp["box"]
        lobj *= self.hyp["obj"]
        lcls *= self.hyp["cls"]
        bs = tobj.shape[0]
        return (lbox + lobj + lcls) * bs, torch.cat((lbox, lobj, lcls)).detach()

    @torch.no_grad()
    def build_targets(
        self, preds: list[Tensor], targets: Tensor
    ) -> tuple[list[Tensor], list[Tensor], list[tuple[Tensor, Tensor, Tensor, Tensor]], list[Tensor]]:
        """Assign targets to (level, anchor, cell) entries, as YOLOv5 v6.0 does.

        Per level, a target is matched to every anchor whose width and height ratios to it are
        all within ``anchor_t`` (``max(r, 1/r) < anchor_t``), and placed in its centre cell plus the
        nearer horizontal and vertical neighbour (``g = 0.5``): left if ``gx % 1 < 0.5`` and
        ``gx > 1``, up likewise in y, right / down by the same test on ``(nx, ny) - gxy``. At
        exact integer coordinates all five tests pass and the right / down entries land on the
        centre cell again (duplicate entries, kept as in the reference).

        Returns:
            ``tcls`` (class per entry), ``tbox`` (xy relative to the cell, in (-0.5, 1.5) before
            clamping, and wh in grid units), ``indices`` (image, anchor, gy, gx; gy/gx clamped to
            the grid, the clamp also applied to ``tbox`` xy) and the matched anchors (grid units),
            one list item per level, entries ordered offset-major, then anchor, then target.
        """
        na, nt = self.na, targets.shape[0]
        device = targets.device
        tcls, tbox, indices, anch = [], [], [], []
        gain = torch.ones(7, device=device)
        ai = torch.arange(na, device=device).float().view(na, 1).repeat(1, nt)
        targets = torch.cat((targets.repeat(na, 1, 1), ai[:, :, None]), 2)  # (na, nt, 7)
        off = torch.tensor(_OFFSETS, device=device).float() * _G

        for i in range(self.nl):
            anchors = self.anchors[i].to(device)
            shape = preds[i].shape
            gain[2:6] = torch.tensor(shape, device=device)[[3, 2, 3, 2]].float()  # xywh -> grid units
            t = targets * gain
            if nt:
                r = t[:, :, 4:6] / anchors[:, None]  # wh ratio to each anchor
                j = torch.max(r, 1 / r).max(2)[0] < self.hyp["anchor_t"]
                t = t[j]
                gxy = t[:, 2:4]
                gxi = gain[[2, 3]] - gxy  # distance to the right / bottom edge
                left, up = ((gxy % 1 < _G) & (gxy > 1)).T
                right, down = ((gxi % 1 < _G) & (gxi > 1)).T
                j = torch.stack((torch.ones_like(left), left, up, right, down))
                t = t.repeat((5, 1, 1))[j]
                offsets = (torch.zeros_like(gxy)[None] + off[:, None])[j]
            else:
                t = targets[0]
                offsets = 0

            b, c = t[:, :2].long().T
            gxy = t[:, 2:4]
            gwh = t[:, 4:6]
            gij = (gxy - offsets).long()
            gi, gj = gij.T  # views of gij: the in-place clamp below also changes gij
            gj.clamp_(0, shape[2] - 1)
            gi.clamp_(0, shape[3] - 1)
            a = t[:, 6].long()
            indices.append((b, a, gj, gi))
            tbox.append(torch.cat((gxy - gij, gwh), 1))
            anch.append(anchors[a])
            tcls.append(c)
        return tcls, tbox, indices, anch


def _assign_last_wins(dst: Tensor, index: tuple[Tensor, ...], values: Tensor) -> None:
    """``dst[index] = values`` where, for repeated positions, the last entry wins.

    The reference writes ``tobj[b, a, gj, gi] = iou`` and relies on the CPU kernel writing in
    order; on CUDA duplicate writes are unordered. Keeping only each position's last entry makes
    the result the same (and deterministic) on every device.
    """
    flat = torch.zeros((), dtype=torch.long, device=dst.device)
    for idx, size in zip(index, dst.shape):
        flat = flat * size + idx
    uniq, inverse = torch.unique(flat, return_inverse=True)
    order = torch.arange(flat.numel(), device=dst.device)
    last = torch.full((uniq.numel(),), -1, dtype=torch.long, device=dst.device)
    last.scatter_reduce_(0, inverse, order, reduce="amax")
    dst.view(-1)[flat[last]] = values[last]
