"""Bad input beyond the command line's numbers: COCO json and dataset files, labels, non-finite model
outputs, special files among images, odd file names, and the Python API's argument checks.

Each test feeds what a user (or a damaged file) could give and asserts the one-line error naming the
input and what was expected, or the exact count of what was left out; docs/reliability.md lists them.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import nostride
from nostride.checkpoint import make_checkpoint, save_checkpoint
from nostride.cli import main
from nostride.data.io import ImageDecodeError, read_image_rgb, walk_image_files, write_image
from nostride.models import create_model
from nostride.utils.bounds import check_float, check_int

pytestmark = pytest.mark.usefixtures("one_thread_module")


def _png(path: Path, size=(24, 32), value: int = 114) -> Path:
    write_image(torch.full((3, *size), value, dtype=torch.uint8), path)
    return path


# ---------------------------------------------------------------------------------- bounds
def test_bounds_state_the_bound():
    with pytest.raises(ValueError, match=r"^epochs must be in \[1, 100000\], got 9223372036854775808$"):
        check_int("epochs", 2**63, 1, 100_000)
    with pytest.raises(ValueError, match=r"^momentum must be in \[0, 1\), got 2$"):
        check_float("momentum", 2.0, 0, 1, high_open=True)
    with pytest.raises(ValueError, match="finite"):
        check_float("lr", float("nan"), 0, None, low_open=True)
    with pytest.raises(ValueError, match="whole number"):
        check_int("width", 2.5, 1)
    assert check_int("width", "8", 1, 16) == 8 and check_float("lr", "0.5", 0, 1) == 0.5


def test_training_options_are_checked_for_python_callers_too():
    from nostride.engine.config import build_config

    for options, text in [({"momentum": 2}, "momentum must be in [0, 1)"), ({"ema_decay": -1}, "ema_decay"),
                          ({"milestones": [-5]}, "milestones"), ({"device": "cpu:1"}, "one cpu device"),
                          ({"img_size": 100000}, "img_size must be in [8, 8192]"),
                          ({"anchor_t": 0}, "anchor_t"), ({"mosaic": 0.5}, "option mosaic applies to detection models; resnet18_cifar is a classification"),
                          ({"hyp": "scratch-low"}, "option hyp applies to detection models")]:
        model = "yolov5n" if "anchor_t" in options else "resnet18_cifar"
        with pytest.raises(ValueError, match=text.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
            build_config(model=model, data="x", **options)


# ---------------------------------------------------------------------------------- COCO json
def _coco(tmp_path: Path, images, annotations, categories=None) -> Path:
    for im in images:
        if isinstance(im, dict) and "file_name" in im and not (tmp_path / "images" / "val" / im["file_name"]).exists():
            _png(tmp_path / "images" / "val" / im["file_name"], (40, 60))
    path = tmp_path / "annotations" / "instances_val.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "a"}] if categories is None else categories}
    path.write_text(json.dumps(data))
    return path


def test_coco_annotations_are_verified_like_yolo_rows(tmp_path):
    from nostride.data.detection import DetectionDataset

    images = [{"id": 1, "file_name": "im0.png", "width": 60, "height": 40},
              {"id": 2, "file_name": "im1.png", "width": 0, "height": 40},
              {"id": 3, "file_name": "im2.png", "width": 60, "height": -40},
              {"id": 4, "file_name": "im3.png", "width": 60, "height": 40}]
    anns = [{"id": 10, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 10]},
            {"id": 11, "image_id": 1, "category_id": 1, "bbox": [float("nan"), 10, 20, 10]},
            {"id": 12, "image_id": 1, "category_id": 1, "bbox": [1e308, 10, 1e308, 10]},
            {"id": 13, "image_id": 4, "category_id": 1, "bbox": [100, 10, 20, 10]},
            {"id": 14, "image_id": 2, "category_id": 1, "bbox": [1, 1, 2, 2]},
            {"id": 15, "image_id": 99, "category_id": 1, "bbox": [1, 1, 2, 2]},
            {"id": 16, "image_id": 4, "category_id": 7, "bbox": [1, 1, 2, 2]},
            {"id": 17, "image_id": 4, "category_id": 1, "bbox": "abc"}]
    js = _coco(tmp_path, images, anns)
    ds = DetectionDataset(js, cache=False, verbose=False)
    # the one good box, normalised; nothing NaN, nothing outside [0, 1]
    assert len(ds.labels) == 2 and not len(ds.labels[1])
    np.testing.assert_allclose(ds.labels[0], [[0.0, 20 / 60, 15 / 40, 20 / 60, 10 / 40]], rtol=1e-6)
    assert ds.stats.skipped == 2 and ds.stats.bad_rows == 6 and ds.stats.images == 2
    text = "\n".join(ds.warnings)
    for expected in ("image 2 (im1.png) declares width 0", "image 3 (im2.png) declares width 60, height -40",
                     "annotation 11 (im0.png): bbox [nan", "annotation 12 (im0.png)", "annotation 13 (im3.png): bbox",
                     "outside the 60x40 image", "annotation 15: unknown image_id 99",
                     "annotation 16 (im3.png): unknown category_id 7", "annotation 17 (im3.png): bbox must be"):
        assert expected in text, (expected, text)
    assert str(js) in text


@pytest.mark.parametrize("images, categories, message", [
    ({"a": 1}, None, "'images' must be a list, got dict"),
    ([], [], "'categories' is empty"),
    ([{"id": 1, "file_name": "a.png", "width": 60, "height": 40},
      {"id": 1, "file_name": "b.png", "width": 60, "height": 40}], None, "image id 1 is used twice (a.png and b.png)"),
    ([{"id": "x", "file_name": "a.png", "width": 60, "height": 40}], None, "has id 'x'; expected a whole number"),
    ([], [{"id": 1, "name": "a"}, {"id": 1, "name": "b"}], "category id 1 is used twice"),
])
def test_unusable_coco_files_are_refused_by_name(tmp_path, images, categories, message):
    from nostride.data.detection import read_coco_json

    js = _coco(tmp_path, images, [], categories)
    with pytest.raises(ValueError) as e:
        read_coco_json(js)
    assert str(e.value).startswith(f"{js}: ") and message in str(e.value)


# ---------------------------------------------------------------------------------- dataset files
@pytest.mark.parametrize("extra, message", [("nc: [1, 2]", "'nc' must be the number of classes"),
                                            ("nc: abc", "'nc' must be the number of classes"),
                                            ("nc: 0", "'nc' must be in [1, 100000]")])
def test_dataset_yaml_nc_is_checked(tmp_path, extra, message):
    from nostride.data.detection import load_data_yaml

    (tmp_path / "images").mkdir()
    y = tmp_path / "d.yaml"
    y.write_text(f"path: {tmp_path}\nval: images\n{extra}\n")
    with pytest.raises(ValueError) as e:
        load_data_yaml(y)
    assert str(e.value).startswith(str(y)) and message in str(e.value)


def test_dataset_yaml_without_train_names_the_file(tmp_path):
    from nostride.data.detection import load_data_yaml

    (tmp_path / "images").mkdir()
    y = tmp_path / "d.yaml"
    y.write_text(f"path: {tmp_path}\nval: images\nnames: [a]\n")
    with pytest.raises(ValueError, match=f"^{y}: no 'train' split defined"):
        load_data_yaml(y).split("train")  # what training asks for


def test_label_values_too_large_for_a_class_id_are_dropped(tmp_path):
    from nostride.data.detection.labels import check_classes, parse_label_file

    f = tmp_path / "a.txt"
    f.write_text("1e308 0.5 0.5 0.1 0.1\n0 1e308 0.5 0.1 0.1\n0 0.5 0.5 0.1 0.1\n")
    parsed = parse_label_file(f)
    assert parsed.labels.tolist() == [[0.0, 0.5, 0.5, pytest.approx(0.1), pytest.approx(0.1)]]
    assert parsed.problems[0].startswith("line 1: class id must be a whole number") and len(parsed.problems) == 2
    check_classes(parsed.labels, 3, f)  # no OverflowError on what is kept


def test_cifar_string_labels_name_the_file(tmp_path):
    from nostride.data.classification.cifar import _read_batch

    path = tmp_path / "data_batch_1"
    batch = {b"data": np.zeros((2, 3072), np.uint8), b"labels": ["cat", "dog"]}
    path.write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(ValueError, match=f"^{path}: b'labels' must be a list of whole-number class ids"):
        _read_batch(path, 10)


def test_non_utf8_file_names_are_read(tmp_path):
    from nostride.data.detection import DetectionDataset

    folder = tmp_path / "images" / "train"
    _png(folder / "good.png")
    raw = os.fsencode(folder) + b"/\xff\xfe.png"
    with open(raw, "wb") as f:
        f.write((folder / "good.png").read_bytes())
    (tmp_path / "labels" / "train").mkdir(parents=True)
    with open(os.fsencode(tmp_path / "labels" / "train") + b"/\xff\xfe.txt", "w") as f:
        f.write("0 0.5 0.5 0.2 0.2\n")
    for _ in range(2):  # built, then read from its cache
        ds = DetectionDataset(folder, verbose=False)
        assert len(ds) == 2 and sorted(len(lab) for lab in ds.labels) == [0, 1]
    assert ds.stats.from_cache


# ---------------------------------------------------------------------------------- special files
def test_fifo_and_device_links_named_png_are_listed_and_reported(tmp_path):
    folder = tmp_path / "imgs"
    _png(folder / "a.png")
    os.mkfifo(folder / "fifo.png")
    os.symlink("/dev/zero", folder / "zero.png")
    os.symlink(folder / "gone.png", folder / "broken.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        files = walk_image_files(folder)
    assert sorted(f.name for f in files) == ["a.png", "fifo.png", "zero.png"]
    text = " ".join(str(w.message) for w in caught)
    assert "1 broken link" in text and "broken.png" in text and "zero.png" not in text
    for name in ("fifo.png", "zero.png"):  # refused by name without opening (a FIFO would block)
        with pytest.raises(ImageDecodeError, match=f"{name}: cannot decode image \\(not a regular file"):
            read_image_rgb(folder / name)


@pytest.mark.slow
def test_final_metrics_count_every_skipped_file(tmp_path):
    data = tmp_path / "data"
    g = torch.Generator().manual_seed(0)
    for split in ("train", "val", "test"):
        for c in ("a", "b"):
            for i in range(2):
                write_image(torch.randint(0, 255, (3, 16, 16), generator=g, dtype=torch.uint8),
                            data / split / c / f"{i}.png")
        (data / split / "a" / "broken.png").write_bytes(b"not an image")
    os.mkfifo(data / "val" / "b" / "fifo.png")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = nostride.train("resnet18_cifar", str(data), width=8, epochs=1, batch_size=4, workers=0,
                                device="cpu", project=str(tmp_path / "runs"), quiet=True, img_size=16)
    saved = json.loads((Path(result["run_dir"]) / "final_metrics.json").read_text())
    assert result["skipped"] == saved["skipped"] == 4  # train, val (2: a damaged file and a FIFO), test


# ---------------------------------------------------------------------------------- non-finite outputs
@pytest.fixture(scope="module")
def nan_classifier(tmp_path_factory):
    root = tmp_path_factory.mktemp("nan")
    data = root / "data"
    for split in ("train", "test"):
        for c in ("a", "b"):
            for i in range(2):
                _png(data / split / c / f"{i}.png", (16, 16), 40 * i + 10)
    model = create_model("resnet18_cifar", num_classes=2, width=8)
    with torch.no_grad():
        model.fc.weight.fill_(float("nan"))
    config = {"data": str(data), "img_size": 16, "val_fraction": 0.25, "seed": 0, "max_per_class": None}
    weights = save_checkpoint(make_checkpoint(model, ["a", "b"], config=config, img_size=16,
                                              data_format="image-folder"), root / "nan.pt")
    return root, data, weights


def test_classifier_with_nan_outputs_has_no_metrics(nan_classifier, capsys):
    root, data, weights = nan_classifier
    rc = main(["val", "--weights", str(weights), "--workers", "0", "--device", "cpu", "--project", str(root / "v")])
    out, err = capsys.readouterr()
    assert rc == 0, err
    m = json.loads((root / "v" / "exp" / "metrics.json").read_text())
    assert m["top1"] is None and m["top5"] is None and m["loss"] is None and m["nonfinite"] == 4
    assert "not finite for 4 of 4 images" in m["undefined"]["why"] and "top-1 n/a" in out
    rc = main(["predict", "--weights", str(weights), "--source", str(data / "test"), "--device", "cpu",
               "--project", str(root / "p")])
    out, err = capsys.readouterr()
    assert rc == 1 and "outputs for this image are not finite" in err and "nan" not in out.lower()


def test_detector_with_nan_outputs_writes_null_metrics(tmp_path, capsys):
    from detect_fixtures import make_square_dataset

    yaml_file = make_square_dataset(tmp_path / "d", n=2)
    model = create_model("yolov5n", num_classes=3)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    weights = save_checkpoint(make_checkpoint(model, names=["red", "green", "blue"]), tmp_path / "nan.pt")
    rc = main(["val", "--weights", str(weights), "--data", str(yaml_file), "--img-size", "64", "--workers", "0",
               "--device", "cpu", "--project", str(tmp_path / "v"), "--no-plots"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    m = json.loads((tmp_path / "v" / "exp" / "metrics.json").read_text())
    assert m["nonfinite"] == 2 and m["images"] == 2
    assert all(m[k] is None for k in ("precision", "recall", "mAP50", "mAP50-95", "AP_small"))
    assert all(row["mAP50"] is None for row in m["per_class"])
    assert "not finite for 2 of 2 images" in m["undefined"]["why"] and "every metric is undefined" in out
    rc = main(["predict", "--weights", str(weights), "--source", str(tmp_path / "d" / "images" / "val"),
               "--img-size", "64", "--device", "cpu", "--project", str(tmp_path / "p")])
    out, err = capsys.readouterr()
    assert rc == 1 and out.count("outputs for this image are not finite") == 2


def test_detection_evaluator_with_one_nonfinite_image_defines_nothing():
    from nostride.tasks.detect.evaluator import DetectionEvaluator

    ev = DetectionEvaluator(2)
    box = torch.tensor([[0.0, 0.0, 10.0, 10.0, 0.9, 0.0]])
    label = torch.tensor([[0.0, 0.0, 0.0, 10.0, 10.0]])
    ev.process([box], [label], keys=[0])
    assert ev.evaluate()["mAP50"] == pytest.approx(0.995) and ev.evaluate()["nonfinite"] == 0
    ev.process([box], [label], keys=[1], nonfinite=[True])
    m = ev.evaluate()
    assert m["nonfinite"] == 1 and math.isnan(m["mAP50"]) and math.isnan(m["per_class"][0]["precision"])
    assert m["images"] == 2 and m["instances"] == 2  # counts stay


def test_spd_conv_and_conversions_check_their_arguments():
    from nostride import SPDConv

    for args, error in [((0, 8), ValueError), ((3, 0), ValueError), ((-3, 8), ValueError), ((3.5, 8), TypeError),
                        ((True, 8), TypeError), ((3, 8, 2), ValueError)]:
        with pytest.raises(error, match="SPDConv"):
            SPDConv(*args)
    with pytest.raises(ValueError, match=r"expects input \(N, 3, H, W\), got shape \(1, 4, 8, 8\)"):
        SPDConv(3, 8)(torch.zeros(1, 4, 8, 8))
    with pytest.raises(ValueError, match="expects input"):
        SPDConv(3, 8)(torch.zeros(3, 8, 8))
    conv = torch.nn.Conv2d(3, 4, 3, stride=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted, traced = torch.jit.script(conv), torch.jit.trace(conv, torch.zeros(1, 3, 8, 8))
    for fn in (nostride.fuse, nostride.spdify):
        with pytest.raises(TypeError, match="takes a torch.nn.Module, got str"):
            fn("resnet18")
        for ts in (scripted, traced):
            with pytest.raises(TypeError, match="cannot rewrite a TorchScript model"):
                fn(ts)


# ---------------------------------------------------------------------------------- files and exports
def test_sparse_tensors_in_a_weights_file_are_refused_by_name(tmp_path):
    from nostride.safe_load import WeightsFileError, read_weights_file

    path = tmp_path / "w.pt"
    torch.save({"model": {"fc.weight": torch.eye(3).to_sparse()}}, path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with pytest.raises(WeightsFileError, match=r"tensor 'model/fc.weight' is stored as a torch.sparse_coo tensor"):
            read_weights_file(path)


def test_import_of_a_link_loop_is_one_line(tmp_path, capsys):
    loop = tmp_path / "loop.pt"
    os.symlink(loop.name, loop)
    assert main(["import", str(loop), str(tmp_path / "out.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nostride import: error:") and "loop.pt" in err[0]


def test_a_failed_export_check_writes_no_file(tmp_path, capsys, monkeypatch):
    import nostride.export as export

    model = create_model("resnet18_cifar", num_classes=2, width=8)
    weights = save_checkpoint(make_checkpoint(model, ["a", "b"], img_size=16), tmp_path / "m.pt")
    out = tmp_path / "m.torchscript"

    def differs(*args, **kwargs):
        raise export.ExportCheckError("TorchScript output 0 differs from PyTorch for input (1, 3, 16, 16)")

    monkeypatch.setattr(export, "_compare", differs)
    rc = main(["export", "--weights", str(weights), "--format", "torchscript", "--output", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and not out.exists()
    assert len(err) == 1 and "failed its check against PyTorch, so no file was written" in err[0]
    with pytest.raises(ValueError, match="opset must be a whole number from 18"):
        export.export_onnx(model, tmp_path / "m.onnx", (1, 3, 16, 16), opset=13)
    with pytest.raises(ValueError, match="opset must be a whole number"):
        export.export_onnx(model, tmp_path / "m.onnx", (1, 3, 16, 16), opset=1000)
    assert not (tmp_path / "m.onnx").exists()


def test_multi_scale_never_draws_below_the_stride():
    import random

    from nostride.tasks.detect.task import DetectTask

    task = types.SimpleNamespace(stride=32, img_size=32)
    images = torch.zeros(1, 3, 32, 32)
    random.seed(0)
    sizes = {DetectTask.multi_scale(task, images).shape[-1] for _ in range(200)}
    assert min(sizes) >= 32 and sizes <= {32, 64}


def test_fifo_split_sources_are_refused_without_blocking(tmp_path):
    from nostride.data.detection import DetectionDataset

    for name, message in (("list.txt", "not a folder, an image list"), ("instances_val.json", "not a regular file")):
        os.mkfifo(tmp_path / name)  # reading one would wait for a writer forever
        with pytest.raises(ValueError, match=message):
            DetectionDataset(tmp_path / name, verbose=False)
