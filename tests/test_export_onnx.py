"""ONNX / TorchScript export of SPD layers, plain and fused, checked against PyTorch."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

from nostride import export as export_mod
from nostride.export import ExportCheckError, export, export_onnx, export_torchscript
from nostride.layers import ConvBnAct, SPDConv, SpaceToDepth

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

EVEN_SHAPES = [(2, 3, 20, 24), (1, 3, 8, 12)]
ODD_SHAPES = [(2, 3, 15, 13), (1, 3, 9, 20)]


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(SPDConv(3, 8, 3), ConvBnAct(8, 8, 3), SPDConv(8, 16, 1, scale=3, act="silu"))


def op_types(path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


@pytest.mark.slow
def test_fused_spd_conv_dynamic_hw_even_and_odd(tmp_path):
    net = small_net()
    path = export_onnx(
        net, tmp_path / "net.onnx", (1, 3, 16, 16), dynamic=True, fuse=True, check_shapes=EVEN_SHAPES + ODD_SHAPES
    )
    model = onnx.load(str(path))
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    ops = op_types(path)
    # the deployment form: convolutions only, no space-to-depth shuffling, no BatchNorm, and no
    # shape arithmetic: the odd-size padding is a constant one, merged into the conv's own pads
    assert "Conv" in ops
    assert not ops & {"Transpose", "Reshape", "BatchNormalization", "SpaceToDepth", "DepthToSpace"}
    assert not ops & {"Pad", "Shape", "Mod", "Gather"}
    assert net.training  # the caller's model was not put in eval mode (fuse works on a copy)


@pytest.mark.slow
def test_spd_conv_dynamic_hw_even(tmp_path):
    path = export_onnx(SPDConv(3, 8, 3), tmp_path / "m.onnx", (1, 3, 16, 16), dynamic=True, check_shapes=EVEN_SHAPES)
    assert "Transpose" in op_types(path)


@pytest.mark.slow
def test_space_to_depth_dynamic_hw(tmp_path):
    # exported from an even example, the graph must still pad odd inputs
    export_onnx(SpaceToDepth(2), tmp_path / "m.onnx", (1, 3, 16, 16), dynamic=True,
                check_shapes=EVEN_SHAPES + ODD_SHAPES)


@pytest.mark.slow
def test_spd_conv_dynamic_hw_odd(tmp_path):
    export_onnx(SPDConv(3, 8, 3), tmp_path / "m.onnx", (1, 3, 16, 16), dynamic=True, check_shapes=ODD_SHAPES)


def test_static_export_odd_input_and_training_flag_restored(tmp_path):
    net = small_net().train()
    export_onnx(net, tmp_path / "net.onnx", (2, 3, 17, 15))
    assert all(m.training for m in net.modules())


def test_legacy_exporter_and_simplify(tmp_path):
    net = small_net()
    export_onnx(net, tmp_path / "net.onnx", (1, 3, 16, 16), dynamic=True, fuse=True, dynamo=False, simplify=True,
                check_shapes=ODD_SHAPES)


def test_check_catches_a_wrong_export(tmp_path):
    class ShapeDependent(nn.Module):
        """Python control flow on the width: a traced graph keeps only the branch it saw."""

        def forward(self, x):
            return x * 2 if x.shape[-1] > 16 else x

    with pytest.raises(ExportCheckError, match=r"input \(1, 3, 8, 24\).*max abs diff"):
        export_onnx(ShapeDependent(), tmp_path / "m.onnx", (1, 3, 8, 8), dynamic=True, dynamo=False,
                    check_shapes=[(1, 3, 8, 24)])


def test_missing_onnx_names_the_extra(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(export_mod.importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a))
    with pytest.raises(ImportError, match=r"nostride\[onnx\]"):
        export_onnx(SpaceToDepth(2), tmp_path / "m.onnx", (1, 3, 8, 8))


@pytest.mark.filterwarnings("ignore:.*torch.jit.*deprecated")
def test_torchscript_fused_odd_sizes(tmp_path):
    net = small_net()
    path = export_torchscript(net, tmp_path / "net.torchscript", (1, 3, 16, 16), fuse=True, check_shapes=ODD_SHAPES)
    loaded = torch.jit.load(str(path))
    x = torch.randn(1, 3, 11, 14)
    torch.testing.assert_close(loaded(x), net.eval()(x), rtol=1e-4, atol=1e-5)


def test_export_dispatch_by_suffix(tmp_path):
    assert export(SpaceToDepth(2), tmp_path / "m.torchscript", input_shape=(1, 3, 8, 8)).is_file()
    with pytest.raises(ValueError, match="cannot tell the export format"):
        export(SpaceToDepth(2), tmp_path / "m.bin")
    with pytest.raises(ValueError, match="unknown export format 'tflite'"):
        export(SpaceToDepth(2), tmp_path / "m.bin", format="tflite")
