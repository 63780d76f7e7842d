"""`nostride val` and `nostride predict` on a classification checkpoint built here, against direct computation."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from nostride.checkpoint import make_checkpoint, save_checkpoint
from nostride.cli import main
from nostride.data.classification import build_classification_data, eval_transform
from nostride.data.io import read_image_rgb
from nostride.models import create_model

CLASSES = ["ant", "bee", "cow"]
MEAN, STD = [0.5, 0.45, 0.4], [0.25, 0.25, 0.3]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _write_png(path: Path, seed: int, size: tuple[int, int] = (32, 32)) -> None:
    from torchvision.io import write_png

    g = torch.Generator().manual_seed(seed)
    # a random colour cast over noise: images differ enough for the model to predict different classes
    tint = torch.randint(0, 160, (3, 1, 1), generator=g)
    img = (tint + torch.randint(0, 96, (3, *size), generator=g)).to(torch.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(img, str(path))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("clsdata")
    data = root / "shapes"
    seed = 0
    for split, n in (("train", 4), ("test", 3)):
        for c in CLASSES:
            for i in range(n):
                seed += 1
                _write_png(data / split / c / f"{i:03d}.png", seed)
    torch.manual_seed(0)
    model = create_model("resnet18_cifar", num_classes=3, width=8).eval()
    with torch.no_grad():  # non-trivial BN statistics so eval-mode outputs are not all alike
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
        # centre and scale the classifier on these images' features, so predictions vary per image
        fc, model.fc = model.fc, torch.nn.Identity()
        feats = model(torch.stack([(read_image_rgb(p).float() / 255 - 0.5) / 0.25
                                   for p in sorted(data.rglob("*.png"))]))
        model.fc = fc
        fc.weight.copy_(torch.randn(3, feats.shape[1]) / (feats.std(0) + 1e-3) / feats.shape[1] ** 0.5)
        fc.bias.copy_(-fc.weight @ feats.mean(0))
    config = {"data": str(data), "img_size": 32, "val_fraction": 0.25, "seed": 0, "max_per_class": None}
    weights = save_checkpoint(make_checkpoint(model, CLASSES, config=config, img_size=32, mean=MEAN, std=STD,
                                              data_format="image-folder"), root / "w.pt")
    return {"root": root, "data": data, "weights": weights, "model": model}


def _direct_logits(model, dataset) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*(dataset[i] for i in range(len(dataset))))
    with torch.no_grad():
        return model(torch.stack(xs)), torch.tensor(ys)


def _run_val(setup, capsys, *extra: str) -> tuple[int, str, str]:
    rc = main(["val", "--weights", str(setup["weights"]), "--data", str(setup["data"]), "--workers", "0",
               "--device", "cpu", "--project", str(setup["root"] / "runs"), "--exist-ok", *extra])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("split", ["test", "val"])
@pytest.mark.slow
def test_val_metrics_match_direct_computation(setup, capsys, split):
    rc, out, _ = _run_val(setup, capsys, "--split", split, "--name", split)
    assert rc == 0, out
    data = build_classification_data(setup["data"], img_size=32, val_fraction=0.25, seed=0, augment=False,
                                     mean=MEAN, std=STD)
    dataset = data.test if split == "test" else data.val
    logits, targets = _direct_logits(setup["model"], dataset)
    pred = logits.argmax(1)
    top1 = 100 * (pred == targets).float().mean().item()
    assert len(dataset) == (9 if split == "test" else 3)  # val: 1 of each class's 4 training images
    m = re.search(r"top-1 ([\d.]+)%  top-5 ([\d.]+)%  loss ([\d.]+)", out)
    assert m, out
    assert float(m.group(1)) == pytest.approx(top1, abs=0.006)
    assert float(m.group(2)) == 100.0  # 3 classes: every target is within the top 5
    assert float(m.group(3)) == pytest.approx(torch.nn.functional.cross_entropy(logits, targets).item(), abs=1e-4)
    for c, name in enumerate(CLASSES):  # per-class rows: "name  images  acc%"
        row = re.search(rf"^{name}\s+(\d+)\s+([\d.]+)%$", out, re.M)
        mask = targets == c
        assert row and int(row.group(1)) == int(mask.sum())
        assert float(row.group(2)) == pytest.approx(100 * (pred[mask] == c).float().mean().item(), abs=0.006)

    run = setup["root"] / "runs" / split
    for png in ("confusion_matrix.png", "per_class_accuracy.png"):
        blob = (run / png).read_bytes()
        assert blob[:8] == PNG_MAGIC
        from torchvision.io import decode_png

        assert decode_png(torch.frombuffer(bytearray(blob), dtype=torch.uint8)).shape[1] > 100
    record = json.loads((run / "metrics.json").read_text())
    expected = torch.zeros(3, 3, dtype=torch.int64)
    for t, p in zip(targets.tolist(), pred.tolist()):
        expected[t, p] += 1
    assert record["confusion"] == expected.tolist()
    assert record["split"] == split and record["count"] == len(dataset) and record["mean"] == MEAN


def test_val_errors(setup, capsys, tmp_path):
    rc, _, err = _run_val({**setup, "weights": tmp_path / "missing.pt"}, capsys)
    assert rc == 2 and "checkpoint not found" in err and "missing.pt" in err

    not_nostride = tmp_path / "plain.pt"
    torch.save({"state_dict": {}}, not_nostride)
    rc, _, err = _run_val({**setup, "weights": not_nostride}, capsys)
    assert rc == 2 and "not a nostride checkpoint" in err

    four = create_model("resnet18_cifar", num_classes=4, width=8)
    wrong = save_checkpoint(make_checkpoint(four, ["a", "b", "c", "d"], config={"img_size": 32}), tmp_path / "four.pt")
    rc, _, err = _run_val({**setup, "weights": wrong}, capsys)
    assert rc == 2 and "class count mismatch" in err and "4 classes" in err and "has 3" in err

    detect = save_checkpoint({"format": "nostride", "version": 1, "task": "detect", "model_name": "yolov5s_spd",
                              "model_kwargs": {}, "model": {}, "names": ["person"]}, tmp_path / "det.pt")
    rc, _, err = _run_val({**setup, "weights": detect}, capsys)  # a detector needs a dataset YAML
    assert rc == 2 and "detection checkpoint" in err and "dataset YAML" in err

    rc, _, err = _run_val({**setup, "data": tmp_path / "no-such-data"}, capsys)
    assert rc == 2 and "no-such-data" in err


@pytest.mark.slow
def test_predict_cli_top1_is_argmax_and_bad_images_are_skipped(setup, capsys, tmp_path):
    src = tmp_path / "imgs"
    _write_png(src / "x" / "one.png", 101, size=(40, 56))  # non-square: resize + centre crop
    _write_png(src / "two.png", 102)
    (src / "x" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    rc = main(["predict", "--weights", str(setup["weights"]), "--source", str(src), "--device", "cpu", "--topk", "2",
               "--project", str(tmp_path / "pred")])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "skipped 1 image (unreadable, or no finite model output):" in err and "broken.jpg" in err
    transform = eval_transform(32, MEAN, STD)
    for rel in ("two.png", "x/one.png"):
        x = transform(read_image_rgb(src / rel))[None]
        with torch.no_grad():
            probs = setup["model"](x).softmax(1)[0]
        best = int(probs.argmax())
        row = re.search(rf"^{re.escape(rel)}\s+(\w+) ([\d.]+)%\s+(\w+) ([\d.]+)%$", out, re.M)
        assert row, out
        assert row.group(1) == CLASSES[best]
        assert float(row.group(2)) == pytest.approx(100 * probs[best].item(), abs=0.051)
    assert out.index("two.png") < out.index("x/one.png")  # sorted by path
    # saved like the detector's results: JSON and CSV, the same predictions as the table
    saved = json.loads((tmp_path / "pred" / "exp" / "predictions.json").read_text())
    assert [Path(i["path"]).name for i in saved["images"]] == ["two.png", "one.png"]
    assert saved["skipped"] and "broken.jpg" in saved["skipped"][0] and saved["img_size"] == 32
    import csv

    rows = list(csv.DictReader(open(tmp_path / "pred" / "exp" / "predictions.csv")))
    assert [r["rank"] for r in rows] == ["1", "2", "1", "2"]
    first = saved["images"][0]["topk"][0]
    assert rows[0]["class_name"] == first["class_name"] and float(rows[0]["probability"]) == first["probability"]
    assert re.search(rf"^two.png\s+{first['class_name']} ", out, re.M)
    assert "results saved to" in out
    assert main(["predict", "--weights", str(setup["weights"]), "--source", str(src), "--device", "cpu",
                 "--project", str(tmp_path / "pred"), "--no-save"]) == 0
    assert not (tmp_path / "pred" / "exp2").exists()


@pytest.mark.slow
def test_predict_classes_api(setup):
    from nostride.tasks.classify.predict import predict_classes

    src = setup["data"] / "test"
    results = predict_classes(setup["weights"], src, topk=5, progress=False)
    files = sorted(p for p in src.rglob("*.png"))
    assert [r["path"] for r in results] == [str(p) for p in files]
    x = torch.stack([eval_transform(32, MEAN, STD)(read_image_rgb(p)) for p in files])
    with torch.no_grad():
        probs = setup["model"](x).softmax(1)
    for r, p in zip(results, probs):
        assert len(r["topk"]) == 3  # clipped to the number of classes
        assert [c for c, _, _ in r["topk"]][0] == int(p.argmax())
        assert [name for _, name, _ in r["topk"]] == [CLASSES[c] for c, _, _ in r["topk"]]
        assert [prob for _, _, prob in r["topk"]] == pytest.approx(sorted(p.tolist(), reverse=True), abs=1e-5)
    # a bare model needs img_size; an explicit single file works
    with pytest.raises(ValueError, match="img_size"):
        predict_classes(setup["model"], files[0])
    one = predict_classes(setup["model"], files[0], img_size=32, mean=MEAN, std=STD, class_names=CLASSES, topk=1)
    assert one[0]["topk"][0][0] == int(probs[0].argmax())
    with pytest.raises(FileNotFoundError):
        predict_classes(setup["weights"], setup["root"] / "nothing-here")


@pytest.mark.slow
def test_val_uses_the_runs_recorded_options_and_says_so(setup, capsys, tmp_path):
    """A run trained with --max-per-class 2 reported its test score on 2 images per class: val does the same
    by default (and says which recorded options it used); --max-per-class 0 evaluates every image."""
    from nostride.checkpoint import load_checkpoint

    ckpt = load_checkpoint(setup["weights"])
    ckpt["config"] = {**ckpt["config"], "max_per_class": 2}
    capped = save_checkpoint(ckpt, tmp_path / "capped.pt")
    rc, out, _ = _run_val({**setup, "weights": capped}, capsys, "--name", "capped")
    assert rc == 0
    assert out.startswith("options recorded in the checkpoint: ") and "max_per_class=2" in out.splitlines()[0]
    assert "--max-per-class 0 = every image" in out.splitlines()[0]
    assert "(6 images)" in out  # 2 of each of the 3 classes, as in training
    rc, out, _ = _run_val({**setup, "weights": capped}, capsys, "--name", "all", "--max-per-class", "0")
    assert rc == 0 and "max_per_class=all (--max-per-class)" in out and "(9 images)" in out
    text = (setup["root"] / "runs" / "all" / "metrics.json").read_text()
    assert not re.search(r"\d\.\d{8,}", text)  # metrics rounded (6 significant digits)
