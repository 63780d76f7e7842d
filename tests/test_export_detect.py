"""Detector exports checked in ONNX Runtime on a real image: raw outputs, boxes after NMS, NMS in the graph."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import nostride
from nostride.data.io import read_image_rgb
from nostride.export import export_onnx
from nostride.models.yolo import load_cfg
from nostride.tasks.detect import letterbox, non_max_suppression
from nostride.tasks.detect.graph_nms import DetectorWithNMS

from conftest import SHARED_DATA
from helpers import randomize_bn

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
onnxruntime = pytest.importorskip("onnxruntime")

IMAGE = SHARED_DATA / "coco128" / "images" / "train2017" / "000000000009.jpg"


def tiny_spd_detector() -> torch.nn.Module:
    """YOLOv5-SPD (released layout) at 1/8 width, random weights that still give boxes above 0.25."""
    cfg = load_cfg("yolov5-spd.yaml")
    cfg.update(depth_multiple=0.33, width_multiple=0.125)
    torch.manual_seed(0)
    model = randomize_bn(nostride.create_model("yolov5", cfg=cfg)).eval()
    with torch.no_grad():
        for conv in model.detect.m:  # untrained priors give no box above any useful threshold
            conv.bias.view(model.detect.na, -1)[:, 4:] += 5
    return model


class TieBreak(torch.nn.Module):
    """Adds ``1e-6 * box index`` to the objectness of ``model``'s decoded output.

    An untrained model is translation-equivariant over flat image regions: many boxes get exactly
    equal confidences, and which of two equal, overlapping boxes NMS keeps is arbitrary (it
    differs between torchvision and ONNX Runtime). Runtimes agree on the outputs to ~1e-7, so
    this offset (larger, and the same in both) makes the expected NMS result unique.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        decoded, raw = self.model(x)
        offset = torch.arange(decoded.shape[1], dtype=decoded.dtype, device=decoded.device) * 1e-6
        return torch.cat((decoded[..., :4], decoded[..., 4:5] + offset[:, None], decoded[..., 5:]), -1), raw


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    if not IMAGE.is_file():
        pytest.skip(f"coco128 not found at {IMAGE}")
    img0 = read_image_rgb(IMAGE)  # 480x640
    # a square crop, letterboxed without padding: flat padding would give an untrained model
    # many boxes of exactly equal confidence, whose NMS order is then arbitrary in any runtime
    side = min(img0.shape[-2:])
    img, _, _ = letterbox(img0[:, :side, :side], 160, auto=False, stride=32)
    return (img.float() / 255)[None]


def _run(path, x: torch.Tensor) -> list[np.ndarray]:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})


CONF = 0.25


def _unmatched(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rows of ``a`` (x1, y1, x2, y2, conf, cls) with no row of ``b`` of the same class within
    0.02 px and 1e-4 confidence."""
    if not len(b):
        return a
    close = (np.abs(a[:, None, :4] - b[None, :, :4]).max(-1) < 0.02) & (np.abs(a[:, None, 4] - b[None, :, 4]) < 1e-4)
    return a[~(close & (a[:, None, 5] == b[None, :, 5])).any(1)]


def assert_same_detections(got: np.ndarray, expected: torch.Tensor) -> None:
    """The same boxes, up to float32 noise; a box whose confidence is within 1e-4 of the
    threshold may fall on either side of it in another runtime."""
    expected = expected.numpy()
    assert len(expected) > 20
    for extra in (_unmatched(got, expected), _unmatched(expected, got)):
        assert (np.abs(extra[:, 4] - CONF) < 1e-4).all(), extra


@pytest.mark.slow
def test_fused_detector_onnx_on_a_real_image(tmp_path, image):
    model = tiny_spd_detector()
    path = export_onnx(model, tmp_path / "det.onnx", tuple(image.shape), fuse=True)
    decoded, *raw = _run(path, image)
    with torch.no_grad():
        expected_decoded, expected_raw = model(image)
    np.testing.assert_allclose(decoded, expected_decoded.numpy(), rtol=1e-4, atol=2e-3)
    for got, want in zip(raw, expected_raw):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-4)
    tie_break = torch.arange(decoded.shape[1]) * 1e-6  # see TieBreak
    decoded = torch.from_numpy(decoded)
    decoded[..., 4] += tie_break
    expected_decoded[..., 4] += tie_break
    ours = non_max_suppression(decoded, conf_thres=CONF)[0]
    assert_same_detections(ours.numpy(), non_max_suppression(expected_decoded, conf_thres=CONF)[0])


@pytest.mark.slow
def test_detector_with_nms_matches_python_nms(image):
    model = TieBreak(tiny_spd_detector())
    batch = torch.cat([image, image.flip(-1)])
    with torch.no_grad():
        got = DetectorWithNMS(model, conf_thres=CONF, max_det=50)(batch)
        expected = non_max_suppression(model(batch), conf_thres=CONF, max_det=50)
    for i, want in enumerate(expected):
        mine = got[got[:, 0] == i, 1:]
        assert len(want) == 50  # the cap was reached
        torch.testing.assert_close(mine, want, rtol=0, atol=1e-3)


@pytest.mark.parametrize("dynamic", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_onnx_with_nms_in_the_graph(tmp_path, image, dynamic):
    model = TieBreak(nostride.fuse(tiny_spd_detector()))
    wrapped = DetectorWithNMS(model, conf_thres=CONF)
    path = export_onnx(wrapped, tmp_path / "nms.onnx", tuple(image.shape), dynamic=dynamic, check=False)
    inputs = [image] if not dynamic else [image, torch.cat([image, image.flip(-1)])[..., :128]]
    for x in inputs:
        (got,) = _run(path, x)
        with torch.no_grad():
            expected = non_max_suppression(model(x), conf_thres=CONF)
        for i, want in enumerate(expected):
            assert_same_detections(got[got[:, 0] == i, 1:], want)
