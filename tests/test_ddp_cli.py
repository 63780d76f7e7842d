"""DDP as users run it: ``torchrun ... -m nostride train`` on two CPU processes (Gloo), to the end.

Each test kills one rank in the middle of the second epoch (SIGKILL, as an out-of-memory kill
would), checks the launcher's report names that rank and the run folder resumes under torchrun,
then checks the final metrics (written once, by rank 0) equal a single-process ``nostride val`` of
``best.pt`` on the validation and test splits.

The kill comes from a small launcher script that wraps ``python -m nostride`` (the same CLI code)
and patches :meth:`Trainer.run_step` to SIGKILL one rank at a given epoch and batch.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import image_folder

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

REPO_ROOT = Path(__file__).resolve().parents[1]

KILLER = textwrap.dedent('''
    """python -m nostride, with one rank SIGKILLed at KILL_AT=rank,epoch index,batch index."""
    import os, runpy, signal, sys
    from nostride.engine.trainer import Trainer

    rank, epoch, batch = (int(x) for x in os.environ["KILL_AT"].split(","))
    step = Trainer.run_step

    def run_step(self, *args, **kwargs):
        if (self.info.rank, self.epoch, self.batch_index) == (rank, epoch, batch):
            os.kill(os.getpid(), signal.SIGKILL)
        return step(self, *args, **kwargs)

    Trainer.run_step = run_step
    sys.argv = ["nostride", *sys.argv[1:]]
    runpy.run_module("nostride", run_name="__main__")
''')


def _torchrun(tmp_path: Path, args: list[str], kill_at: str | None = None, timeout: int = 300):
    """``torchrun --standalone --nproc_per_node 2 -m nostride ARGS`` (with a rank killed when asked)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    if kill_at is None:
        target = ["-m", "nostride"]
    else:
        script = tmp_path / "killer.py"
        script.write_text(KILLER)
        target, env["KILL_AT"] = [str(script)], kill_at
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *target, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp_path)


def _root_cause_rank(stderr: str) -> int:
    """The rank torchrun's failure report names as the root cause."""
    section = stderr.split("Root Cause", 1)[1]
    return int(re.search(r"rank\s*:\s*(\d+)", section).group(1))


def _nostride(*args: str) -> int:
    from nostride.cli import main

    return main(list(args))


def _check_killed(proc, killed: int, run: Path) -> None:
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert _root_cause_rank(proc.stderr) == killed, proc.stderr[-3000:]
    assert "exitcode  : -9" in proc.stderr  # SIGKILL
    survivor = 1 - killed
    # the surviving rank's one line: what stopped, what is saved, how to continue
    assert (f"nostride train: error: rank {survivor}: another process of this run stopped during epoch 2" in out
            or "(SIGTERM)" in proc.stderr), out[-3000:]
    from nostride import load_checkpoint

    assert load_checkpoint(run / "weights" / "last.pt")["epoch"] == 1
    assert not (run / "final_metrics.json").exists()


def _check_finished(proc, run: Path) -> dict:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("done:") == 1  # rank 0 alone reports
    from nostride.engine.results import read_results  # detection's are padded as YOLOv5's

    rows = read_results(run / "results.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert sorted(p.name for p in (run / "weights").iterdir()) == ["best.pt", "last.pt"]
    return json.loads((run / "final_metrics.json").read_text())


# ------------------------------------------------------------------------------------------- detection
# class, width, height (yolov5n's stride-8 anchors), colour
BOXES = [(0, 10, 13, (200, 40, 40)), (2, 16, 30, (40, 200, 40)), (0, 33, 23, (40, 40, 200))]


def _coco_style_data(root: Path) -> Path:
    """COCO data to nostride (COCO's 80 names, numeric file names; pycocotools runs on it), tiny:
    64 x 64 images, 6 train / 5 val / 3 test, three coloured boxes each, of the sizes and at the
    places a fresh yolov5n predicts at 64 px (its anchors, centred on stride-8 cells). A model can
    find them after two CPU epochs, so the metrics compared below are not all zero (on real images
    such a run finds nothing)."""
    from nostride.data.io import write_image
    from nostride.models.yolo.names import COCO80_NAMES

    g = torch.Generator().manual_seed(0)
    k = 1
    for split, count in (("train", 6), ("val", 5), ("test", 3)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for _ in range(count):
            img = torch.full((3, 64, 64), 114, dtype=torch.uint8)
            rows = []
            for c, w, h, colour in BOXES:
                cx, cy = (8 * int(v) + 4 for v in torch.randint(2, 6, (2,), generator=g))
                x1, y1 = cx - w // 2, cy - h // 2
                img[:, max(y1, 0):y1 + h, max(x1, 0):x1 + w] = torch.tensor(colour).view(3, 1, 1)
                rows.append(f"{c} {cx / 64:.6f} {cy / 64:.6f} {w / 64:.6f} {h / 64:.6f}")
            write_image(img, root / "images" / split / f"{k:012d}.png")
            (root / "labels" / split / f"{k:012d}.txt").write_text("\n".join(rows) + "\n")
            k += 1
    yaml = root / "data.yaml"
    yaml.write_text(f"path: {root}\ntrain: images/train\nval: images/val\ntest: images/test\n"
                    f"names: {json.dumps(COCO80_NAMES)}\n")
    return yaml


def _detecting_weights(path: Path) -> Path:
    """A yolov5n whose head predicts the data's boxes from the start: objects only at stride 8, of
    the class the data gives each anchor's size; its other outputs stay near zero, so the boxes are
    the anchors on the cell centres."""
    from nostride import create_model
    from nostride.checkpoint import make_checkpoint, save_checkpoint
    from nostride.models.yolo.names import COCO80_NAMES

    torch.manual_seed(0)
    model = create_model("yolov5n", num_classes=80)
    det = model.detect
    with torch.no_grad():
        for level, conv in enumerate(det.m):
            b = conv.bias.view(det.na, -1)
            b[:, 4] = 2.0 if level == 0 else -8.0
            b[:, 5:] = -8.0
            for anchor, (c, *_) in enumerate(BOXES):
                b[anchor, 5 + c] = 2.0
    return save_checkpoint(make_checkpoint(model, list(COCO80_NAMES)), path)


def test_ddp_detection_cli_killed_resumed_to_the_end(tmp_path):
    data = _coco_style_data(tmp_path / "data")
    weights = _detecting_weights(tmp_path / "start.pt")
    run = tmp_path / "runs" / "ddp"
    train = ["train", "--model", "yolov5n", "--data", str(data), "--weights", str(weights), "--img-size", "64",
             "--batch-size", "4", "--epochs", "2", "--lr", "1e-5", "--warmup-bias-lr", "1e-5", "--device", "cpu",
             "--workers", "0", "--cache", "ram", "--no-plots", "--no-autoanchor",
             "--project", str(tmp_path / "runs"), "--name", "ddp", "--quiet"]
    proc = _torchrun(tmp_path, train, kill_at="1,1,0")  # rank 1 dies in epoch 2
    _check_killed(proc, killed=1, run=run)

    proc = _torchrun(tmp_path, ["train", "--resume", str(run / "weights" / "last.pt")])
    final = _check_finished(proc, run)
    assert json.loads((run / "coco_eval.json").read_text())["AP50"] >= 0  # pycocotools ran (on rank 0)
    assert proc.stdout.count("pycocotools (best.pt)") == 1

    # the final metrics are a single-process `nostride val` of best.pt: same batches (the per-rank
    # batch, 2), the final evaluation's NMS IoU on COCO data (0.65)
    keys = ("precision", "recall", "mAP50", "mAP50-95", "AP_small", "AP_medium", "AP_large", "images",
            "instances", "conf_at_max_f1")
    for split in ("val", "test"):
        assert _nostride("val", "--weights", str(run / "weights" / "best.pt"), "--data", str(data), "--split", split,
                         "--img-size", "64", "--batch-size", "2", "--iou", "0.65", "--device", "cpu", "--workers", "0",
                         "--project", str(tmp_path / "val"), "--name", split, "--no-plots") == 0
        single = json.loads((tmp_path / "val" / split / "metrics.json").read_text())
        for k in keys:  # None: no object of that size (NaN in the run, null in both files)
            # this model's confidences are near-ties by construction (its boxes are its anchors), so
            # the ranks' other batches (2 images each, interleaved) round them into another order
            # than one process does: the counts agree exactly, AP to ties, P and R (read at the
            # max-F1 confidence, a step of one box in 15) to a step
            tol = (dict(rel=1e-6) if k in ("images", "instances") else
                   dict(abs=0.1) if k in ("precision", "recall", "conf_at_max_f1") else dict(abs=0.02))
            assert single[k] == (None if final[split][k] is None else pytest.approx(final[split][k], **tol)), k
    assert final["val"]["images"] == 5 and final["test"]["images"] == 3
    assert final["val"]["mAP50"] > 0 and final["val"]["recall"] > 0  # a comparison of more than zeros


# -------------------------------------------------------------------------------------- classification

def test_ddp_classification_cli_killed_resumed_to_the_end(tmp_path):
    data = image_folder(tmp_path / "data")
    (data / "test" / "class2" / "broken.png").write_bytes(b"not an image")  # read by one rank only
    run = tmp_path / "runs" / "ddp"
    train = ["train", "--model", "resnet18_cifar", "--width", "4", "--data", str(data), "--val-fraction", "0.25",
             "--batch-size", "8", "--epochs", "2", "--device", "cpu", "--workers", "0",
             "--project", str(tmp_path / "runs"), "--name", "ddp", "--quiet"]
    proc = _torchrun(tmp_path, train, kill_at="0,1,0")  # rank 0 dies at the start of epoch 2
    _check_killed(proc, killed=0, run=run)

    # resumed with the decoded images cached in each rank (a cache may be taken up on resume): the
    # same counts, the broken file found by both ranks while filling and still counted once
    proc = _torchrun(tmp_path, ["train", "--resume", str(run / "weights" / "last.pt"), "--cache", "ram"])
    final = _check_finished(proc, run)
    from nostride import load_checkpoint

    assert load_checkpoint(run / "weights" / "last.pt")["config"]["cache"] == "ram"
    for split in ("val", "test"):
        assert _nostride("val", "--weights", str(run / "weights" / "best.pt"), "--split", split, "--batch-size", "4",
                         "--device", "cpu", "--workers", "0", "--project", str(tmp_path / "val"), "--name", split) == 0
        single = json.loads((tmp_path / "val" / split / "metrics.json").read_text())
        assert single["count"] == final[split]["count"]
        assert single["top1"] == final[split]["top1"] and single["top5"] == final[split]["top5"]
        assert single["loss"] == pytest.approx(final[split]["loss"], rel=1e-5)
    assert (final["val"]["count"], final["test"]["count"]) == (5, 15)
    assert final["skipped"] == 1  # found by whichever rank read it, counted once over both
