"""A detection run's files in the format YOLOv5 users read: results.csv (YOLOv5's names, order and
padding), results.png (panels with data), epoch times that include validation."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

import nostride
from nostride.engine.results import ResultsWriter, plot_results, read_results

from detect_fixtures import make_square_dataset

pytestmark = [pytest.mark.usefixtures("one_thread_module"), pytest.mark.filterwarnings("ignore::DeprecationWarning")]

YOLOV5_COLUMNS = ["epoch", "train/box_loss", "train/obj_loss", "train/cls_loss", "metrics/precision", "metrics/recall",
                  "metrics/mAP_0.5", "metrics/mAP_0.5:0.95", "val/box_loss", "val/obj_loss", "val/cls_loss",
                  "x/lr0", "x/lr1", "x/lr2"]
QUICK = dict(img_size=64, batch_size=4, workers=0, device="cpu", warmup_epochs=0.0, nominal_batch_size=4,
             autoanchor=False, plots=False)


@pytest.fixture(scope="module")
def detection_run(tmp_path_factory) -> tuple[Path, str]:
    import contextlib
    import io

    root = tmp_path_factory.mktemp("run")
    data = make_square_dataset(root / "squares", n=4)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        nostride.train("yolov5n", str(data), epochs=2, project=str(root), name="det", **QUICK)
    return root / "det", out.getvalue()


@pytest.mark.slow
def test_detection_results_csv_is_yolov5s(detection_run):
    run, _ = detection_run
    lines = (run / "results.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert [h.strip() for h in header[:len(YOLOV5_COLUMNS)]] == YOLOV5_COLUMNS
    assert all(len(cell) >= 20 for line in lines for cell in line.split(","))  # "%20s" / "%20.5g" fields
    rows = read_results(run / "results.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]
    extra = header[len(YOLOV5_COLUMNS):]
    assert "metrics/AP_small" in [h.strip() for h in extra]  # nostride's columns follow YOLOv5's
    assert float(rows[0]["x/lr1"]) == pytest.approx(0.01)  # scratch hyp lr0, no warm-up
    assert float(rows[0]["train/box_loss"]) > 0 and float(rows[0]["val/box_loss"]) > 0


@pytest.mark.slow
def test_epoch_time_is_the_whole_epoch_with_its_parts(detection_run):
    run, printed = detection_run
    rows = read_results(run / "results.csv")
    for r in rows:
        total, train, val = float(r["time"]), float(r["time/train"]), float(r["time/val"])
        assert val > 0 and train > 0
        assert total >= train + val - 0.02  # rounded to 0.01 s each
    lines = re.findall(r"epoch \d/2 .*\((\d+\.\d) s: train (\d+\.\d) s \+ val (\d+\.\d) s\)", printed)
    assert len(lines) == 2, printed
    for total, train, val in lines:
        assert float(total) >= float(train) + float(val) - 0.1


def test_results_png_shows_only_panels_with_data(tmp_path):
    writer = ResultsWriter(tmp_path, padded=True)
    for epoch in (1, 2):
        writer.write({"epoch": epoch, "train/box_loss": 0.1 / epoch, "train/cls_loss": 0.0, "metrics/AP_large": None,
                      "metrics/mAP_0.5": 0.2 * epoch, "metrics/instances": 6, "x/lr0": 0.01, "x/lr1": 0.01,
                      "time": 1.0})
    writer.close()
    import matplotlib.image

    plot_results(tmp_path / "results.csv", tmp_path / "p.png")
    # box loss, mAP and one learning-rate panel: not the 0 class loss, the empty AP, the count or the time
    width = matplotlib.image.imread(tmp_path / "p.png").shape[1]
    (tmp_path / "one").mkdir()
    one = ResultsWriter(tmp_path / "one", padded=True)
    one.write({"epoch": 1, "train/box_loss": 0.1})
    one.close()
    single = matplotlib.image.imread(tmp_path / "one" / "results.png").shape[1]
    assert width == pytest.approx(3 * single, rel=0.05)


def test_resume_rewrites_an_older_results_csv_in_the_new_columns(tmp_path):
    """A run begun by an earlier version (nostride's own column names) is resumed: the kept rows are
    renamed into YOLOv5's columns, the rows after the checkpoint dropped, old-only columns kept."""
    from nostride.tasks.detect.task import LEGACY_RESULTS_COLUMNS

    with open(tmp_path / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["epoch", "lr", "train/box", "train/obj", "train/cls", "val/mAP50", "val/odd", "time"])
        w.writerow([1, 0.01, 0.5, 0.4, 0.3, 0.1, 7, 3.0])
        w.writerow([2, 0.009, 0.45, 0.35, 0.25, 0.2, 8, 3.1])
    writer = ResultsWriter(tmp_path, resume_epoch=1, padded=True, rename=LEGACY_RESULTS_COLUMNS.get)
    writer.write({"epoch": 2, "train/box_loss": 0.44, "train/obj_loss": 0.3, "train/cls_loss": 0.2,
                  "metrics/mAP_0.5": 0.25, "x/lr1": 0.009, "time": 3.2})
    writer.close()
    rows = read_results(tmp_path / "results.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert rows[0]["train/box_loss"] == "0.5" and rows[0]["metrics/mAP_0.5"] == "0.1" and rows[0]["x/lr1"] == "0.01"
    assert rows[1]["train/box_loss"] == "0.44" and rows[0]["val/odd"] == "7" and rows[1]["val/odd"] == ""


@pytest.mark.slow
def test_coco_data_evaluates_best_pt_once_for_both_metrics(tmp_path, monkeypatch):
    """On COCO-format data (the built-in small objects carry COCO jsons) best.pt is run over the
    validation images once at the end: that pass gives YOLOv5's metrics and pycocotools'."""
    import json

    from nostride.data.builtin import make_builtin
    from nostride.engine.trainer import Trainer
    from nostride.tasks.detect import coco_eval, evaluate

    root = make_builtin("small-objects", tmp_path / "so", quiet=True, img_size=64, train=4, val=3, test=0,
                        max_size=16, seed=0)
    passes: list[str] = []
    plain = Trainer.evaluate

    def counted(self, loader, model=None):
        passes.append("val" if loader is self.val_loader else "other")
        return plain(self, loader, model)

    summaries = []
    plain_summary = coco_eval.coco_summary

    def counted_summary(*args, **kwargs):
        summaries.append(1)
        return plain_summary(*args, **kwargs)

    monkeypatch.setattr(Trainer, "evaluate", counted)
    monkeypatch.setattr(coco_eval, "coco_summary", counted_summary)
    monkeypatch.setattr(evaluate, "evaluate_detector", lambda *a, **k: pytest.fail("a second pass over val"))
    data = root / "coco.yaml"  # validation labels read from the COCO json
    data.write_text((root / "data.yaml").read_text().replace("val: images/val", "val: annotations/instances_val.json"))
    out = nostride.train("yolov5n", str(data), epochs=1, project=str(tmp_path), name="c", quiet=True,
                         **QUICK)
    assert passes == ["val", "val"]  # the epoch's validation and best.pt's final one
    assert len(summaries) == 1
    coco = json.loads((Path(out["run_dir"]) / "coco_eval.json").read_text())
    assert set(coco) >= {"AP", "AP50", "APs"} and out["val"]["coco"]["AP"] == coco["AP"]


def test_compare_reads_the_training_time_of_padded_and_older_files(tmp_path):
    """compare's train time: the training parts of a detection run's padded results.csv (YOLOv5's
    layout), and the plain 'time' of files written before epochs had parts."""
    from nostride.comparison.study import _train_time

    writer = ResultsWriter(tmp_path, padded=True)
    for epoch in (1, 2):
        writer.write({"epoch": epoch, "train/box_loss": 0.1, "time": 3.0, "time/train": 2.0, "time/val": 1.0})
    writer.close()
    assert _train_time(tmp_path) == pytest.approx(4.0)
    old = tmp_path / "old"
    old.mkdir()
    (old / "results.csv").write_text("epoch,lr,time\n1,0.1,2.5\n2,0.1,2.5\n")
    assert _train_time(old) == pytest.approx(5.0)
