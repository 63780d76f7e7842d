"""YOLOv5 v6.0 / YOLOv5-SPD models: exact counts, reference layout, decoding, init, fuse, definitions."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import yaml
from torch import nn

from nostride import create_model
from nostride.checkpoint import make_checkpoint, model_from_checkpoint
from nostride.layers import FusedSPDConv, SPDConv, SpaceToDepth
from nostride.models.yolo import (
    COCO80_NAMES,
    YOLOv5,
    check_anchor_order,
    load_cfg,
    parse_model,
    yolov5_cfg,
)
from nostride.utils import count_parameters

from helpers import randomize_bn

ANCHORS_PX = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]

# (params at nc=80, params after fuse()) -- yolov5-reference.md sections 1 and 8
REFERENCE_COUNTS = {
    "yolov5n": (1_872_157, 1_867_405),
    "yolov5s": (7_235_389, 7_225_885),
    "yolov5m": (21_190_557, 21_172_173),
    "yolov5l": (46_563_709, 46_533_693),
    "yolov5n_spd": (2_256_157, 2_251_405),
    "yolov5s_spd": (8_771_389, 8_761_885),
    "yolov5m_spd": (24_646_557, 24_628_173),
    "yolov5l_spd": (52_707_709, 52_677_693),
}
# the paper's order (SPD -> stride-1 conv); nostride's own figures, documented in docs/models.md
SPD_CONV_COUNTS = {"n": (3_600_157, 3_595_405), "s": (14_147_389, 14_137_885)}


def tiny_cfg(base: str = "yolov5.yaml", nc: int = 3) -> dict:
    cfg = load_cfg(base)
    cfg.update(nc=nc, depth_multiple=0.33, width_multiple=0.125)
    return cfg


# ------------------------------------------------------------------------------------ counts
@pytest.mark.parametrize("name", list(REFERENCE_COUNTS))
def test_parameter_count_matches_reference(name):
    model = create_model(name)
    assert count_parameters(model) == REFERENCE_COUNTS[name][0]
    assert model.model_name == name and model.task == "detect"


@pytest.mark.parametrize("name", ["yolov5n", "yolov5s", "yolov5n_spd", "yolov5s_spd"])
def test_fused_parameter_count_matches_reference(name):
    model = create_model(name).fuse()
    assert count_parameters(model) == REFERENCE_COUNTS[name][1]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize("scale", ["n", "s"])
@pytest.mark.slow
def test_spd_conv_order_counts(scale):
    model = create_model(f"yolov5{scale}_spd", spd_order="spd-conv")
    assert count_parameters(model) == SPD_CONV_COUNTS[scale][0]
    assert count_parameters(model.fuse()) == SPD_CONV_COUNTS[scale][1]


def test_detect_head_params_and_layer_np():
    # Detect-head params for n/s (reference section 1): 115,005 / 229,245
    for name, head in (("yolov5n", 115_005), ("yolov5s", 229_245)):
        model = create_model(name)
        assert model.model[-1].np == head == count_parameters(model.model[-1])
        assert sum(m.np for m in model.model) == count_parameters(model)


# --------------------------------------------------------------------- reference layout
def test_state_dict_keys_follow_reference():
    keys = set(create_model("yolov5n").state_dict())
    for k in ("model.0.conv.weight", "model.2.cv1.conv.weight", "model.2.m.0.cv1.bn.running_var",
              "model.9.cv2.bn.num_batches_tracked", "model.24.anchors", "model.24.m.2.bias", "model.24.m.0.weight"):
        assert k in keys, k
    assert not any(k.endswith(("stride", "grid")) for k in keys)  # not persistent, as in YOLOv5
    spd_keys = set(create_model("yolov5n_spd").state_dict())
    for k in ("model.0.conv.conv.weight", "model.0.conv.bn.running_mean", "model.3.m.0.cv2.conv.weight",
              "model.30.anchors", "model.30.m.2.bias"):
        assert k in spd_keys, k


def test_layer_attributes_like_reference():
    model = create_model("yolov5n_spd")
    layers = list(model.model)
    assert [m.i for m in layers] == list(range(31))
    assert layers[16].f == [-1, 9] and layers[30].f == [21, 25, 29] and layers[3].f == -1
    assert layers[2].type == "nostride.layers.space_to_depth.SpaceToDepth"
    assert layers[30].type == "nostride.models.yolo.detect.Detect"
    assert model.save == [6, 9, 14, 18, 21, 25, 29]
    assert model.yaml["nc"] == 80 and model.yaml["ch"] == 3
    assert model.names == COCO80_NAMES and len(set(model.names)) == 80
    assert create_model("yolov5n", num_classes=3).names == ["class0", "class1", "class2"]


@pytest.mark.parametrize("layout", ["v6", "spd"])
@pytest.mark.slow
def test_loads_independent_reference_state_dict_and_matches_outputs(layout):
    """tests/yolov5_fixture.py re-creates the reference classes from the facts independently."""
    fixture = pytest.importorskip("yolov5_fixture")
    cfg = fixture.v6_cfg(nc=3) if layout == "v6" else fixture.spd_cfg(nc=3)
    ref = fixture.build_reference_model(cfg)
    ours = YOLOv5(cfg)
    ours.load_state_dict(ref.state_dict(), strict=True)
    assert torch.equal(ours.stride, ref.stride.float())
    ours.eval()
    x = torch.rand(2, 3, 96, 64)
    with torch.no_grad():
        (dec_ref, raw_ref), (dec, raw) = ref(x), ours(x)
    torch.testing.assert_close(dec, dec_ref, rtol=1e-5, atol=1e-4)
    for a, b in zip(raw, raw_ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------- forward/decode
def test_output_shapes_640():
    model = create_model("yolov5n").eval()
    with torch.no_grad():
        dec, raw = model(torch.zeros(1, 3, 640, 640))
    assert dec.shape == (1, 25200, 85)
    assert [tuple(p.shape) for p in raw] == [(1, 3, 80, 80, 85), (1, 3, 40, 40, 85), (1, 3, 20, 20, 85)]
    model.train()
    with torch.no_grad():
        train_out = model(torch.zeros(2, 3, 128, 64))  # training mode: the raw list only
    assert isinstance(train_out, list)
    assert [tuple(p.shape) for p in train_out] == [(2, 3, 16, 8, 85), (2, 3, 8, 4, 85), (2, 3, 4, 2, 85)]


@pytest.mark.parametrize("name", ["yolov5n", "yolov5n_spd"])
@pytest.mark.slow
def test_non_square_and_size_changes(name):
    model = create_model(name, num_classes=3).eval()
    with torch.no_grad():
        dec, raw = model(torch.rand(1, 3, 320, 256))
        assert dec.shape == (1, 3 * (40 * 32 + 20 * 16 + 10 * 8), 8)
        assert [tuple(p.shape[2:4]) for p in raw] == [(40, 32), (20, 16), (10, 8)]
        dec2, _ = model(torch.rand(1, 3, 96, 128))  # grids rebuilt for the new size
    assert dec2.shape == (1, 3 * (12 * 16 + 6 * 8 + 3 * 4), 8)
    # box centres lie inside the image, up to the half-cell margin of 2*sigmoid - 0.5
    assert dec2[..., 0].max() <= 128 + 16 and dec2[..., 1].max() <= 96 + 16
    assert dec2[..., 0].min() >= -16 and dec2[..., 1].min() >= -16


def test_input_size_must_be_multiple_of_stride():
    model = create_model("yolov5n", num_classes=3)
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.zeros(1, 3, 100, 96))


@pytest.mark.parametrize("inplace", [True, False])
def test_decode_matches_hand_computation(inplace):
    model = YOLOv5(tiny_cfg()).eval()
    model.detect.inplace = inplace
    with torch.no_grad():
        dec, raw = model(torch.rand(1, 3, 128, 96))
    # level 1 (stride 16): ny, nx = 8, 6; entry anchor 2, row 5, column 4
    level, a, gy, gx = 1, 2, 5, 4
    ny, nx = 8, 6
    offset = 3 * 16 * 12 + a * ny * nx + gy * nx + gx
    t = raw[level][0, a, gy, gx].tolist()
    sig = [1 / (1 + math.exp(-v)) for v in t]
    stride = 16.0
    anchor_w, anchor_h = ANCHORS_PX[level][2 * a], ANCHORS_PX[level][2 * a + 1]
    expected = [
        (2 * sig[0] - 0.5 + gx) * stride,
        (2 * sig[1] - 0.5 + gy) * stride,
        (2 * sig[2]) ** 2 * anchor_w,
        (2 * sig[3]) ** 2 * anchor_h,
        *sig[4:],
    ]
    torch.testing.assert_close(dec[0, offset], torch.tensor(expected), rtol=1e-5, atol=1e-4)


# ------------------------------------------------------------------------------ build/init
def test_strides_and_anchors_in_grid_units():
    model = create_model("yolov5n_spd")
    assert model.stride.tolist() == [8.0, 16.0, 32.0]
    m = model.model[-1]
    assert m.stride.tolist() == [8.0, 16.0, 32.0] and (m.nc, m.no, m.nl, m.na) == (80, 85, 3, 3)
    expected = torch.tensor(ANCHORS_PX, dtype=torch.float32).view(3, 3, 2) / torch.tensor([8.0, 16.0, 32.0]).view(3, 1, 1)
    assert torch.equal(m.anchors, expected)


def test_anchor_order_is_checked():
    cfg = tiny_cfg()
    cfg["anchors"] = ANCHORS_PX[::-1]  # largest anchors on the stride-8 level
    m = YOLOv5(cfg).detect
    # v6.0 semantics: divide by stride first, then flip the levels (in grid units)
    px = torch.tensor(ANCHORS_PX, dtype=torch.float32).view(3, 3, 2)
    assert torch.equal(m.anchors[0], px[0] / 32) and torch.equal(m.anchors[2], px[2] / 8)
    assert not check_anchor_order(m)  # in order now
    in_order = YOLOv5(tiny_cfg()).detect.anchors
    assert torch.equal(in_order[0], px[0] / 8)


def test_custom_anchors_override():
    anchors = [[8, 8, 12, 12, 20, 20], [30, 30, 40, 40, 60, 60], [90, 90, 120, 120, 200, 200]]
    model = create_model("yolov5n", num_classes=2, anchors=anchors)
    assert torch.allclose(model.detect.anchors[2, 0] * 32, torch.tensor([90.0, 90.0]))
    assert model.yaml["anchors"] == anchors


def test_bias_init_added_to_pytorch_default():
    cfg = tiny_cfg(nc=5)
    torch.manual_seed(123)
    model = YOLOv5(cfg)
    torch.manual_seed(123)  # replay the same construction: the PyTorch default biases
    default_layers, _ = parse_model(copy.deepcopy(model.yaml), 3)
    for conv, conv0, s in zip(model.detect.m, default_layers[-1].m, (8, 16, 32)):
        b, b0 = conv.bias.detach().view(3, -1), conv0.bias.detach().view(3, -1)
        torch.testing.assert_close(b[:, :4], b0[:, :4])
        torch.testing.assert_close(b[:, 4], b0[:, 4] + math.log(8 / (640 / s) ** 2))
        torch.testing.assert_close(b[:, 5:], b0[:, 5:] + math.log(0.6 / (5 - 0.99)))
    assert math.log(8 / (640 / 8) ** 2) == pytest.approx(-6.685, abs=1e-3)
    assert math.log(0.6 / (80 - 0.99)) == pytest.approx(-4.880, abs=1e-3)


def test_batchnorm_and_activation_settings():
    model = create_model("yolov5n_spd", spd_order="spd-conv")
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.eps == 1e-3 and m.momentum == 0.03 for m in bns)
    acts = [m for m in model.modules() if isinstance(m, nn.SiLU)]
    assert len(acts) == len(bns) and all(m.inplace for m in acts)


def test_no_strided_conv_or_pool_in_spd_layouts():
    def strided(model):
        return [n for n, m in model.named_modules()
                if isinstance(m, (nn.Conv2d, nn.MaxPool2d)) and max(_pair(m.stride)) > 1]

    assert strided(create_model("yolov5n"))  # v6.0 downsamples with 5 + 2 strided convs
    assert len(strided(create_model("yolov5n"))) == 7
    assert strided(create_model("yolov5n_spd")) == []
    paper = create_model("yolov5n_spd", spd_order="spd-conv")
    assert strided(paper) == []
    assert sum(isinstance(m, SPDConv) for m in paper.modules()) == 6
    assert sum(isinstance(m, SpaceToDepth) for m in create_model("yolov5n_spd").modules()) == 6


def _pair(v):
    return v if isinstance(v, tuple) else (v, v)


# ------------------------------------------------------------------------------------ fuse
@pytest.mark.parametrize("name,order", [("yolov5n", None), ("yolov5n_spd", None), ("yolov5n_spd", "spd-conv")])
@pytest.mark.slow
def test_fuse_keeps_outputs(name, order):
    kwargs = {"spd_order": order} if order else {}
    model = create_model(name, num_classes=4, **kwargs)
    randomize_bn(model)
    model.eval()
    x = torch.rand(1, 3, 160, 128)
    with torch.no_grad():
        dec, raw = model(x)
        n_before = count_parameters(model)
        fused = model.fuse()
        assert fused is model and not model.training
        dec_f, raw_f = fused(x)
    torch.testing.assert_close(dec_f, dec, rtol=1e-4, atol=1e-3)
    for a, b in zip(raw_f, raw):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert [m.i for m in fused.model] == list(range(len(fused.model)))
    assert sum(m.np for m in fused.model) == count_parameters(fused) < n_before
    if name == "yolov5n_spd":  # Focus (SPD -> 3x3 conv) became one 6x6 stride-2 conv, same size
        first = fused.model[0]
        assert isinstance(first, FusedSPDConv) and first.conv.kernel_size == (6, 6) and first.conv.stride == (2, 2)
        assert first.f == -1 and first.i == 0
    if order == "spd-conv":
        assert sum(isinstance(m, FusedSPDConv) for m in fused.modules()) == 7


@pytest.mark.parametrize("name,order", [("yolov5n_spd", None), ("yolov5n_spd", "spd-conv")])
@pytest.mark.slow
def test_nostride_fuse_on_whole_model(name, order):
    # nostride.fuse() must fuse a YOLOv5 through its hook, never with generic Sequential rules
    # (layers are routed by `f`, not chained)
    import nostride

    kwargs = {"spd_order": order} if order else {}
    model = create_model(name, num_classes=4, **kwargs)
    randomize_bn(model)
    model.eval()
    x = torch.rand(1, 3, 96, 128)
    fused = nostride.fuse(model)
    assert fused is not model and any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    with torch.no_grad():
        torch.testing.assert_close(fused(x)[0], model(x)[0], rtol=1e-4, atol=1e-3)


def test_fuse_in_training_mode_keeps_mode():
    model = create_model("yolov5n", num_classes=2).fuse()
    assert model.training
    out = model(torch.zeros(1, 3, 64, 64))
    assert isinstance(out, list) and len(out) == 3


# ----------------------------------------------------------------------- custom definitions
CUSTOM_YAML = """
nc: 3
depth_multiple: 0.33
width_multiple: 0.125
anchors:
  - [10,13, 16,30, 33,23]
  - [30,61, 62,45, 59,119]
  - [116,90, 156,198, 373,326]
backbone:
  [[-1, 1, Focus, [64, 3]],
   [-1, 1, SPDConv, [128, 3]],
   [-1, 3, C3, [128]],
   [-1, 1, Conv, [256, 3, 2]],
   [-1, 6, C3, [256]],
   [-1, 1, Conv, [512, 3, 1]],
   [-1, 1, SpaceToDepth, [2]],
   [-1, 9, C3, [512]],
   [-1, 1, Conv, [1024, 3, 2]],
   [-1, 3, C3, [1024]],
   [-1, 1, SPP, [1024, [5, 9, 13]]],
  ]
head:
  [[-1, 1, Conv, [512, 1, 1]],
   [-1, 1, nn.Upsample, [None, 2, 'nearest']],
   [[-1, 7], 1, Concat, [1]],
   [-1, 3, C3, [512, False]],
   [-1, 1, Conv, [256, 1, 1]],
   [-1, 1, nn.Upsample, [None, 2, 'nearest']],
   [[-1, 4], 1, Concat, [1]],
   [-1, 3, C3, [256, False]],
   [-1, 1, SPDConv, [256, 3]],
   [[-1, 15], 1, Concat, [1]],
   [-1, 3, C3, [512, False]],
   [-1, 1, SPDConv, [512, 3]],
   [[-1, 11], 1, Concat, [1]],
   [-1, 3, C3, [1024, False]],
   [[18, 21, 24], 1, Detect, [nc, anchors]],
  ]
"""


def test_custom_yaml_variant_builds_runs_and_checkpoints(tmp_path):
    path = tmp_path / "my-yolo.yaml"
    path.write_text(CUSTOM_YAML)
    model = create_model("yolov5", cfg=str(path))
    assert model.nc == 3 and model.stride.tolist() == [8.0, 16.0, 32.0]
    # channel rules: space-to-depth multiplies channels by 4 (64 * 0.125 = 8 -> 32; 512 * 0.125 = 64 -> 256)
    assert model.model[1].conv.in_channels == 32 and model.model[7].cv1.conv.in_channels == 256
    assert isinstance(model.model[10].m[2], nn.MaxPool2d)  # SPP with three pools
    model.eval()
    x = torch.rand(1, 3, 128, 160)
    with torch.no_grad():
        dec, _ = model(x)
    assert dec.shape == (1, 3 * (16 * 20 + 8 * 10 + 4 * 5), 8)
    # the checkpoint records the definition itself, not the path
    ckpt = make_checkpoint(model, names=model.names)
    assert ckpt["model_kwargs"]["cfg"] == yaml.safe_load(CUSTOM_YAML)
    path.unlink()
    rebuilt = model_from_checkpoint(ckpt)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x)[0], dec)


def test_builtin_definitions_and_dict_cfg():
    cfg = yolov5_cfg("s", "conv-spd")
    assert (cfg["depth_multiple"], cfg["width_multiple"]) == (0.33, 0.5)
    model = create_model("yolov5", cfg=cfg)
    assert count_parameters(model) == REFERENCE_COUNTS["yolov5s_spd"][0]
    assert model.model_kwargs["cfg"] == cfg
    small = create_model("yolov5", cfg="yolov5.yaml", num_classes=1, in_chans=1)
    assert small.model[0].conv.in_channels == 1 and small.nc == 1
    assert count_parameters(small) == count_parameters(create_model("yolov5l", num_classes=1, in_chans=1))


def _with_row(section: str, index: int, row) -> dict:
    cfg = tiny_cfg()
    cfg[section][index] = row
    return cfg


@pytest.mark.parametrize(
    "cfg,match",
    [
        (_with_row("head", 3, [-1, 3, "C4", [512, False]]), r"head row 3 \(layer 13\).*unknown module 'C4'"),
        (_with_row("head", 2, [[-1, 30], 1, "Concat", [1]]), r"head row 2 \(layer 12\).*'from' index 30"),
        (_with_row("backbone", 1, [-1, 1, "Conv"]), r"backbone row 1 \(layer 1\).*\[from, number, module, args\]"),
        (_with_row("backbone", 1, [-1, 0, "Conv", [128, 3, 2]]), r"backbone row 1.*'number' must be a positive"),
        (_with_row("backbone", 1, [-1, 1, "Conv", ["wide", 3, 2]]), r"backbone row 1.*output channels"),
        (_with_row("backbone", 2, [-1, 1, "C3", [128, 1, 2, 3, 4, 5]]), r"backbone row 2 \(layer 2\)"),
        (_with_row("backbone", 0, [3, 1, "Conv", [64, 6, 2, 2]]), r"backbone row 0.*only read the input"),
        (_with_row("head", 14, [-1, 1, "Conv", [8, 1, 1]]), r"last head row must be Detect"),
        ({"nc": 3, "backbone": []}, r"missing key"),
    ],
)
def test_malformed_definition_names_the_row(cfg, match):
    with pytest.raises(ValueError, match=match):
        YOLOv5(cfg)


def test_missing_yaml_file_and_bad_yaml(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        create_model("yolov5", cfg=str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("nc: [1,\n")
    with pytest.raises(ValueError, match="bad.yaml: not valid YAML"):
        create_model("yolov5", cfg=str(bad))
    with pytest.raises(ValueError, match="spd_order"):
        create_model("yolov5n_spd", spd_order="spd-then-conv")


def test_docs_example_definition_builds(tmp_path):
    """docs/yolo-config.md's example file gives the numbers printed there."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "docs" / "examples" / "yolov5n-spd-backbone.yaml"
    model = create_model("yolov5", cfg=str(path))
    assert count_parameters(model) == 2_943_016 and model.nc == 3
    assert count_parameters(model.fuse()) == 2_938_264


def test_conv_then_spd_equals_one_wide_4x4_strided_conv():
    """Why fuse() leaves the released conv -> SPD pairs alone (docs/models.md): their one-conv form
    is a 4x4 stride-2 conv with 4x the outputs, the 3x3 kernel shifted to each block offset."""
    c1, c2 = 3, 5
    conv = nn.Conv2d(c1, c2, 3, 1, 1, bias=False)
    x = torch.randn(2, c1, 8, 12)
    expected = SpaceToDepth(2)(conv(x))
    wide = nn.Conv2d(c1, 4 * c2, 4, 2, 1, bias=False)
    with torch.no_grad():
        wide.weight.zero_()
        for r in range(2):
            for c in range(2):
                block = (r + 2 * c) * c2
                wide.weight[block : block + c2, :, r : r + 3, c : c + 3] = conv.weight
    torch.testing.assert_close(wide(x), expected, rtol=1e-5, atol=1e-5)
    assert wide.weight.numel() == 64 * c1 * c2 and conv.weight.numel() == 9 * c1 * c2


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript-based exporter
@pytest.mark.slow
def test_onnx_export_with_dynamic_size():
    """The decode grid is rebuilt from the traced shapes, so one export serves every input size."""
    import io

    ort = pytest.importorskip("onnxruntime")
    model = YOLOv5(tiny_cfg("yolov5-spd.yaml")).eval().fuse()
    f = io.BytesIO()
    torch.onnx.export(model, (torch.rand(1, 3, 64, 96),), f, input_names=["images"], output_names=["decoded"],
                      dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"}}, dynamo=False)
    session = ort.InferenceSession(f.getvalue())
    for shape in [(1, 3, 64, 96), (2, 3, 128, 64)]:
        x = torch.rand(*shape)
        with torch.no_grad():
            expected = model(x)[0]
        got = session.run(["decoded"], {"images": x.numpy()})[0]
        torch.testing.assert_close(torch.from_numpy(got), expected, rtol=1e-4, atol=1e-3)


def test_building_measures_strides_without_touching_batchnorm_or_the_compiler_stack():
    import subprocess
    import sys

    model = create_model("yolov5n_spd", num_classes=3)
    assert model.training and model.stride.tolist() == [8.0, 16.0, 32.0]
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            assert m.running_mean.abs().max() == 0 and (m.running_var == 1).all() and m.num_batches_tracked == 0
    # importing torch._dynamo costs seconds on every command that builds a detector
    code = "import sys; from nostride.models import create_model; create_model('yolov5n'); print('torch._dynamo' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
