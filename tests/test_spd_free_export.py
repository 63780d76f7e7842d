"""Fused models hold no space-to-depth data movement: YOLOv5-SPD's SPD-after-conv folded exactly,
and their ONNX graphs have the op counts of the strided baselines."""

from __future__ import annotations

import collections
import warnings

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


# ------------------------------------------------------------------------- every exporter, every SPD model
@pytest.mark.parametrize("scale,kernel,padding", [(2, 3, 1), (2, 1, 0), (3, 3, 1), (2, 3, 0), (2, 5, 2)])
def test_fused_spd_conv_traced_for_every_size_is_exact(scale, kernel, padding):
    """A TorchScript trace (what the TorchScript-based ONNX exporter records) must run on every
    size: the bottom/right pad to a multiple of the block then sits in the kernel (sh - 1 zero rows
    on top, as much more padding), one Conv and no Pad; equal to SPD + conv on odd and even sizes."""
    from nostride.convert.fuse import spd_conv_to_strided

    torch.manual_seed(0)
    conv = nn.Conv2d(2 * scale * scale, 3, kernel, padding=padding).double()
    fused = spd_conv_to_strided(conv, scale).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(fused, torch.randn(1, 2, 12, 12, dtype=torch.float64))
    kinds = {n.kind() for n in traced.inlined_graph.nodes()}
    assert "aten::pad" not in kinds and "aten::constant_pad_nd" not in kinds
    for h, w in [(12, 12), (13, 11), (7, 9), (scale * 3, scale * 4 + 1), (1, 2)]:
        x = torch.randn(2, 2, h, w, dtype=torch.float64)
        if (h + scale - 1) // scale + 2 * padding < kernel or (w + scale - 1) // scale + 2 * padding < kernel:
            continue  # the unfused conv refuses it too
        with torch.no_grad():
            expected = conv(space_to_depth(x, scale))
            torch.testing.assert_close(traced(x), expected, rtol=0, atol=1e-12)
            torch.testing.assert_close(fused(x), expected, rtol=0, atol=1e-12)


def _legacy_ops(model: nn.Module, tmp_path, name: str, dynamic: bool, shape=(1, 3, 64, 64)) -> collections.Counter:
    global onnx
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    from nostride.export import export_onnx

    odd = [(2, shape[1], shape[2] + 33, shape[3] - 1)] if dynamic else []
    path = export_onnx(model, tmp_path / f"{name}.onnx", shape, fuse=True, dynamic=dynamic, dynamo=False,
                       simplify=True, check=True, check_shapes=odd)
    return collections.Counter(node.op_type for node in onnx.load(str(path)).graph.node)


@pytest.mark.parametrize("dynamic", [False, True])
def test_fused_resnet_spd_legacy_exporter_has_baseline_ops(tmp_path, dynamic):
    # The TorchScript-based exporter turned each SPD site's bottom/right pad into Pad plus
    # Reshape/Transpose/Slice arithmetic on the pad amounts (4 Transpose + 8 Reshape for ResNet18-SPD)
    kwargs = dict(num_classes=10, width=8)
    base = _legacy_ops(nostride.create_model("resnet18", **kwargs), tmp_path, "base", dynamic)
    spd = _legacy_ops(nostride.create_model("resnet18_spd", **kwargs), tmp_path, "spd", dynamic)
    _assert_like_baseline(spd, base)


def _registry_spd_models() -> list[str]:
    return [name for name in nostride.list_models() if name.endswith("_spd")]


def _small(name: str) -> nn.Module:
    """The registry model at a small width (each keeps its own depth and topology)."""
    if name.startswith("resnet"):
        return nostride.create_model(name, num_classes=5, width=8)
    return nostride.create_model(name, num_classes=3, width_multiple=0.125)


def _traced_kinds(model: nn.Module, shape=(1, 3, 64, 64)) -> collections.Counter:
    fused = nostride.fuse(model).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(fused, torch.rand(*shape), check_trace=False)
    return collections.Counter(n.kind() for n in traced.inlined_graph.nodes())


DATA_MOVEMENT = ("aten::reshape", "aten::view", "aten::permute", "aten::transpose", "aten::pixel_unshuffle",
                 "aten::pad", "aten::constant_pad_nd", "aten::slice", "aten::index_select", "aten::cat")


@pytest.mark.slow
@pytest.mark.parametrize("name", _registry_spd_models())
def test_every_registry_spd_model_fuses_free_of_space_to_depth(name):
    """Every SPD model of the registry, traced for every size (the strictest recording): no
    space-to-depth module is left and the graph moves data no more than its strided baseline's."""
    spd = _small(name)
    fused = nostride.fuse(spd)
    assert not any(isinstance(m, SpaceToDepth) for m in fused.modules()), name
    kinds, base = _traced_kinds(spd), _traced_kinds(_small(name[: -len("_spd")]))
    for kind in DATA_MOVEMENT:
        assert kinds[kind] <= base[kind], (name, kind, kinds[kind], base[kind])


def _spdify_cases() -> list:
    # the TorchScript-based exporter takes a second or two; the default one a minute per dynamic
    # export on the 2-core machine, so it runs for one model (its fixed-size graphs are the easy case)
    return [pytest.param("torchvision", "resnet18", ("legacy", "dynamo"), id="torchvision-resnet18"),
            pytest.param("timm", "mobilenetv3_small_100", ("legacy",), id="timm-mobilenetv3_small_100")]


def _third_party(source: str, name: str) -> nn.Module:
    if source == "torchvision":
        torchvision = pytest.importorskip("torchvision")
        return getattr(torchvision.models, name)(num_classes=5)
    timm = pytest.importorskip("timm")
    return timm.create_model(name, num_classes=5, pretrained=False)


@pytest.mark.slow
@pytest.mark.parametrize("source,name,exporters", _spdify_cases())
def test_spdify_results_export_free_of_space_to_depth(tmp_path, source, name, exporters):
    """spdify of third-party models, fused: fixed and dynamic sizes (the default exporter: dynamic),
    no more shape or data-movement nodes than the strided original (whose pools become
    convolutions), outputs checked in onnxruntime (odd sizes included for the dynamic graphs)."""
    from nostride.convert import spdify

    torch.manual_seed(0)
    base = randomize_bn(_third_party(source, name)).eval()
    spd, _ = spdify(base, example_input=(1, 3, 64, 64))
    spd = randomize_bn(spd).eval()
    runs = [("legacy", False), ("legacy", True)] * ("legacy" in exporters) + [("dynamo", True)] * ("dynamo" in exporters)
    for exporter, dynamic in runs:
        if exporter == "dynamo":
            ops_b = _ops(base, (1, 3, 64, 64), tmp_path, "b", dynamic)
            ops_s = _ops(spd, (1, 3, 64, 64), tmp_path, "s", dynamic, odd=True)
        else:
            ops_b = _legacy_ops(base, tmp_path, f"lb{dynamic}", dynamic)
            ops_s = _legacy_ops(spd, tmp_path, f"ls{dynamic}", dynamic)
        assert not any(ops_s[op] for op in SPD_OPS)
        for op in ("Reshape", "Transpose", "Shape", "Gather", "Slice", "Pad", "Concat"):
            assert ops_s[op] <= ops_b[op], (exporter, dynamic, op, ops_s[op], ops_b[op])


def test_spdify_tf_same_layers_fuse_without_crop():
    """A TensorFlow-"SAME" 3x3 stride-2 layer (timm's Conv2dSame) spdified and fused: the output
    row it crops is the one the pad to a multiple of 2 adds, so the fused conv runs unpadded and
    uncropped; a 5x5 stride-2 one keeps its crop. Exact on odd and even sizes."""
    timm_layers = pytest.importorskip("timm.layers")
    from nostride.convert import spdify
    from nostride.layers import FusedSPDConv

    torch.manual_seed(0)
    base = nn.Sequential(timm_layers.Conv2dSame(3, 8, 3, stride=2), nn.BatchNorm2d(8), nn.ReLU(),
                         timm_layers.Conv2dSame(8, 8, 3, stride=2, groups=8), nn.BatchNorm2d(8),
                         timm_layers.Conv2dSame(8, 4, 5, stride=2)).double()
    base = randomize_bn(base).eval()
    spd, _ = spdify(base, example_input=(1, 3, 64, 64))
    fused = nostride.fuse(spd.double().eval())
    assert [m.pad for m in fused.modules() if isinstance(m, FusedSPDConv)] == [None, None, True]
    for h, w in [(64, 64), (63, 65), (33, 17), (7, 9)]:
        x = torch.randn(2, 3, h, w, dtype=torch.float64)
        with torch.no_grad():
            torch.testing.assert_close(fused(x), spd(x), rtol=0, atol=1e-10)
            torch.testing.assert_close(spd(x), base(x), rtol=0, atol=1e-10)
