"""Detection metrics from their definitions: hand-built cases, AP by size, pycocotools agreement."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nostride.tasks.detect.coco_eval import coco_summary
from nostride.tasks.detect.evaluator import DetectionEvaluator
from nostride.tasks.detect.metrics import ConfusionMatrix, ap_per_class, compute_ap, match_predictions, size_matching

BOX = [10.0, 10.0, 50.0, 50.0]  # 40 x 40 = 1600 px (medium)


def _det(*rows):
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 6)


def _lab(*rows):
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 5)


def _evaluate(images, nc=2):
    ev = DetectionEvaluator(nc)
    ev.process([p for p, _ in images], [l for _, l in images])
    return ev.evaluate()


PERFECT = 0.995  # YOLOv5's 101-point trapezoid: at recall 1 the curve meets the closing (1, 0) point,
# so the last of the 100 steps is a triangle (1 + 0) / 2 * 0.01: a perfect detector scores 0.995


def test_compute_ap_101_point_trapezoid():
    assert compute_ap(np.array([1.0]), np.array([1.0]))[0] == pytest.approx(PERFECT)
    # recall 0.5 at precision 1: points (0, 1), (.5, 1), (1, 0) joined linearly -> 0.5 + 0.25
    assert compute_ap(np.array([0.5]), np.array([1.0]))[0] == pytest.approx(0.75)


def test_perfect_detection():
    m = _evaluate([(_det([*BOX, 0.9, 0]), _lab([0, *BOX]))])
    assert m["mAP50"] == pytest.approx(PERFECT) and m["mAP50-95"] == pytest.approx(PERFECT)
    assert m["precision"] == pytest.approx(1.0) and m["recall"] == pytest.approx(1.0)
    assert m["AP_medium"] == pytest.approx(PERFECT) and m["AP_small"] is None and m["AP_large"] is None


def test_duplicate_is_a_false_positive():
    # second, lower-confidence copy of the same box: TP then FP -> the envelope is still 1 up to recall 1
    m = _evaluate([(_det([*BOX, 0.9, 0], [*BOX, 0.8, 0]), _lab([0, *BOX]))])
    assert m["mAP50"] == pytest.approx(PERFECT)
    # the false positive ranked first: precision 1/2 at recall 1, envelope 0.5 -> 0.5 - 0.5 * 0.005
    ap = ap_per_class(np.array([[False], [True]]), np.array([0.9, 0.8]), np.array([0, 0]), np.array([0]))["ap"]
    assert ap[0, 0] == pytest.approx(0.4975, abs=1e-12)


def test_wrong_class_and_never_predicted_class():
    # the class-1 object is predicted as class 0 (a false positive of class 0, ranked after the TP);
    # class 1 is never predicted -> AP 0; class 0 perfect -> mAP = PERFECT / 2
    m = _evaluate([(_det([*BOX, 0.9, 0], [60, 60, 90, 90, 0.8, 0]), _lab([0, *BOX], [1, 60, 60, 90, 90]))])
    assert m["mAP50"] == pytest.approx(PERFECT / 2)
    per = {r["class"]: r for r in m["per_class"]}
    assert per[1]["mAP50"] == 0 and per[1]["instances"] == 1 and per[0]["mAP50"] == pytest.approx(PERFECT)


def test_low_iou_match_counts_only_at_low_thresholds():
    # IoU = 40*30 / (40*40) = 0.75: TP at 0.50..0.75 (6 of 10 thresholds)
    pred = _det([10, 10, 50, 40, 0.9, 0])
    lab = _lab([0, *BOX])
    correct = match_predictions(pred, lab)
    assert correct.tolist() == [[True] * 6 + [False] * 4]
    m = _evaluate([(pred, lab)])
    assert m["mAP50"] == pytest.approx(PERFECT) and m["mAP50-95"] == pytest.approx(0.6 * PERFECT)
    # below 0.5 IoU: no match at all
    assert not match_predictions(_det([10, 10, 50, 25, 0.9, 0]), lab).any()


def test_image_without_labels_adds_false_positives():
    m = _evaluate([(_det([*BOX, 0.9, 0]), _lab([0, *BOX])), (_det([*BOX, 0.95, 0]), _lab())])
    # the background image's detection ranks first: P = 0, then 1/2 at R = 1 -> 0.4975 (as above)
    assert m["mAP50"] == pytest.approx(0.4975, abs=1e-12)
    assert m["images"] == 2 and m["instances"] == 1


def test_no_predictions_at_all():
    m = _evaluate([(_det(), _lab([0, *BOX]))])
    assert m["mAP50"] == 0 and m["precision"] == 0 and m["recall"] == 0


def test_matching_keeps_reference_tie_rules():
    # two labels, one prediction overlapping both: it matches the higher-IoU label only
    lab = _lab([0, 0, 0, 40, 40], [0, 0, 0, 40, 36])
    pred = _det([0, 0, 40, 39, 0.9, 0])
    c = match_predictions(pred, lab)
    assert c[0, 0]
    # two predictions on one label: only one is a TP
    pred = _det([0, 0, 40, 40, 0.9, 0], [0, 0, 40, 39, 0.8, 0])
    assert match_predictions(pred, _lab([0, 0, 0, 40, 40]))[:, 0].tolist() == [True, False]


def test_ap_by_size_ignores_other_sizes():
    small, large = [0, 0, 20, 20], [100, 100, 300, 300]  # 400 px, 40000 px
    # perfect on the large object, a false positive of small size elsewhere, missed small object
    preds = _det([*large, 0.9, 0], [400, 400, 410, 410, 0.95, 0])
    labels = _lab([0, *large], [0, *small])
    m = _evaluate([(preds, labels)], nc=1)
    assert m["AP_large"] == pytest.approx(PERFECT)  # the small false positive is ignored for large objects
    assert m["AP_small"] == 0.0 and m["instances_small"] == 1 and m["instances_large"] == 1
    # a prediction matching an out-of-range label is ignored, not a false positive
    c, ig, keep = size_matching(_det([*small, 0.9, 0]), _lab([0, *small]), (96.0**2, 1e10))
    assert not c.any() and ig.all() and not keep.any()


def test_confusion_matrix_background_row_and_column():
    cm = ConfusionMatrix(2)
    cm.process(_det([*BOX, 0.9, 1], [100, 100, 140, 140, 0.9, 0]), _lab([0, *BOX], [1, 200, 200, 240, 240]))
    cm.process(_det([*BOX, 0.9, 0]), _lab())  # FP on a background image
    # [predicted, true]: class-1 prediction on a class-0 object, class-0 FP x2, class-1 object missed
    assert cm.matrix.tolist() == [[0, 0, 2], [1, 0, 0], [0, 1, 0]]


def test_evaluator_distributed_order_matches_single_process():
    rng = np.random.default_rng(0)
    images = []
    for _ in range(6):
        lab = _lab(*[[int(rng.integers(2)), *(lambda x, y: [x, y, x + 30, y + 30])(*rng.uniform(0, 100, 2))] for _ in range(3)])
        det = lab[:, [1, 2, 3, 4, 0]].clone()
        det[:, :4] += torch.from_numpy(rng.normal(0, 3, (3, 4))).float()
        conf = torch.full((3, 1), 0.5)  # equal scores: the order decides ties
        images.append((torch.cat([det[:, :4], conf, det[:, 4:]], 1), lab))
    whole = DetectionEvaluator(2)
    whole.process([p for p, _ in images], [l for _, l in images], keys=list(range(6)))
    shard = DetectionEvaluator(2)  # the shards' images arrive out of order; keys restore the order
    order = [1, 3, 5, 0, 2, 4]
    shard.process([images[i][0] for i in order], [images[i][1] for i in order], keys=order)
    a, b = whole.evaluate(), shard.evaluate()
    assert a["mAP50-95"] == b["mAP50-95"] and a["precision"] == b["precision"]


def test_coco_summary_matches_direct_pycocotools(tmp_path):
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    import contextlib
    import io
    import json

    rng = np.random.default_rng(1)
    images, anns, results = [], [], []
    for iid in range(1, 6):
        images.append({"id": iid, "width": 200, "height": 150})
        for _ in range(4):
            w, h = rng.uniform(5, 120, 2)
            x, y = rng.uniform(0, 80, 2)
            cat = int(rng.choice([1, 3]))
            anns.append({"id": len(anns) + 1, "image_id": iid, "category_id": cat, "bbox": [x, y, w, h],
                         "area": w * h, "iscrowd": 0})
            if rng.random() < 0.8:
                j = rng.normal(0, 4, 4)
                results.append({"image_id": iid, "category_id": cat, "bbox": [round(v, 3) for v in (x + j[0], y + j[1], w + j[2], h + j[3])],
                                "score": round(float(rng.uniform(0.1, 1)), 5)})
    gt = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "a"}, {"id": 3, "name": "b"}]}
    ours = coco_summary(gt, results)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    with contextlib.redirect_stdout(io.StringIO()):
        c = COCO(str(tmp_path / "gt.json"))
        e = COCOeval(c, c.loadRes(results), "bbox")
        e.evaluate(), e.accumulate(), e.summarize()
    assert [ours[k] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100")] == pytest.approx(
        list(e.stats[:9]), abs=0)
    assert 0.3 < ours["AP"] < 1.0


def test_single_cls_scores_every_class_as_one():
    ev = DetectionEvaluator(1, single_cls=True)
    ev.process([_det([*BOX, 0.9, 1])], [_lab([3, *BOX])])  # class ids differ: one class all the same
    assert ev.evaluate()["mAP50"] == pytest.approx(PERFECT)
