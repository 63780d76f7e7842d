"""Non-maximum suppression on crafted boxes (YOLOv5 semantics)."""

from __future__ import annotations

import pytest
import torch

from nostride.tasks.detect import non_max_suppression


def pred_from(rows: list[list[float]]) -> torch.Tensor:
    """(1, N, 5 + nc) prediction from rows ``[x1, y1, x2, y2, obj, p_1..p_nc]`` (xyxy for readability)."""
    t = torch.tensor(rows, dtype=torch.float32)
    xywh = torch.stack([(t[:, 0] + t[:, 2]) / 2, (t[:, 1] + t[:, 3]) / 2, t[:, 2] - t[:, 0], t[:, 3] - t[:, 1]], 1)
    return torch.cat([xywh, t[:, 4:]], 1)[None]


# two boxes with IoU 80/120 = 0.667 (10x10 at x 0..10 and 2..12, both y 0..10 -> inter 80, union 120)
A = [0, 0, 10, 10]
B = [2, 0, 12, 10]
FAR = [100, 100, 120, 130]


def test_overlapping_same_class_is_suppressed_and_output_layout():
    out = non_max_suppression(pred_from([A + [0.9, 0.9, 0.1], B + [0.8, 1.0, 0.0], FAR + [0.5, 0.2, 0.9]]), 0.25, 0.45)
    assert len(out) == 1
    det = out[0]
    assert det.shape == (2, 6)
    # A: conf 0.9*0.9 = 0.81 class 0; B (0.8 class 0) suppressed; FAR: 0.5*0.9 = 0.45 class 1
    assert det[:, :4].tolist() == [A, FAR]
    assert det[:, 4].tolist() == pytest.approx([0.81, 0.45])
    assert det[:, 5].tolist() == [0, 1]


def test_iou_threshold_is_strict_greater():
    rows = [A + [0.9, 1.0], B + [0.8, 1.0]]  # IoU 2/3, single class
    assert len(non_max_suppression(pred_from(rows), 0.25, 0.6)[0]) == 1
    assert len(non_max_suppression(pred_from(rows), 0.25, 0.7)[0]) == 2


def test_different_classes_kept_unless_agnostic():
    rows = [A + [0.9, 0.9, 0.1], B + [0.8, 0.1, 0.9]]
    assert non_max_suppression(pred_from(rows))[0][:, 5].tolist() == [0, 1]
    agn = non_max_suppression(pred_from(rows), agnostic=True)[0]
    assert agn[:, 5].tolist() == [0] and agn[0, :4].tolist() == A


def test_multi_label_gives_one_detection_per_class_above_threshold():
    rows = [A + [1.0, 0.9, 0.6, 0.1]]
    single = non_max_suppression(pred_from(rows), 0.25, multi_label=False)[0]
    assert single[:, 5].tolist() == [0]
    multi = non_max_suppression(pred_from(rows), 0.25, multi_label=True)[0]
    assert multi[:, 5].tolist() == [0, 1]  # sorted by confidence
    assert multi[:, 4].tolist() == pytest.approx([0.9, 0.6])
    assert (multi[:, :4] == torch.tensor(A, dtype=torch.float32)).all()
    # one class: multi_label has nothing to add
    assert len(non_max_suppression(pred_from([A + [1.0, 0.9]]), multi_label=True)[0]) == 1


def test_confidence_threshold_on_objectness_and_on_product():
    rows = [
        A + [0.2, 1.0],  # obj below conf: dropped before anything else
        FAR + [0.5, 0.4],  # obj passes, obj * p = 0.2 below conf: dropped
        [300, 300, 310, 310, 0.5, 0.6],  # 0.3: kept
        [500, 500, 510, 510, 0.5, 0.5],  # 0.25 == conf: dropped (strict >)
    ]
    det = non_max_suppression(pred_from(rows), conf_thres=0.25)[0]
    assert det[:, :4].tolist() == [[300, 300, 310, 310]]
    assert det[0, 4].item() == pytest.approx(0.3)


def test_classes_filter_and_max_det_and_sorting():
    probs = ([0.9, 0.05], [0.05, 0.9])  # even boxes class 0, odd boxes class 1
    rows = [[i * 20, 0, i * 20 + 10, 10, 0.3 + 0.05 * i] + probs[i % 2] for i in range(10)]
    det = non_max_suppression(pred_from(rows), 0.1, classes=[1])[0]
    assert set(det[:, 5].tolist()) == {1.0} and len(det) == 5
    det = non_max_suppression(pred_from(rows), 0.1, max_det=3)[0]
    assert len(det) == 3
    scores = det[:, 4].tolist()
    assert scores == sorted(scores, reverse=True)
    assert det[:, 4].tolist() == pytest.approx([0.75 * 0.9, 0.7 * 0.9, 0.65 * 0.9])  # the three best
    assert len(non_max_suppression(pred_from(rows), 0.1, max_nms=2)[0]) == 2  # only the 2 best reach NMS


def test_empty_inputs_and_batches():
    empty = torch.zeros(2, 0, 7)
    out = non_max_suppression(empty)
    assert len(out) == 2 and all(o.shape == (0, 6) for o in out)
    nothing = non_max_suppression(pred_from([A + [0.1, 1.0, 0.0]]))[0]  # below threshold
    assert nothing.shape == (0, 6)
    # images of a batch are independent
    p = torch.cat([pred_from([A + [0.9, 1.0, 0.0]]), pred_from([FAR + [0.1, 1.0, 0.0]])])
    out = non_max_suppression(p)
    assert [len(o) for o in out] == [1, 0]


def test_input_is_not_modified_and_tuple_output_accepted():
    p = pred_from([A + [0.9, 0.5, 0.1]])
    before = p.clone()
    out = non_max_suppression((p, ["raw maps"]))  # eval-mode Detect output
    assert torch.equal(p, before)
    assert out[0][0, 4].item() == pytest.approx(0.45)


def test_bad_arguments():
    with pytest.raises(ValueError, match="conf_thres"):
        non_max_suppression(torch.zeros(1, 1, 6), conf_thres=1.5)
    with pytest.raises(ValueError, match="iou_thres"):
        non_max_suppression(torch.zeros(1, 1, 6), iou_thres=-0.1)
    with pytest.raises(ValueError, match="5 \\+ nc"):
        non_max_suppression(torch.zeros(1, 4, 5))


@pytest.mark.parametrize("nc,ties", [(8, False), (8, True), (80, True), (3, False)])
def test_class_by_class_nms_keeps_what_the_one_call_form_keeps_in_the_same_order(nc, ties, monkeypatch):
    """Above 4000 candidates a CPU runs NMS class by class; it must give the one-call (class-offset)
    form's detections exactly: same boxes, same order (ties by index), at validation settings."""
    from nostride.tasks.detect import nms as nms_module

    gen = torch.Generator().manual_seed(nc)
    pred = torch.rand(2, 2000, 5 + nc, generator=gen)
    pred[..., :2] *= 128
    pred[..., 2:4] = pred[..., 2:4] * 20 + 2
    if ties:
        pred[..., 4:] = (pred[..., 4:] * 20).round() / 20
    for kwargs in (dict(conf_thres=0.001, iou_thres=0.6, multi_label=True), dict(conf_thres=0.001, iou_thres=0.6)):
        by_class = nms_module.non_max_suppression(pred, **kwargs)
        monkeypatch.setattr(nms_module, "_ONE_CALL_MAX", 10**9)
        one_call = nms_module.non_max_suppression(pred, **kwargs)
        monkeypatch.undo()
        assert all(torch.equal(a, b) for a, b in zip(by_class, one_call))
    assert sum(len(d) for d in by_class) > 0
