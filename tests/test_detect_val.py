"""Detection evaluation end to end: ``nostride val`` / ``nostride.val`` on tiny data, COCO, DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import nostride
from nostride.checkpoint import make_checkpoint, save_checkpoint
from nostride.cli import main
from nostride.data.detection import DetectionDataset, build_val_loader, load_data_yaml
from nostride.data.io import write_image

REPO = Path(__file__).resolve().parents[1]
COCO128 = REPO.parent / "shared" / "data" / "coco128"
KEYS = ("mAP50", "mAP50-95", "precision", "recall", "AP_small", "AP_medium", "AP_large")


def tiny_detection_dataset(root: Path, n: int = 6, size: tuple[int, int] = (48, 64), corrupt: int = 0) -> Path:
    """n PNG images with one or two large boxes each (classes 0/1), a data.yaml; returns the yaml."""
    g = torch.Generator().manual_seed(0)
    for split in ("images", "labels"):
        (root / split / "val").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        write_image(torch.randint(0, 256, (3, *size), dtype=torch.uint8, generator=g), root / "images" / "val" / f"{i}.png")
        rows = ["0 0.5 0.5 0.9 0.9"] + (["1 0.3 0.3 0.4 0.5"] if i % 2 else [])
        (root / "labels" / "val" / f"{i}.txt").write_text("\n".join(rows) + "\n")
    for k in range(corrupt):
        (root / "images" / "val" / f"bad{k}.png").write_bytes(b"\x89PNG broken")
    y = root / "data.yaml"
    y.write_text("path: .\ntrain: images/val\nval: images/val\nnames: [thing, other]\n")
    return y


def _checkpoint(tmp_path: Path, nc: int = 2) -> Path:
    torch.manual_seed(0)
    model = nostride.create_model("yolov5n", num_classes=nc)
    return save_checkpoint(make_checkpoint(model, names=[f"c{i}" for i in range(nc)]), tmp_path / "det.pt")


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NOSTRIDE_CACHE", str(tmp_path / "cache"))


@pytest.mark.slow
def test_cli_val_writes_metrics_plots_and_counts_skipped(tmp_path, capsys):
    y = tiny_detection_dataset(tmp_path / "ds", corrupt=1)
    w = _checkpoint(tmp_path)
    rc = main(["val", "--weights", str(w), "--data", str(y), "--img-size", "64", "--batch-size", "4",
               "--workers", "0", "--project", str(tmp_path / "runs"), "--name", "v", "--save-json"])
    assert rc == 0
    out = capsys.readouterr()
    assert "AP by object size" in out.out and "1 skipped" in out.err and "bad0.png" in out.err
    assert "class names differ" in out.err and "0: 'c0' vs 'thing'" in out.err  # checkpoint c0, c1; data thing, other
    run = tmp_path / "runs" / "v"
    m = json.loads((run / "metrics.json").read_text())
    for k in KEYS:
        assert k in m
    assert m["images"] == 6 and m["instances"] == 9 and m["skipped"] == 1
    assert m["instances_large"] == 6 + 3 or m["instances_medium"] + m["instances_large"] + m["instances_small"] == 9
    assert len(m["confusion"]) == 3 and sum(map(sum, m["confusion"])) >= 9  # every label lands somewhere
    for f in ("PR_curve.png", "F1_curve.png", "confusion_matrix.png", "AP_by_size.png", "predictions.json"):
        assert (run / f).is_file(), f
    preds = json.loads((run / "predictions.json").read_text())
    assert preds and set(preds[0]) == {"image_id", "category_id", "bbox", "score"}
    assert all(p["category_id"] in (0, 1) for p in preds)


def test_class_count_mismatch_names_both_numbers(tmp_path):
    y = tiny_detection_dataset(tmp_path / "ds", n=2)
    with pytest.raises(ValueError, match="model has 3 classes but the dataset has 2"):
        nostride.val(nostride.create_model("yolov5n", num_classes=3), y, project=str(tmp_path / "r"), img_size=64)


@pytest.mark.slow
def test_read_only_dataset_and_python_api(tmp_path):
    y = tiny_detection_dataset(tmp_path / "ds", n=3)
    for d in (tmp_path / "ds" / "labels" / "val", tmp_path / "ds" / "labels", tmp_path / "ds"):
        os.chmod(d, 0o555)
    try:
        m = nostride.val(_checkpoint(tmp_path), y, project=str(tmp_path / "r"), img_size=64, batch_size=2,
                         workers=0, progress=False, plots=False)
    finally:
        for d in (tmp_path / "ds", tmp_path / "ds" / "labels", tmp_path / "ds" / "labels" / "val"):
            os.chmod(d, 0o755)
    assert m["images"] == 3 and Path(m["save_dir"], "metrics.json").is_file()
    assert not list((tmp_path / "ds" / "labels").glob("*.npz"))


class Oracle(nn.Module):
    """A stand-in detector: for each batch of a known loader, raw head outputs built from the labels
    (jittered, duplicated, class-swapped, plus false positives), so that scores are far from 0 and 1."""

    def __init__(self, batches: list, nc: int, seed: int = 0) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.stride = torch.tensor([8.0, 16.0, 32.0])
        self.nc, self.batches, self.k, self.seed = nc, batches, 0, seed

    def forward(self, x):
        index, canvas, targets, shapes = self.batches[self.k]
        self.k += 1
        rng = np.random.default_rng(self.seed + index)
        out = torch.zeros(x.shape[0], 64, 5 + self.nc)
        H, W = canvas
        for i in range(x.shape[0]):
            t = targets[targets[:, 0] == i]
            rows = []
            for _, c, xc, yc, w, h in t.tolist():
                if rng.random() < 0.85:
                    j = rng.normal(0, 0.08, 4)
                    rows.append((xc * W + j[0] * w * W, yc * H + j[1] * h * H, w * W * np.exp(j[2]),
                                 h * H * np.exp(j[3]), round(rng.uniform(0.05, 1), 2),
                                 int(c) if rng.random() < 0.9 else int(rng.integers(self.nc))))
            for _ in range(int(rng.integers(0, 4))):
                rows.append((rng.uniform(0, W), rng.uniform(0, H), rng.uniform(4, W / 2), rng.uniform(4, H / 2),
                             round(rng.uniform(0.01, 0.6), 2), int(rng.integers(self.nc))))
            for k, (cx, cy, bw, bh, obj, c) in enumerate(rows[:64]):
                out[i, k, :5] = torch.tensor([cx, cy, bw, bh, obj])
                out[i, k, 5 + c] = 1.0
        return out, None


def _oracle_for(ds, img_size, batch_size, nc):
    loader = build_val_loader(ds, img_size, batch_size, 32, workers=0, rank=0, world_size=1)
    batches = [(b, tuple(im.shape[2:]), t, s) for b, (im, t, _, s) in enumerate(loader)]
    return Oracle(batches, nc)


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.skipif(not COCO128.is_dir(), reason="../shared/data/coco128 not present")
def test_coco128_pycocotools_equals_direct_evaluation_of_saved_json(tmp_path):
    """coco128's train split has its official instances json: the summary nostride prints equals a
    direct pycocotools evaluation of the predictions.json it saved, and mAP is far from 0 and 1."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    cfg = load_data_yaml(COCO128 / "data.yaml")
    ds = DetectionDataset(cfg.train, names=cfg.names, verbose=False)
    oracle = _oracle_for(ds, 320, 64, 80)
    m = nostride.val(oracle, ds, project=str(tmp_path), split="train", img_size=320, batch_size=64, workers=0,
                     progress=False, device="cpu")
    assert m["coco_ground_truth"].endswith("instances_train2017.json")
    assert 0.2 < m["mAP50"] < 0.95 and 0.05 < m["mAP50-95"] < m["mAP50"]
    assert m["AP_small"] is not None and m["AP_medium"] is not None and m["AP_large"] is not None
    saved = Path(m["save_dir"]) / "predictions.json"
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(COCO128 / "annotations" / "instances_train2017.json"))
        ev = COCOeval(gt, gt.loadRes(str(saved)), "bbox")
        ev.params.imgIds = sorted(int(p.stem) for p in ds.im_files)
        ev.evaluate(), ev.accumulate(), ev.summarize()
    names = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100")
    assert [m["coco"][k] for k in names] == list(ev.stats[:9])
    rec = json.loads((Path(m["save_dir"]) / "metrics.json").read_text())
    assert set(rec["coco"]) >= {"AP", "AP50", "AP75", "APs", "APm", "APl"}


DDP_SCRIPT = textwrap.dedent('''
    import json, os, sys
    import torch, torch.distributed as dist
    sys.path.insert(0, sys.argv[3])
    from test_detect_val import _oracle_for
    from nostride.data.detection import DetectionDataset
    from nostride.tasks.detect.evaluate import evaluate_detector
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    ds = DetectionDataset(sys.argv[1] + "/images/val", names=["thing", "other"], verbose=False, cache=False)
    # every rank builds the oracle over the whole loader order, then keeps its own batches (r, r + W, ...)
    full = _oracle_for(ds, 64, 2, 2)
    full.batches = [full.batches[b] for b in range(len(full.batches)) if b % dist.get_world_size() == dist.get_rank()]
    m = evaluate_detector(full, ds, img_size=64, batch_size=2, workers=0, progress=False, verbose=False, device="cpu",
                          plots=False)
    if dist.get_rank() == 0:
        json.dump({k: m[k] for k in ("mAP50", "mAP50-95", "precision", "recall", "images", "instances",
                                     "AP_large", "confusion")}, open(sys.argv[2], "w"))
    dist.destroy_process_group()
''')


@pytest.mark.slow
def test_distributed_evaluation_equals_single_process(tmp_path):
    root = tmp_path / "ds"
    tiny_detection_dataset(root, n=7)
    ds = DetectionDataset(root / "images" / "val", names=["thing", "other"], verbose=False, cache=False)
    from nostride.tasks.detect.evaluate import evaluate_detector

    single = evaluate_detector(_oracle_for(ds, 64, 2, 2), ds, img_size=64, batch_size=2, workers=0, progress=False,
                               verbose=False, device="cpu", plots=False)
    script = tmp_path / "ddp_eval.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "ddp.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
                        str(script), str(root), str(out), str(Path(__file__).parent)],
                       env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    ddp = json.loads(out.read_text())
    assert ddp["images"] == 7 and single["images"] == 7
    for k in ("mAP50", "mAP50-95", "precision", "recall", "instances", "AP_large", "confusion"):
        assert ddp[k] == single[k], k
    assert 0 < single["mAP50"] < 1


@pytest.mark.slow
def test_cli_val_reads_a_yolov5_pt_and_matches_the_imported_model(tmp_path, capsys):
    """A YOLOv5 .pt goes through the safe importer; its metrics equal those of the same model from Python."""
    sys.path.insert(0, str(Path(__file__).parent))
    from yolov5_fixture import build_reference_model, v6_cfg, write_yolov5_checkpoint

    y = tiny_detection_dataset(tmp_path / "ds", n=4)
    torch.manual_seed(0)
    pt = write_yolov5_checkpoint(tmp_path / "best.pt", build_reference_model(v6_cfg(nc=2)))
    rc = main(["val", "--weights", str(pt), "--data", str(y), "--img-size", "64", "--batch-size", "2",
               "--workers", "0", "--project", str(tmp_path / "runs"), "--name", "y5", "--no-plots"])
    assert rc == 0, capsys.readouterr().err
    m = json.loads((tmp_path / "runs" / "y5" / "metrics.json").read_text())
    assert m["weights"] == str(pt) and m["images"] == 4
    direct = nostride.val(nostride.load_yolov5(pt), y, project=str(tmp_path / "runs"), name="py", img_size=64,
                          batch_size=2, workers=0, progress=False, verbose=False, plots=False)
    for k in KEYS:  # metrics.json holds 6 significant digits
        assert direct[k] == m[k] if m[k] is None else direct[k] == pytest.approx(m[k], rel=1e-5), k
    not_a_model = tmp_path / "notes.pt"
    not_a_model.write_text("hello")
    assert main(["val", "--weights", str(not_a_model), "--data", str(y)]) == 2
    assert "notes.pt" in capsys.readouterr().err


def test_exif_orientation_gives_the_rotated_shape(tmp_path):
    PIL = pytest.importorskip("PIL.Image")
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    im = PIL.new("RGB", (40, 20), (200, 10, 10))  # stored 40 wide, 20 high
    exif = PIL.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    im.save(root / "images" / "r.jpg", exif=exif.tobytes())
    (root / "labels" / "r.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    ds = DetectionDataset(root / "images", names=1, verbose=False, cache=False)
    assert ds.shapes.tolist() == [[40, 20]]  # (h, w) as displayed, as YOLOv5 reads it
    img, (h0, w0), _ = ds.load_image(0)
    assert (h0, w0) == (40, 20) and img.shape[1:] == (40, 20)


def test_coco_target_finds_annotations_beside_a_yolov5_txt_list(tmp_path):
    from nostride.models.yolo.names import COCO80_NAMES
    from nostride.tasks.detect.coco_eval import coco_target

    root = tmp_path / "coco"
    for split in ("images/val2017", "labels/val2017", "annotations"):
        (root / split).mkdir(parents=True)
    for stem in ("000000000139", "000000000285"):
        write_image(torch.zeros(3, 20, 30, dtype=torch.uint8), root / "images" / "val2017" / f"{stem}.png")
        (root / "labels" / "val2017" / f"{stem}.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (root / "val2017.txt").write_text("./images/val2017/000000000139.png\n./images/val2017/000000000285.png\n")
    ds = DetectionDataset(root / "val2017.txt", names=COCO80_NAMES, verbose=False, cache=False)
    built = coco_target(ds)  # no annotations json yet: ground truth from the YOLO labels
    assert built.source == "yolo-labels" and built.image_ids == [139, 285] and built.category_ids[:3] == [1, 2, 3]
    assert built.gt["annotations"][0]["bbox"] == [7.5, 5.0, 15.0, 10.0]
    (root / "annotations" / "instances_val2017.json").write_text("{}")
    assert coco_target(ds).source == "annotations"
    named = DetectionDataset(root / "val2017.txt", names=[f"c{i}" for i in range(80)], verbose=False, cache=False)
    assert coco_target(named) is None  # other class names: not COCO
