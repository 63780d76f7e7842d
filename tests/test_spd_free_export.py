"""Fused models hold no space-to-depth data movement: YOLOv5-SPD's SPD-after-conv folded exactly,
and their ONNX graphs have the op counts of the strided baselines."""

from __future__ import annotations

import collections

import pytest
import torch
from torch import nn

import nostride
from nostride.convert.fuse import split_input_conv
from nostride.layers import SPDPad, SpaceToDepth, SplitInputConv, space_to_depth
from nostride.models.yolo import load_cfg
from nostride.utils.profile import count_parameters

from helpers import randomize_bn


# ------------------------------------------------------------------------- split_input_conv
@pytest.mark.parametrize("kernel", [1, 3])
def test_split_input_conv_equals_conv_of_concat_with_spd(kernel):
    torch.manual_seed(0)
    a, b, c = torch.randn(2, 3, 10, 12, dtype=torch.float64), torch.randn(2, 5, 5, 6, dtype=torch.float64), torch.randn(
        2, 2, 15, 18, dtype=torch.float64
    )
    conv = nn.Conv2d(4 * 3 + 5 + 9 * 2, 7, kernel, padding=kernel // 2).double()
    expected = conv(torch.cat([space_to_depth(a, 2), b, space_to_depth(c, 3)], 1))
    split = split_input_conv(conv, [(3, 2), (5, 1), (2, 3)])
    assert isinstance(split, SplitInputConv)
    assert [m.stride for m in split.convs] == [(2, 2), (1, 1), (3, 3)]
    assert [m.kernel_size for m in split.convs] == [(2 * kernel,) * 2, (kernel,) * 2, (3 * kernel,) * 2]
    assert count_parameters(split) == count_parameters(conv)
    torch.testing.assert_close(split([a, b, c]), expected, rtol=0, atol=1e-12)
    # parts in another order are another function
    wrong = split_input_conv(conv, [(5, 1), (3, 2), (2, 3)])
    with pytest.raises(RuntimeError):
        wrong([a, b, c])


def test_split_input_conv_rejects_wrong_parts():
    with pytest.raises(ValueError, match="give 13 input channels, the conv has 12"):
        split_input_conv(nn.Conv2d(12, 4, 1), [(3, 2), (1, 1)])
    with pytest.raises(ValueError, match="stride"):
        split_input_conv(nn.Conv2d(12, 4, 1, stride=2), [(3, 2)])


@pytest.mark.parametrize("scale", [2, 3])
def test_spd_pad_odd_sizes_match_space_to_depth(scale):
    # SPDPad + folded strided conv == SPD + conv on odd sizes too
    torch.manual_seed(1)
    conv = nn.Conv2d(scale * scale * 2, 3, 3, padding=1).double()
    split = split_input_conv(conv, [(2, scale)])
    for h, w in [(7, 9), (6, 5), (1, 2)]:
        x = torch.randn(1, 2, h, w, dtype=torch.float64)
        torch.testing.assert_close(split(SPDPad(scale)(x)), conv(space_to_depth(x, scale)), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match=r"\(1, 2, 7, 8\).*scale="):
        SPDPad(scale, pad=False)(torch.randn(1, 2, 7, 8))


# ------------------------------------------------------------------------- YOLOv5-SPD fold
def spd_cfg(depth: float = 0.33, nc: int = 3) -> dict:
    cfg = load_cfg("yolov5-spd.yaml")
    cfg.update(nc=nc, depth_multiple=depth, width_multiple=0.125)
    return cfg


def test_yolov5_spd_fold_is_exact_float64():
    model = randomize_bn(nostride.create_model("yolov5", cfg=spd_cfg()).double()).eval()
    fused = nostride.fuse(model)
    assert not any(isinstance(m, SpaceToDepth) for m in fused.modules())
    assert sum(isinstance(m, SPDPad) for m in fused.modules()) == 6
    # every SPD sits where sizes always divide: nothing to pad, in eager mode or in a graph
    assert not any(m.pad for m in fused.modules() if isinstance(m, SPDPad))
    assert [m.i for m in fused.model] == list(range(len(fused.model)))
    assert sum(m.np for m in fused.model) == count_parameters(fused)
    for shape in [(2, 3, 64, 96), (1, 3, 128, 32)]:
        x = torch.rand(*shape, dtype=torch.float64)
        with torch.no_grad():
            (dec, raw), (dec_f, raw_f) = model(x), fused(x)
        torch.testing.assert_close(dec_f, dec, rtol=0, atol=1e-9)
        for a, b in zip(raw_f, raw):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-11)


def test_yolov5_spd_fold_keeps_parameter_count():
    model = nostride.create_model("yolov5", cfg=spd_cfg())
    unfolded = sum(p.numel() for m in model.model for p in m.parameters())
    fused = model.fuse()
    # same count as BN folding alone: 2x2 stride-2 convs over C channels == 1x1 convs over 4C
    n_bn = sum(m.num_features for m in nostride.create_model("yolov5", cfg=spd_cfg()).modules() if isinstance(m, nn.BatchNorm2d))
    assert count_parameters(fused) == unfolded - n_bn


# ------------------------------------------------------------------------- ONNX op counts
onnx = None


def _ops(model: nn.Module, shape, tmp_path, name: str, dynamic: bool = False, odd: bool = False) -> collections.Counter:
    global onnx
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    from nostride.export import export_onnx

    path = export_onnx(model, tmp_path / f"{name}.onnx", shape, fuse=True, dynamic=dynamic, check=True,
                       check_shapes=[(2, shape[1], shape[2] + 32 + odd, shape[3] - odd)] if dynamic else [])
    return collections.Counter(node.op_type for node in onnx.load(str(path)).graph.node)


SPD_OPS = ("SpaceToDepth", "DepthToSpace")
SHAPE_OPS = ("Reshape", "Transpose", "Shape", "Gather", "Mod", "Pad", "Slice", "Concat")


def _assert_like_baseline(spd: collections.Counter, base: collections.Counter) -> None:
    assert not any(spd[op] for op in SPD_OPS)
    assert spd["Pad"] == 0
    for op in ("Reshape", "Transpose", "Shape", "Gather", "Mod", "Slice"):
        assert spd[op] == base[op], (op, spd[op], base[op])
    assert set(spd) <= set(base)


# the n/s topology; l (depth 1.0: more bottlenecks, the same SPD positions) and dynamic sizes
# take minutes to export on a 2-core machine
@pytest.mark.parametrize(
    "depth,dynamic",
    [(0.33, False), pytest.param(0.33, True, marks=pytest.mark.slow), pytest.param(1.0, False, marks=pytest.mark.slow)],
)
@pytest.mark.slow
def test_fused_yolov5_spd_onnx_has_baseline_ops(tmp_path, depth, dynamic):
    strided = load_cfg("yolov5.yaml")
    strided.update(nc=3, depth_multiple=depth, width_multiple=0.125)
    base = _ops(nostride.create_model("yolov5", cfg=strided), (1, 3, 64, 64), tmp_path, "base", dynamic)
    spd = _ops(nostride.create_model("yolov5", cfg=spd_cfg(depth)), (1, 3, 64, 64), tmp_path, "spd", dynamic)
    _assert_like_baseline(spd, base)
    # the concatenations before the two head C3s became sums of two convs
    assert base["Concat"] - spd["Concat"] == 2 and spd["Conv"] - base["Conv"] == 4


@pytest.mark.parametrize(
    "arch,dynamic",
    [("resnet18", False), ("resnet18", True), pytest.param("resnet50", True, marks=pytest.mark.slow)],
)
@pytest.mark.slow
def test_fused_resnet_spd_onnx_has_baseline_ops(tmp_path, arch, dynamic):
    kwargs = dict(num_classes=5, width=8)
    base = _ops(nostride.create_model(arch, **kwargs), (1, 3, 32, 32), tmp_path, "base", dynamic)
    spd = _ops(nostride.create_model(f"{arch}_spd", **kwargs), (1, 3, 32, 32), tmp_path, "spd", dynamic, odd=True)
    # a dynamic export must still run odd sizes: its constant pad is merged into the conv's pads
    _assert_like_baseline(spd, base)


def test_fused_resnet_spd_legacy_exporter_opset_11_dynamic(tmp_path):
    # older runtimes: PyTorch's legacy exporter at opset 11, dynamic batch and odd sizes
    pytest.importorskip("onnxruntime")
    onnx_ = pytest.importorskip("onnx")
    from nostride.export import export_onnx

    model = nostride.create_model("resnet18_spd", num_classes=5, width=8)
    path = export_onnx(model, tmp_path / "m.onnx", (1, 3, 32, 32), opset=11, dynamic=True, fuse=True, dynamo=False,
                       check_shapes=[(2, 3, 45, 37)])
    ops = {node.op_type for node in onnx_.load(str(path)).graph.node}
    assert onnx_.load(str(path)).opset_import[0].version == 11 and not ops & set(SPD_OPS)
