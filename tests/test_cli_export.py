"""``nostride export``: checkpoint -> ONNX / TorchScript, fused, checked against PyTorch."""

from __future__ import annotations

import pytest
import torch

from nostride import create_model
from nostride.checkpoint import make_checkpoint, save_checkpoint
from nostride.cli import main


@pytest.fixture()
def classifier_ckpt(tmp_path):
    model = create_model("resnet18_spd", num_classes=3, width=8)
    return save_checkpoint(make_checkpoint(model, names=["a", "b", "c"], img_size=32), tmp_path / "best.pt")


@pytest.mark.slow
def test_onnx_export_of_a_classifier_matches_pytorch(classifier_ckpt, capsys):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    assert main(["export", "--weights", str(classifier_ckpt), "--dynamic"]) == 0
    out = capsys.readouterr().out
    onnx_path = classifier_ckpt.with_suffix(".onnx")
    assert onnx_path.is_file() and "(1, 3, 32, 32) (dynamic), fused, checked against PyTorch" in out
    # independent check at another size than the example's: same logits as the checkpoint's model
    from nostride import model_from_checkpoint

    model = model_from_checkpoint(classifier_ckpt)
    x = torch.randn(2, 3, 48, 40)
    session = ort.InferenceSession(str(onnx_path))
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(got), model(x).detach(), atol=1e-4, rtol=1e-3)


@pytest.mark.slow
def test_torchscript_export_of_a_detector(tmp_path, capsys):
    model = create_model("yolov5n_spd", num_classes=2)
    ckpt = save_checkpoint(make_checkpoint(model), tmp_path / "det.pt")
    out_file = tmp_path / "det.torchscript"
    assert main(["export", "--weights", str(ckpt), "--format", "torchscript", "--img-size", "64", "96",
                 "--output", str(out_file)]) == 0
    assert "(1, 3, 64, 96)" in capsys.readouterr().out
    loaded = torch.jit.load(str(out_file))
    x = torch.rand(1, 3, 64, 96)
    torch.testing.assert_close(loaded(x)[0], model.eval()(x)[0], atol=1e-3, rtol=1e-4)


def test_export_errors(classifier_ckpt, tmp_path, capsys):
    assert main(["export", "--weights", str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt" in capsys.readouterr().err
    assert main(["export", "--weights", str(classifier_ckpt), "--format", "torchscript", "--dynamic"]) == 2
    assert "ONNX only" in capsys.readouterr().err


@pytest.mark.slow
def test_onnx_export_of_a_detector_with_nms(tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from nostride.models.yolo import load_cfg
    from nostride.tasks.detect import non_max_suppression

    cfg = load_cfg("yolov5-spd.yaml")
    cfg.update(nc=2, depth_multiple=0.33, width_multiple=0.125)
    model = create_model("yolov5", cfg=cfg)
    with torch.no_grad():  # an untrained head gives no box above any threshold
        for conv in model.detect.m:
            conv.bias.view(model.detect.na, -1)[:, 4:] += 5
    ckpt = save_checkpoint(make_checkpoint(model), tmp_path / "det.pt")
    assert main(["export", "--weights", str(ckpt), "--img-size", "64", "--nms", "--conf-thres", "0.3"]) == 0
    assert "NMS in the graph, checked: valid ONNX, runs in ONNX Runtime" in capsys.readouterr().out
    session = ort.InferenceSession(str(ckpt.with_suffix(".onnx")))
    x = torch.rand(1, 3, 64, 64)
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    expected = non_max_suppression(model.eval()(x), conf_thres=0.3)[0]
    # the same boxes (test_export_detect.py compares them box by box, with equal scores tie-broken)
    assert got.shape[1] == 7 and abs(len(got) - len(expected)) <= 0.05 * len(expected) and len(expected) > 0
    assert main(["export", "--weights", str(ckpt), "--nms", "--format", "torchscript"]) == 2
    assert "ONNX only" in capsys.readouterr().err


def test_export_nms_thresholds_are_spelled_as_in_predict_and_val():
    from nostride.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["export", "--weights", "w.pt", "--nms", "--conf", "0.3", "--iou", "0.5"])
    assert (args.conf_thres, args.iou_thres) == (0.3, 0.5)
    args = parser.parse_args(["export", "--weights", "w.pt", "--nms", "--conf-thres", "0.2", "--iou-thres", "0.4"])
    assert (args.conf_thres, args.iou_thres) == (0.2, 0.4)  # the YOLOv5 spellings still work
