"""The fused exports in the runtimes whose users report SpaceToDepth trouble: OpenVINO (from the
ONNX file) and ncnn (through pnnx). Extras: skipped when openvino / pnnx + ncnn are not installed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import nostride
from nostride.models.yolo import load_cfg
from nostride.utils.outputs import output_tensors

from helpers import randomize_bn


def tiny_resnet_spd() -> torch.nn.Module:
    torch.manual_seed(0)
    return randomize_bn(nostride.create_model("resnet18_spd", num_classes=10, width=8)).eval()


def tiny_yolov5_spd() -> torch.nn.Module:
    cfg = load_cfg("yolov5-spd.yaml")
    cfg.update(nc=3, depth_multiple=0.33, width_multiple=0.125)
    torch.manual_seed(0)
    return randomize_bn(nostride.create_model("yolov5", cfg=cfg)).eval()


def _expected(model: torch.nn.Module, x: torch.Tensor) -> list[np.ndarray]:
    with torch.no_grad():
        return [t.numpy() for t in output_tensors(model(x))]


# ------------------------------------------------------------------------------------ OpenVINO
@pytest.mark.parametrize(
    "build,shapes",
    [
        (tiny_resnet_spd, [(1, 3, 32, 32), (2, 3, 45, 37)]),  # dynamic: odd sizes too
        (tiny_yolov5_spd, [(1, 3, 64, 64), (2, 3, 96, 64)]),
    ],
)
@pytest.mark.slow
def test_openvino_runs_the_fused_dynamic_onnx(tmp_path, build, shapes):
    ov = pytest.importorskip("openvino")
    pytest.importorskip("onnxscript")
    from nostride.export import export_onnx

    model = build()
    path = export_onnx(model, tmp_path / "m.onnx", shapes[0], fuse=True, dynamic=True, check=False)
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    for shape in shapes:
        x = torch.rand(*shape)
        result = compiled({0: x.numpy()})
        got = [result[out] for out in compiled.outputs]
        for g, e in zip(got, _expected(model, x)):
            np.testing.assert_allclose(g, e, rtol=1e-3, atol=2e-3)


# ------------------------------------------------------------------------------------ ncnn (pnnx)
def _ncnn_run(param, weights, x: torch.Tensor, n_outputs: int) -> list[np.ndarray]:
    import ncnn

    net = ncnn.Net()
    # float32 throughout, to compare with PyTorch (ncnn defaults to fp16 storage where it can)
    net.opt.use_fp16_packed = net.opt.use_fp16_storage = net.opt.use_fp16_arithmetic = False
    net.opt.use_bf16_storage = False
    net.opt.use_winograd_convolution = False  # float32 Winograd is off by ~1e-3 relative
    net.load_param(str(param))
    net.load_model(str(weights))
    outs = []
    for image in x:  # ncnn runs one image (C, H, W) at a time
        ex = net.create_extractor()
        ex.input("in0", ncnn.Mat(image.numpy()).clone())
        outs.append([np.array(ex.extract(f"out{i}")[1]) for i in range(n_outputs)])
    return [np.stack(o) for o in zip(*outs)]


@pytest.mark.parametrize("shape", [(1, 3, 32, 32), (1, 3, 33, 47)])
@pytest.mark.slow
def test_ncnn_via_pnnx_fused_classifier(tmp_path, shape):
    pnnx = pytest.importorskip("pnnx")
    pytest.importorskip("ncnn")
    model = nostride.fuse(tiny_resnet_spd())
    x = torch.rand(1, 3, 32, 32)
    pnnx.export(model, str(tmp_path / "m.pt"), (x,), fp16=False)  # float32 weights
    param = (tmp_path / "m.ncnn.param").read_text()
    # one Convolution per fused SPD-Conv, its odd-size padding in the conv's own pads
    assert not any(op in param for op in ("Reorg", "PixelShuffle", "Permute", "Reshape", "Padding"))
    y = torch.rand(*shape)
    (got,) = _ncnn_run(tmp_path / "m.ncnn.param", tmp_path / "m.ncnn.bin", y, 1)
    np.testing.assert_allclose(got.reshape(1, -1), _expected(model, y)[0], rtol=1e-3, atol=1e-4)


@pytest.mark.slow
def test_ncnn_via_pnnx_fused_detector_raw_maps(tmp_path):
    pnnx = pytest.importorskip("pnnx")
    pytest.importorskip("ncnn")
    model = nostride.fuse(tiny_yolov5_spd())

    class RawMaps(torch.nn.Module):
        """The three head convolutions' outputs (box decoding stays on the host, as usual with ncnn)."""

        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            detect, y = self.net.detect, []
            feats = []
            for m in self.net.model[:-1]:
                if m.f != -1:
                    x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
                x = m(x)
                y.append(x if m.i in self.net.save else None)
            feats = [y[j] for j in detect.f]
            return tuple(conv(f) for conv, f in zip(detect.m, feats))

    wrapped = RawMaps(model).eval()
    x = torch.rand(1, 3, 64, 64)
    pnnx.export(wrapped, str(tmp_path / "d.pt"), (x,), fp16=False)
    param = (tmp_path / "d.ncnn.param").read_text()
    assert not any(op in param for op in ("Reorg", "PixelShuffle", "Permute", "Reshape", "Padding"))
    got = _ncnn_run(tmp_path / "d.ncnn.param", tmp_path / "d.ncnn.bin", x, 3)
    for g, e in zip(got, _expected(wrapped, x)):
        np.testing.assert_allclose(g, e, rtol=1e-3, atol=1e-3)


@pytest.mark.slow
def test_benchmark_ncnn_form():
    pytest.importorskip("pnnx")
    pytest.importorskip("ncnn")
    from nostride.benchmark import benchmark

    report = benchmark([("r18_spd", tiny_resnet_spd())], img_size=32, forms=["ncnn"], repeats=2, warmup=1)
    (row,) = report.rows
    assert row.error is None and row.latency_ms > 0
