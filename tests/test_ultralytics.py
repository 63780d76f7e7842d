"""nostride.integrations.ultralytics: spdify on YOLOv8 / YOLO11, SPDConv in model YAML, training with ultralytics.

ultralytics is an optional extra; every test here skips when it is not installed. Nothing is
downloaded: models are built from the YAML files shipped with ultralytics, YOLO_OFFLINE is set,
and plots (which would fetch a font) are off.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

# before ultralytics is imported: no network, settings file outside the home directory
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")  # never pip-install missing requirements
os.environ.setdefault("YOLO_CONFIG_DIR", str(Path(tempfile.gettempdir()) / "nostride-tests-ultralytics"))
# importing ultralytics replaces torch.save (a retrying wrapper) and widens torch's and numpy's print
# options for the whole process; put them back so the rest of the suite runs against plain torch
_torch_save, _np_print = torch.save, np.get_printoptions()
ultralytics = pytest.importorskip("ultralytics")
torch.save = _torch_save
np.set_printoptions(**_np_print)
torch.set_printoptions(profile="default")

from ultralytics import YOLO  # noqa: E402
from ultralytics.nn.modules.conv import Conv  # noqa: E402
from ultralytics.nn.tasks import DetectionModel  # noqa: E402

import nostride  # noqa: E402
from helpers import randomize_bn  # noqa: E402
from nostride.integrations.ultralytics import SPDConv, spd_model_yaml, spdify_yolo, use_local_fonts  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread_module")


def strided_convs(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and max(m.stride) > 1]


def detection_model(cfg: str) -> DetectionModel:
    return randomize_bn(DetectionModel(cfg, verbose=False)).eval()


@pytest.fixture(scope="module", params=["yolov8n.yaml", "yolo11n.yaml", "yolov5nu.yaml"])
def yolo_pair(request):
    model = detection_model(request.param)
    converted, report = nostride.spdify(model)
    return model, converted, report


def test_spdify_converts_every_strided_conv_and_keeps_the_routing(yolo_pair):
    model, converted, report = yolo_pair
    downsampling = strided_convs(model)
    assert len(downsampling) == 7  # 5 in the backbone, 2 in the neck (YOLOv5u: its 6x6 stem is one of them)
    assert strided_convs(converted) == []
    assert sorted(e.name for e in report) == sorted(downsampling)
    assert all(e.action == "converted" and e.exact for e in report)
    # the bookkeeping ultralytics routes data with is kept, layer by layer
    assert [(m.i, m.f, m.type) for m in converted.model] == [(m.i, m.f, m.type) for m in model.model]
    assert converted.save == model.save and torch.equal(converted.stride, model.stride)
    for name in downsampling:  # model.<i>.conv: layer i is now an SPDConv (still an ultralytics Conv)
        layer = converted.model[int(name.split(".")[1])]
        assert isinstance(layer, SPDConv) and isinstance(layer, Conv)
        assert layer.np == sum(p.numel() for p in layer.parameters())


def test_converted_model_computes_the_same_detections(yolo_pair):
    model, converted, _ = yolo_pair
    for hw in [(64, 96), (96, 64)]:
        x = torch.randn(2, 3, *hw)
        with torch.no_grad():
            ref, out = model(x), converted(x)
        torch.testing.assert_close(out[0], ref[0], rtol=1e-4, atol=1e-4 * ref[0].abs().max().item())
        # the raw head outputs and the neck's feature maps too, not only the decoded boxes
        for a, b in zip(raw_outputs(out), raw_outputs(ref), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())


def raw_outputs(output) -> list[torch.Tensor]:
    """Tensors of an eval-mode DetectionModel output's second element (a dict of boxes, scores, feats)."""
    raw = output[1]
    values = raw.values() if isinstance(raw, dict) else raw
    flat = []
    for v in values:
        flat += list(v) if isinstance(v, (list, tuple)) else [v]
    assert len(flat) >= 3
    return flat


def test_ultralytics_fuse_folds_batchnorm_into_spdconv(yolo_pair):
    _, converted, _ = yolo_pair
    fused = copy.deepcopy(converted).fuse(verbose=False)
    layer = fused.model[1]
    assert isinstance(layer, SPDConv) and not hasattr(layer, "bn")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fused(x)[0], converted(x)[0], rtol=1e-4, atol=1e-3)


def test_yaml_names_spdconv_and_a_rebuilt_model_has_the_same_tensors(yolo_pair):
    _, converted, _ = yolo_pair
    rows = converted.yaml["backbone"] + converted.yaml["head"]
    spd_rows = [i for i, row in enumerate(rows) if row[2] == "SPDConv"]
    assert spd_rows == [i for i, m in enumerate(converted.model) if isinstance(m, SPDConv)]
    rebuilt = DetectionModel(converted.yaml, verbose=False)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in converted.state_dict().items()
    }
    rebuilt.load_state_dict(converted.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x)[0], converted(x)[0])


@pytest.mark.parametrize("scale", ["n", "s"])
def test_spdconv_in_a_model_yaml_has_convs_channel_bookkeeping(scale):
    plain_cfg = ultralytics.nn.tasks.yaml_model_load("yolov8.yaml")
    plain_cfg["scale"] = scale
    spd_cfg = copy.deepcopy(plain_cfg)
    # what a user writes: [-1, 1, SPDConv, [128, 3, 2]] where [-1, 1, Conv, [128, 3, 2]] was
    assert spd_cfg["backbone"][1] == [-1, 1, "Conv", [128, 3, 2]]
    spd_cfg["backbone"][1][2] = "SPDConv"
    assert spd_model_yaml(plain_cfg)["backbone"][1] == [-1, 1, "SPDConv", [128, 3, 2]]
    plain, spd = DetectionModel(plain_cfg, verbose=False), DetectionModel(spd_cfg, verbose=False)
    layer, before = spd.model[1], plain.model[1]
    assert isinstance(layer, SPDConv) and layer.type.endswith("SPDConv") and (layer.i, layer.f) == (1, -1)
    # output channels scaled by the width multiple like Conv's (n: 32, s: 64); input = 4x layer 0's
    assert layer.conv.out_channels == before.conv.out_channels == {"n": 32, "s": 64}[scale]
    assert layer.conv.in_channels == 4 * before.conv.in_channels and layer.conv.kernel_size == (3, 3)
    assert layer.conv.stride == (1, 1) and layer.spd.scale == (2, 2)
    assert layer.np == sum(p.numel() for p in layer.parameters())
    # every layer's output shape, and so the model's outputs, unchanged
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert [t.shape for t in raw_outputs(spd.eval()(x))] == [t.shape for t in raw_outputs(plain.eval()(x))]


def test_spdconv_is_space_to_depth_then_a_stride_1_conv():
    layer = SPDConv(3, 8, 3, 2, act=False).eval()
    x = torch.randn(2, 3, 13, 10)
    expected = F.conv2d(nostride.space_to_depth(x, 2), layer.conv.weight, padding=1)
    expected = F.batch_norm(expected, layer.bn.running_mean, layer.bn.running_var, layer.bn.weight, layer.bn.bias,
                            eps=layer.bn.eps)
    torch.testing.assert_close(layer(x), expected)
    assert layer(x).shape == Conv(3, 8, 3, 2)(x).shape == (2, 8, 7, 5)
    assert SPDConv(4, 8, 1, 2).conv.kernel_size == (1, 1) and SPDConv(4, 8, 7, 2).conv.kernel_size == (5, 5)
    # an even kernel (YOLOv5u's 6x6 stride-2 stem, padding 2): output floor(H/2), as Conv's
    stem = SPDConv(3, 8, 6, 2, 2)
    assert stem.conv.kernel_size == (3, 3) and stem(x).shape == Conv(3, 8, 6, 2, 2)(x).shape == (2, 8, 6, 5)
    with pytest.raises(ValueError, match="stride >= 2"):
        SPDConv(3, 8, 3, 1)
    with pytest.raises(ValueError, match="beyond 'same'"):
        SPDConv(3, 8, 3, 2, p=2)


def test_spdify_yolo_on_a_checkpoint_keeps_its_function(tmp_path):
    plain = YOLO("yolov8n.yaml")
    randomize_bn(plain.model)
    plain.save(tmp_path / "plain.pt")  # an ordinary ultralytics checkpoint, like a pretrained yolov8n.pt
    loaded = YOLO(str(tmp_path / "plain.pt"))
    ckpt = loaded.ckpt
    yolo, report = spdify_yolo(loaded)
    assert yolo is loaded and yolo.ckpt is ckpt and report.count_action("converted") == 7
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = plain.model.float().eval()(x)[0]
        torch.testing.assert_close(yolo.model.float().eval()(x)[0], ref, rtol=1e-3, atol=1e-3 * ref.abs().max().item())


@pytest.mark.slow
def test_saved_spd_model_reloads_in_a_fresh_process_without_importing_nostride(tmp_path):
    # what ultralytics' DDP workers and a later `YOLO("best.pt").train()` do: unpickling the
    # checkpoint imports the integration, which registers SPDConv for the YAML rebuild
    yolo, _ = spdify_yolo(YOLO("yolov8n.yaml"))
    yolo.save(tmp_path / "spd.pt")
    script = (
        "import sys\n"
        "from ultralytics import YOLO\n"
        "from ultralytics.nn.tasks import DetectionModel\n"
        f"yolo = YOLO({str(tmp_path / 'spd.pt')!r})\n"
        "rebuilt = DetectionModel(yolo.model.yaml, verbose=False)\n"
        "print(type(yolo.model.model[1]).__name__, type(rebuilt.model[1]).__name__)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-2:] == ["SPDConv", "SPDConv"]


@pytest.mark.slow
def test_ultralytics_onnx_export_of_an_spd_model_matches_pytorch(tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    yolo, _ = spdify_yolo(YOLO("yolov8n.yaml"))
    randomize_bn(yolo.model)
    yolo.save(tmp_path / "spd.pt")
    path = YOLO(str(tmp_path / "spd.pt")).export(format="onnx", imgsz=64, simplify=False, dynamic=False)
    session = onnxruntime.InferenceSession(path)
    x = torch.rand(1, 3, 64, 64)
    got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    model = YOLO(str(tmp_path / "spd.pt")).model.float().eval().fuse(verbose=False)
    with torch.no_grad():
        ref = model(x)[0]
    torch.testing.assert_close(got, ref, rtol=1e-3, atol=1e-3 * ref.abs().max().item())


def test_spdify_yolo_refuses_what_the_yaml_cannot_name():
    yolo = YOLO("yolov8n.yaml")
    yolo.model.model[2].cv1.conv.stride = (2, 2)  # a strided conv nested inside C2f
    with pytest.raises(ValueError, match=r"model\.2\.cv1"):
        spdify_yolo(yolo)
    yolo, report = spdify_yolo(yolo, exclude=["model.2.*"])
    assert report.count_action("excluded") == 1 and isinstance(yolo.model.model[1], SPDConv)
    # a YAML SPDConv row builds the smallest exact kernel (3 for 3x3 stride 2), not a requested 5
    with pytest.raises(ValueError, match=r"model\.0.*kernel"):
        spdify_yolo(YOLO("yolov8n.yaml"), kernel_size=5)


def test_plain_spdify_warns_from_the_callers_line_about_what_the_yaml_cannot_name():
    model = DetectionModel("yolov8n.yaml", verbose=False)
    model.model[2].cv1.conv.stride = (2, 2)  # a strided conv nested inside C2f
    with pytest.warns(UserWarning, match=r"model\.2\.cv1.*not named in the model's YAML") as caught:
        converted, _ = nostride.spdify(model)
    assert [w.filename for w in caught if "YAML" in str(w.message)] == [__file__]
    assert isinstance(converted.model[1], SPDConv)


def test_spdify_reaches_the_integration_without_it_being_imported(tmp_path):
    """A user who never imports nostride.integrations.ultralytics still gets SPDConv layers: the
    integration is imported by name the first time a model holding ultralytics modules is converted."""
    code = ("import sys, nostride\n"
            "from ultralytics.nn.tasks import DetectionModel\n"
            "assert 'nostride.integrations.ultralytics' not in sys.modules\n"
            "m, _ = nostride.spdify(DetectionModel('yolov8n.yaml', verbose=False))\n"
            "print(type(m.model[1]).__name__, m.yaml['backbone'][1][2])\n")
    env = {**os.environ, "YOLO_CONFIG_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines()[-1].split() == ["SPDConv", "SPDConv"]


# --- training with ultralytics' own trainer -----------------------------------------------------------


def tiny_coco(shared_data: Path, root: Path, train: int = 8, val: int = 4) -> Path:
    """A few coco128 images in a writable folder (ultralytics writes label caches beside the labels)."""
    src = shared_data / "coco128"
    if not src.is_dir():
        pytest.skip(f"coco128 not found in {shared_data}")
    for split, n in (("train2017", train), ("val2017", val)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for label in sorted((src / "labels" / split).glob("*.txt"))[:n]:
            shutil.copy(label, root / "labels" / split / label.name)
            shutil.copy(src / "images" / split / f"{label.stem}.jpg", root / "images" / split / f"{label.stem}.jpg")
    names = yaml.safe_load((src / "data.yaml").read_text())["names"]
    data = {"path": str(root), "train": "images/train2017", "val": "images/val2017", "names": names}
    (root / "data.yaml").write_text(yaml.safe_dump(data))
    # ultralytics checks for its Arial font on every dataset check and downloads it when missing
    use_local_fonts()
    from ultralytics.utils import USER_CONFIG_DIR
    from ultralytics.utils.checks import check_font

    assert check_font("Arial.ttf") == Path(USER_CONFIG_DIR) / "Arial.ttf"
    return root / "data.yaml"


@pytest.mark.slow
@pytest.mark.data
def test_converted_yolov8n_trains_validates_and_reloads_with_ultralytics(shared_data, tmp_path):
    data = tiny_coco(shared_data, tmp_path / "coco")
    yolo, _ = spdify_yolo(YOLO("yolov8n.yaml"))
    converted = {k: v.clone() for k, v in yolo.model.state_dict().items()}
    started_from = {}

    def on_pretrain_routine_end(trainer):  # the model ultralytics' trainer is about to train
        started_from.update({k: v.detach().clone() for k, v in trainer.model.state_dict().items()})

    yolo.add_callback("on_pretrain_routine_end", on_pretrain_routine_end)
    yolo.train(data=str(data), epochs=1, imgsz=64, batch=4, workers=0, device="cpu", plots=False, amp=False,
               project=str(tmp_path / "runs"), name="train", exist_ok=True, verbose=False)
    # it trained the converted model, from the converted weights
    assert started_from.keys() == converted.keys()
    assert all(torch.equal(started_from[k].float(), converted[k].float()) for k in converted)
    best = Path(yolo.trainer.best)
    assert best.is_file() and isinstance(yolo.model.model[1], SPDConv)
    # the checkpoint reloads as an SPD model and validates
    reloaded = YOLO(str(best))
    assert isinstance(reloaded.model.model[1], SPDConv) and strided_convs(reloaded.model) == []
    metrics = reloaded.val(data=str(data), imgsz=64, batch=4, workers=0, device="cpu", plots=False,
                           project=str(tmp_path / "runs"), name="val", exist_ok=True, verbose=False)
    assert 0.0 <= metrics.box.map50 <= 1.0
    trained = {k: v.float() for k, v in reloaded.model.state_dict().items()}
    assert any(not torch.equal(trained[k], converted[k].float()) for k in converted if k.endswith("conv.weight"))
