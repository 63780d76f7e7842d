"""YOLOv5 loss: CIoU, target assignment and loss values checked against hand computations.

The expected values here are computed from the formulas of yolov5-reference.md section 2 with
plain Python floats (``math``), not through nostride's code paths. With raw outputs of 0 the
predicted box at a matched cell is analytic: ``sigmoid(0) = 0.5`` gives xy = 0.5 (cell centre)
and wh = the anchor; BCE with logits of a constant ``x`` against target ``t`` is
``softplus(x) - t x``.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from nostride.tasks.detect import LOSS_HYP_DEFAULTS, FocalLoss, YOLOv5Loss, bbox_iou, scale_loss_gains
from nostride.tasks.detect.loss import _assign_last_wins

ANCHORS_PX = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]


class StandInDetect(nn.Module):
    """Test double with the Detect attributes the loss reads (anchors in grid units)."""

    def __init__(self, nc: int, anchors_px: list[list[float]], strides: list[float]) -> None:
        super().__init__()
        self.nc, self.no, self.nl, self.na = nc, nc + 5, len(anchors_px), len(anchors_px[0]) // 2
        stride = torch.tensor(strides, dtype=torch.float32)
        self.register_buffer("stride", stride)
        anchors = torch.tensor(anchors_px, dtype=torch.float32).view(self.nl, -1, 2)
        self.register_buffer("anchors", anchors / stride.view(-1, 1, 1))


def yolo_head(nc: int = 3) -> StandInDetect:
    return StandInDetect(nc, ANCHORS_PX, [8, 16, 32])


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def ciou_hand(b1: tuple[float, ...], b2: tuple[float, ...], eps: float = 1e-7) -> float:
    """CIoU of two centre-xywh boxes, straight from the formulas (Python floats)."""
    (x1, y1, w1, h1), (x2, y2, w2, h2) = b1, b2
    l1, r1, t1, d1 = x1 - w1 / 2, x1 + w1 / 2, y1 - h1 / 2, y1 + h1 / 2
    l2, r2, t2, d2 = x2 - w2 / 2, x2 + w2 / 2, y2 - h2 / 2, y2 + h2 / 2
    inter = max(0.0, min(r1, r2) - max(l1, l2)) * max(0.0, min(d1, d2) - max(t1, t2))
    hh1, hh2 = h1 + eps, h2 + eps
    union = w1 * hh1 + w2 * hh2 - inter + eps
    iou = inter / union
    c2 = (max(r1, r2) - min(l1, l2)) ** 2 + (max(d1, d2) - min(t1, t2)) ** 2 + eps
    rho2 = ((x2 - x1) ** 2 + (y2 - y1) ** 2)
    v = 4 / math.pi**2 * (math.atan(w2 / hh2) - math.atan(w1 / hh1)) ** 2
    alpha = v / (v - iou + 1 + eps)
    return iou - (rho2 / c2 + v * alpha)


# ----------------------------------------------------------------------------------------- CIoU


def test_ciou_identical_boxes_is_one():
    b = torch.tensor([[5.0, 7.0, 4.0, 2.0], [0.5, 0.5, 1.0, 3.0]])
    assert torch.allclose(bbox_iou(b, b, ciou=True), torch.ones(2), atol=1e-6)
    assert torch.allclose(bbox_iou(b, b), torch.ones(2), atol=1e-6)


def test_iou_variants_hand_values_for_shifted_square():
    # squares of side 2 centred at (0,0) and (1,0): inter 2, union 6 -> IoU 1/3; enclosing 3x2,
    # squared diagonal 13, centre distance^2 1 -> DIoU = CIoU = 1/3 - 1/13 (same aspect: v = 0)
    b1, b2 = torch.tensor([0.0, 0.0, 2.0, 2.0]), torch.tensor([1.0, 0.0, 2.0, 2.0])
    assert bbox_iou(b1, b2).item() == pytest.approx(1 / 3, abs=1e-6)
    assert bbox_iou(b1, b2, giou=True).item() == pytest.approx(1 / 3, abs=1e-6)  # enclosing area == union
    assert bbox_iou(b1, b2, diou=True).item() == pytest.approx(1 / 3 - 1 / 13, abs=1e-6)
    assert bbox_iou(b1, b2, ciou=True).item() == pytest.approx(1 / 3 - 1 / 13, abs=1e-6)
    # GIoU with a gap: [0,1]^2 and [2,3]x[0,1]: IoU 0, enclosing 3, union 2 -> -1/3
    g = bbox_iou(torch.tensor([0.0, 0.0, 1.0, 1.0]), torch.tensor([2.0, 0.0, 3.0, 1.0]), xywh=False, giou=True)
    assert g.item() == pytest.approx(-1 / 3, abs=1e-6)


def test_ciou_aspect_term_and_alpha_without_gradient():
    # 2x2 vs 4x2 at the same centre: IoU 0.5, rho 0, v = 4/pi^2 (atan 2 - atan 1)^2
    w2 = torch.tensor(4.0, requires_grad=True)
    b1 = torch.tensor([0.0, 0.0, 2.0, 2.0])
    b2 = torch.stack([torch.tensor(0.0), torch.tensor(0.0), w2, torch.tensor(2.0)])
    out = bbox_iou(b1, b2, ciou=True)
    v = 4 / math.pi**2 * (math.atan(2) - math.atan(1)) ** 2
    alpha = v / (v - 0.5 + 1)
    assert out.item() == pytest.approx(0.5 - v * alpha, abs=1e-6)
    assert out.item() == pytest.approx(ciou_hand((0, 0, 2, 2), (0, 0, 4, 2)), abs=1e-7)
    out.backward()
    # d/dw2: IoU = 4 / (4 + 2 w2 - 4) -> -2*4/(2 w2)^2 = -1/8; v' = 8/pi^2 (atan(w2/2) - atan 1) / (2 (1 + 4));
    # alpha is a constant (no gradient through it); rho2 = 0 so the c^2 term has no gradient either
    dv = 8 / math.pi**2 * (math.atan(2) - math.atan(1)) * (1 / 2) / (1 + 4)
    assert w2.grad.item() == pytest.approx(-1 / 8 - alpha * dv, abs=1e-5)


# ----------------------------------------------------------------------------------------- gains


def test_scale_loss_gains_hand_values():
    h = scale_loss_gains(LOSS_HYP_DEFAULTS, nc=3, nl=3, img_size=320)
    assert h["box"] == pytest.approx(0.05)
    assert h["cls"] == pytest.approx(0.5 * 3 / 80)
    assert h["obj"] == pytest.approx(1.0 * 0.25)
    h4 = scale_loss_gains(LOSS_HYP_DEFAULTS, nc=80, nl=4, img_size=1280)
    assert (h4["box"], h4["cls"], h4["obj"]) == pytest.approx((0.05 * 0.75, 0.5 * 0.75, 4.0 * 0.75))
    assert LOSS_HYP_DEFAULTS["box"] == 0.05  # not modified in place
    # the constructor scales by default, and not when told so
    assert YOLOv5Loss(yolo_head(3), img_size=320).hyp["obj"] == pytest.approx(0.25)
    assert YOLOv5Loss(yolo_head(3), img_size=320, scale_gains=False).hyp["obj"] == 1.0
    assert YOLOv5Loss(yolo_head(80), img_size=640).hyp == pytest.approx(LOSS_HYP_DEFAULTS)


# ------------------------------------------------------------------------------ target assignment


def single_level(grid: int, anchors_px: list[float], nc: int = 2, stride: float = 8.0):
    head = StandInDetect(nc, [anchors_px], [stride])
    loss = YOLOv5Loss(head, scale_gains=False)
    preds = [torch.zeros(1, head.na, grid, grid, nc + 5)]
    return loss, preds


def assigned(loss, preds, targets):
    tcls, tbox, indices, anch = loss.build_targets(preds, torch.tensor(targets, dtype=torch.float32))
    b, a, gj, gi = indices[0]
    cells = list(zip(a.tolist(), gi.tolist(), gj.tolist()))
    return cells, tbox[0], anch[0], tcls[0]


def test_neighbour_cells_left_and_up():
    loss, preds = single_level(8, [8, 8])  # one anchor of 1x1 grid cells
    # gx = 2.4 (frac < .5, > 1 -> left), gy = 4.4 (-> up); right/down tests fail (5.6, 3.6 have frac .6)
    cells, tbox, _, tcls = assigned(loss, preds, [[0, 1, 2.4 / 8, 4.4 / 8, 1 / 8, 1 / 8]])
    assert cells == [(0, 2, 4), (0, 1, 4), (0, 2, 3)]  # centre, left, up
    assert torch.allclose(tbox[:, :2], torch.tensor([[0.4, 0.4], [1.4, 0.4], [0.4, 1.4]]), atol=1e-5)
    assert tcls.tolist() == [1, 1, 1]


def test_neighbour_cells_right_and_down_and_edges():
    loss, preds = single_level(8, [8, 8])
    # gx = 3.7 -> right (8 - 3.7 = 4.3, frac .3); gy = 2.2 -> up. Order: centre, j, k, l, m
    cells, tbox, _, _ = assigned(loss, preds, [[0, 0, 3.7 / 8, 2.2 / 8, 1 / 8, 1 / 8]])
    assert cells == [(0, 3, 2), (0, 3, 1), (0, 4, 2)]  # centre, up, right
    assert torch.allclose(tbox[:, :2], torch.tensor([[0.7, 0.2], [0.7, 1.2], [-0.3, 0.2]]), atol=1e-5)
    # gx = 0.3: no left (gx <= 1) and no right (frac of 7.7 >= .5); gy = 0.8 -> down only (7.2)
    cells, _, _, _ = assigned(loss, preds, [[0, 0, 0.3 / 8, 0.8 / 8, 1 / 8, 1 / 8]])
    assert cells == [(0, 0, 0), (0, 0, 1)]


def test_integer_coordinates_fire_all_five_with_duplicate_centre_entries():
    loss, preds = single_level(8, [8, 8])
    cells, tbox, _, _ = assigned(loss, preds, [[0, 0, 3 / 8, 5 / 8, 1 / 8, 1 / 8]])  # gx = 3, gy = 5 exactly
    # centre, left, up, then right and down collapse onto the centre (long(3 + 0.5) = 3)
    assert cells == [(0, 3, 5), (0, 2, 5), (0, 3, 4), (0, 3, 5), (0, 3, 5)]
    assert tbox[:, :2].tolist() == [[0, 0], [1, 0], [0, 1], [0, 0], [0, 0]]


def test_clamp_at_the_border_also_moves_the_box_target():
    loss, preds = single_level(8, [8, 8])
    # x = 1.0 -> gx = 8: centre cell 8 is clamped to 7, so its tbox x becomes 8 - 7 = 1.0 (not 0)
    cells, tbox, _, _ = assigned(loss, preds, [[0, 0, 1.0, 4.4 / 8, 1 / 8, 1 / 8]])
    assert cells == [(0, 7, 4), (0, 7, 4), (0, 7, 3)]  # centre (clamped), left (long(7.5) = 7), up
    assert torch.allclose(tbox[:, 0], torch.tensor([1.0, 1.0, 1.0]))


def test_anchor_ratio_threshold():
    # anchors 1x1 and 5x5 cells; the test is max(r, 1/r) < 4 (strict) over w and h
    loss, preds = single_level(8, [8, 8, 40, 40])
    cells, _, anch, _ = assigned(loss, preds, [[0, 0, 0.5 + 1e-3, 0.5 + 1e-3, 3.9 / 8, 3.9 / 8]])
    assert {a for a, _, _ in cells} == {0, 1}
    cells, _, anch, _ = assigned(loss, preds, [[0, 0, 0.5 + 1e-3, 0.5 + 1e-3, 4.1 / 8, 4.1 / 8]])
    assert {a for a, _, _ in cells} == {1}  # 4.1 > 4 for the 1x1 anchor
    assert torch.equal(anch, torch.tensor([[5.0, 5.0]]).expand_as(anch))
    cells, _, _, _ = assigned(loss, preds, [[0, 0, 0.5 + 1e-3, 0.5 + 1e-3, 0.25 / 8, 1 / 8]])
    assert cells == []  # w ratio exactly 1/4 to the 1x1 anchor: 4 is not < 4; 1/20 to the other
    # only one side out of range is enough to reject
    cells, _, _, _ = assigned(loss, preds, [[0, 0, 0.5 + 1e-3, 0.5 + 1e-3, 2 / 8, 4.5 / 8]])
    assert {a for a, _, _ in cells} == {1}


def test_last_write_wins():
    dst = torch.zeros(2, 3)
    idx = (torch.tensor([0, 1, 0, 0]), torch.tensor([1, 2, 1, 1]))
    _assign_last_wins(dst, idx, torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert dst.tolist() == [[0, 4.0, 0], [0, 0, 2.0]]


# ---------------------------------------------------------------------------------- loss values


def test_loss_matches_hand_computation_three_levels():
    """1 image 64x64, nc=3, one target; xywh logits 0, objectness -2, classes [0.5, -1, 2]."""
    nc, c_obj, c_cls = 3, -2.0, [0.5, -1.0, 2.0]
    hyp = dict(box=0.05, obj=1.0, cls=0.5, label_smoothing=0.1)
    loss = YOLOv5Loss(yolo_head(nc), hyp, scale_gains=False)
    preds = []
    for g in (8, 4, 2):  # 64 / (8, 16, 32)
        p = torch.zeros(1, 3, g, g, nc + 5)
        p[..., 4] = c_obj
        p[..., 5:] = torch.tensor(c_cls)
        preds.append(p)
    target = torch.tensor([[0, 1, 0.3, 0.55, 0.25, 0.2]])  # 19.2, 35.2, 16 x 12.8 px
    total, items = loss(preds, target)

    # P3 (grid 8): gxy (2.4, 4.4), gwh (2, 1.6); anchors (1.25, 1.625), (2, 3.75), (4.125, 2.875)
    # ratios (max over w,h of max(r, 1/r)): 1.6, 2.34, 2.06 -> all three anchors match;
    # cells: centre, left (2.4 % 1 < .5), up (4.4 % 1 < .5) -> tbox xy (.4,.4) (1.4,.4) (.4,1.4)
    # P4 (grid 4): gxy (1.2, 2.2), gwh (1, .8); anchors (1.875, 3.8125) 4.77 no, (3.875, 2.8125) 3.875
    # yes, (3.6875, 7.4375) 9.3 no -> one anchor, cells centre, left, up: xy (.2,.2) (1.2,.2) (.2,1.2)
    # P5 (grid 2): gwh (.5, .4) vs (3.625, 2.8125)... all ratios > 4 -> no entries
    p3_anchors = [(1.25, 1.625), (2.0, 3.75), (4.125, 2.875)]
    p3 = [ciou_hand((0.5, 0.5, aw, ah), (tx, ty, 2.0, 1.6)) for aw, ah in p3_anchors
          for tx, ty in [(0.4, 0.4), (1.4, 0.4), (0.4, 1.4)]]
    p4 = [ciou_hand((0.5, 0.5, 3.875, 2.8125), (tx, ty, 1.0, 0.8)) for tx, ty in [(0.2, 0.2), (1.2, 0.2), (0.2, 1.2)]]
    lbox = sum(1 - c for c in p3) / 9 + sum(1 - c for c in p4) / 3
    # objectness: every matched cell distinct; BCE mean = softplus(c) - c * sum(tobj) / cells
    s3, s4 = sum(max(c, 0) for c in p3), sum(max(c, 0) for c in p4)
    sp = softplus(c_obj)
    lobj = 4.0 * (sp - c_obj * s3 / 192) + 1.0 * (sp - c_obj * s4 / 48) + 0.4 * sp
    # classes: identical rows; targets cp = 0.95 at class 1, cn = 0.05 elsewhere; P3 and P4 each add one mean
    cp, cn = 0.95, 0.05
    row = sum(softplus(x) - (cp if k == 1 else cn) * x for k, x in enumerate(c_cls)) / nc
    lcls = 2 * row

    expected = [lbox * 0.05, lobj * 1.0, lcls * 0.5]
    assert items.tolist() == pytest.approx(expected, rel=1e-5)
    assert total.shape == (1,)
    assert total.item() == pytest.approx(sum(expected) * 1, rel=1e-5)  # * batch size 1
    assert not items.requires_grad


def test_loss_scales_with_batch_size_and_ignores_empty_images():
    loss = YOLOv5Loss(yolo_head(3), scale_gains=False)
    torch.manual_seed(1)
    one = [torch.randn(1, 3, g, g, 8) for g in (8, 4, 2)]
    two = [torch.cat([p, p]) for p in one]
    t = torch.tensor([[0, 2, 0.4, 0.6, 0.3, 0.3]])
    t2 = torch.cat([t, t.clone().index_fill_(1, torch.tensor([0]), 1.0)])
    total1, items1 = loss(one, t)
    total2, items2 = loss(two, t2)
    assert torch.allclose(items1, items2, atol=1e-6)  # per-image means are the same
    assert total2.item() == pytest.approx(2 * total1.item(), rel=1e-5)  # total = sum of terms * bs


def test_objectness_last_write_wins_through_the_loss():
    # a 1x1 grid: every target lands in cell (0, 0) with no neighbours; one 8x8 px anchor
    head = StandInDetect(1, [[8, 8]], [8])
    loss = YOLOv5Loss(head, dict(box=1.0, obj=1.0, cls=1.0), scale_gains=False)
    c = 1.5
    pred = torch.zeros(1, 1, 1, 1, 6)
    pred[..., 4] = c
    t_a = [0, 0, 0.5, 0.5, 1.0, 1.0]  # the anchor box itself: CIoU ~ 1
    t_b = [0, 0, 0.3, 0.6, 0.8, 1.2]
    ciou_b = ciou_hand((0.5, 0.5, 1.0, 1.0), (0.3, 0.6, 0.8, 1.2))
    ciou_a = ciou_hand((0.5, 0.5, 1.0, 1.0), (0.5, 0.5, 1.0, 1.0))
    bal = 4.0  # balance[0] for a 1-level head
    for order, last in (([t_a, t_b], ciou_b), ([t_b, t_a], ciou_a)):
        _, items = loss([pred], torch.tensor(order))
        assert items[1].item() == pytest.approx(bal * (softplus(c) - c * max(last, 0)), rel=1e-5)
        assert items[2].item() == 0.0  # nc == 1: no class term


def test_balance_per_level_count_and_autobalance():
    c = -1.0
    for nl, bal in ((3, [4.0, 1.0, 0.4]), (5, [4.0, 1.0, 0.25, 0.06, 0.02])):
        strides = [8 * 2**i for i in range(nl)]
        head = StandInDetect(2, [[10, 10] for _ in range(nl)], strides)
        loss = YOLOv5Loss(head, dict(obj=1.0), scale_gains=False)
        assert loss.balance == bal
        preds = [torch.full((1, 1, 2, 2, 7), c) for _ in range(nl)]
        _, items = loss(preds, torch.zeros(0, 6))  # no targets: BCE against 0 everywhere
        assert items[1].item() == pytest.approx(softplus(c) * sum(bal), rel=1e-6)
        assert items[0].item() == 0 and items[2].item() == 0
    auto = YOLOv5Loss(yolo_head(2), dict(obj=1.0), scale_gains=False, autobalance=True)
    assert auto.ssi == 1  # the stride-16 level
    auto([torch.full((1, 3, g, g, 7), c) for g in (4, 2, 1)], torch.zeros(0, 6))
    new = [b * 0.9999 + 0.0001 / softplus(c) for b in (4.0, 1.0, 0.4)]
    assert auto.balance == pytest.approx([b / new[1] for b in new], rel=1e-6)


def test_focal_loss_hand_values():
    fl = FocalLoss(nn.BCEWithLogitsLoss(), gamma=2.0)  # alpha 0.25
    x, y = torch.tensor([1.0, -0.5]), torch.tensor([1.0, 0.0])
    p = [1 / (1 + math.exp(-1.0)), 1 / (1 + math.exp(0.5))]
    bce = [-math.log(p[0]), -math.log(1 - p[1])]
    expected = (bce[0] * 0.25 * (1 - p[0]) ** 2 + bce[1] * 0.75 * p[1] ** 2) / 2
    assert fl(x, y).item() == pytest.approx(expected, rel=1e-6)
    loss = YOLOv5Loss(yolo_head(3), dict(fl_gamma=1.5), scale_gains=False)
    assert isinstance(loss.bce_cls, FocalLoss) and loss.bce_obj.gamma == 1.5
    assert isinstance(YOLOv5Loss(yolo_head(3)).bce_obj, nn.BCEWithLogitsLoss)


def test_gradient_flows_and_is_finite():
    loss = YOLOv5Loss(yolo_head(4), img_size=64)
    preds = [torch.randn(2, 3, g, g, 9, requires_grad=True) for g in (8, 4, 2)]
    targets = torch.tensor([[0, 1, 0.3, 0.55, 0.25, 0.2], [1, 3, 0.7, 0.2, 0.1, 0.15], [1, 0, 0.5, 0.5, 0.9, 0.8]])
    total, items = loss(preds, targets)
    assert torch.isfinite(total).all() and torch.isfinite(items).all() and (items > 0).all()
    total.backward()
    for p in preds:
        assert torch.isfinite(p.grad).all()
        assert p.grad[..., 4].abs().sum() > 0  # objectness everywhere
    assert preds[0].grad[..., :4].abs().sum() > 0 and preds[0].grad[..., 5:].abs().sum() > 0


def test_bad_inputs_raise():
    loss = YOLOv5Loss(yolo_head(3))
    preds = [torch.zeros(1, 3, g, g, 8) for g in (8, 4, 2)]
    with pytest.raises(ValueError, match="targets"):
        loss(preds, torch.zeros(3, 5))
    with pytest.raises(ValueError, match="levels"):
        loss(preds[:2], torch.zeros(0, 6))
    with pytest.raises(TypeError, match="Detect"):
        YOLOv5Loss(nn.Linear(2, 2))


# ------------------------------------------------------------------------- with the real model


def _real_yolov5n(nc: int):
    from nostride.models import create_model, list_models

    if "yolov5n" not in list_models():
        pytest.skip("yolov5n is not registered in this build")
    return create_model("yolov5n", num_classes=nc)


@pytest.mark.slow
def test_real_model_head_contract_and_loss():
    model = _real_yolov5n(80)
    det = model.model[-1]
    assert det.anchors.shape == (3, 3, 2) and det.stride.tolist() == [8, 16, 32]
    # anchors are in grid units: P3's first anchor 10x13 px / 8
    assert det.anchors[0, 0].tolist() == pytest.approx([1.25, 1.625])
    loss = YOLOv5Loss(model, img_size=128)
    assert loss.anchors is det.anchors
    model.train()
    preds = model(torch.zeros(1, 3, 128, 128))
    total, items = loss(preds, torch.tensor([[0, 5, 0.5, 0.5, 0.3, 0.4]]))
    assert torch.isfinite(total).all() and items.shape == (3,)


@pytest.mark.slow
def test_overfitting_one_image_lowers_the_loss(one_thread):
    """yolov5n at 128x128, one image with two boxes: 40 Adam steps must cut the loss sharply."""
    model = _real_yolov5n(2).train()
    loss_fn = YOLOv5Loss(model, img_size=128)
    torch.manual_seed(0)
    img = torch.rand(1, 3, 128, 128)
    targets = torch.tensor([[0, 0, 0.3, 0.4, 0.25, 0.3], [0, 1, 0.7, 0.65, 0.4, 0.3]])
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    history = []
    for _ in range(40):
        total, items = loss_fn(model(img), targets)
        opt.zero_grad()
        total.backward()
        opt.step()
        history.append(total.item())
        if len(history) == 1:
            first_items = items
    assert all(math.isfinite(v) for v in history)
    assert min(history[-5:]) < 0.5 * history[0], history
    assert items[0] < first_items[0] and items[1] < first_items[1]  # box and objectness both learn


def test_regression_values_of_a_mixed_case():
    """Two images, seven targets (integer coordinates, right-border clamp, shared cells, label
    smoothing, 96 px gain scaling) on deterministic logits. The expected numbers were produced by
    YOLOv5 v6.0's ComputeLoss on the same inputs (float32, CPU); nostride matched them bit for bit
    there, the tolerance here only allows for other CPUs' summation order."""
    nc = 3
    preds = []
    for i, g in enumerate((12, 6, 3)):
        shape = (2, 3, g, g, nc + 5)
        n = 2 * 3 * g * g * (nc + 5)
        preds.append((torch.sin(torch.arange(n, dtype=torch.float32) * 0.37 + i) * 2).view(shape).requires_grad_())
    targets = torch.tensor([
        [0, 0, 0.30, 0.55, 0.25, 0.20],
        [0, 2, 0.50, 0.50, 0.10, 0.30],  # 6.0, 6.0 on P3: integer coordinates
        [0, 1, 1.00, 0.20, 0.40, 0.35],  # right border: clamp
        [0, 1, 0.31, 0.56, 0.20, 0.22],  # shares cells with the first
        [1, 1, 0.75, 0.25, 0.60, 0.50],
        [1, 0, 0.05, 0.95, 0.04, 0.06],
        [1, 2, 0.40, 0.60, 0.90, 0.85],
    ])
    loss = YOLOv5Loss(yolo_head(nc), dict(label_smoothing=0.1), img_size=96)
    total, items = loss(preds, targets)
    total.backward()
    assert total.item() == pytest.approx(0.6013040542602539, rel=1e-6)
    assert items.tolist() == pytest.approx([0.14124217629432678, 0.1107100397348404, 0.04869978874921799], rel=1e-6)
    assert sum(p.grad.abs().sum().item() for p in preds) == pytest.approx(0.21824241429567337, rel=1e-5)
