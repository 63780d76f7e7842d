"""YOLOv5 v6.0's exact input tensors: validation, prediction and training images, pixel for pixel.

The expected values in ``tests/data/yolov5_v6_pixels/`` were made by running the reference code
(ultralytics/yolov5 at tag v6.0, outside this repository) on the same hand-built images
(``tests/yolov5_pixels_images.py``) and on the first 16 coco128 train images:
``tests/data/yolov5_v6_pixels/make_expected.py`` says exactly how. Each tensor is compared by its
SHA-256 (with shape and sum, so a failure says how far off it is).

``expected-opencv-4.5.4.json`` is YOLOv5 v6.0 in its own environment (NumPy 1.21, OpenCV 4.5.4):
the reference for everything but the warps. OpenCV's ``warpAffine`` rounds a few pixels
differently between versions, so random perspective and mosaics are compared exactly with the
file made by the same reference code under the installed OpenCV version, and only closely (mean
difference under 0.02 levels) with the 4.5.4 file. (The file made under NumPy 2 also shows the
reference's own rectangular batches changing with the NumPy version for images of equal aspect
ratio; nostride follows the order of NumPy's classic sort, the one v6.0 ran with.)
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from nostride.data.detection import DetectionDataset
from nostride.data.detection.augment import apply_hsv_gains, random_perspective
from nostride.data.detection.image import load_image
from nostride.data.detection.train_dataset import DetectionTrainDataset
from nostride.data.detection.val_loader import LetterboxDataset
from nostride.tasks.detect.sources import LetterboxedImages
from yolov5_pixels_images import DATASET_IMAGES, PREDICT_ONLY_IMAGES, pattern, write_images

DATA = Path(__file__).parent / "data" / "yolov5_v6_pixels"
EXPECTED = json.loads((DATA / "expected-opencv-4.5.4.json").read_text())
_SAME_OPENCV = DATA / f"expected-opencv-{cv2.__version__}.json"
EXPECTED_WARPS = json.loads(_SAME_OPENCV.read_text()) if _SAME_OPENCV.is_file() else None
HYP = {"hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.4, "degrees": 10.0, "translate": 0.1, "scale": 0.5, "shear": 2.0,
       "perspective": 0.0, "flipud": 0.0, "fliplr": 0.5, "mosaic": 1.0, "mixup": 0.0}


def _digest(img: torch.Tensor) -> dict:
    a = np.ascontiguousarray(img.numpy())
    return {"shape": list(a.shape), "sha256": hashlib.sha256(a.tobytes()).hexdigest(), "sum": int(a.sum(dtype=np.int64))}


def _same(img: torch.Tensor, expected: dict, what: str) -> None:
    got = _digest(img)
    want = {k: expected[k] for k in ("shape", "sha256", "sum")}
    assert got == want, f"{what}: got shape {got['shape']} sum {got['sum']}, reference {want['shape']} sum {want['sum']}"


def _warp_matches(img: torch.Tensor, i: int, section: str, what: str) -> None:
    """Exactly the reference under this OpenCV (when recorded); close to it under OpenCV 4.5.4."""
    if EXPECTED_WARPS is not None:
        _same(img, EXPECTED_WARPS[section][i], what)
    period = EXPECTED[section][i]
    assert list(img.shape) == period["shape"]
    assert abs(int(img.sum(dtype=torch.int64)) - period["sum"]) / img.numel() < 0.02, what


@pytest.fixture(scope="module")
def hand(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hand")
    write_images(root, DATASET_IMAGES)
    return root


@pytest.fixture(scope="module")
def coco16(tmp_path_factory, shared_data) -> Path:
    src = shared_data / "coco128"
    if not src.is_dir():
        pytest.skip("coco128 not present")
    root = tmp_path_factory.mktemp("coco16")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    for f in sorted((src / "images" / "train2017").glob("*.jpg"))[:16]:
        shutil.copy(f, root / "images" / f.name)
        lab = src / "labels" / "train2017" / f"{f.stem}.txt"
        if lab.is_file():
            shutil.copy(lab, root / "labels" / lab.name)
    return root


def _check_val(root: Path, key: str, size: int) -> None:
    want = EXPECTED["val"][key]
    ds = DetectionDataset(root / "images", cache=False, verbose=False, workers=1)
    items = LetterboxDataset(ds, img_size=size, batch_size=4, stride=32, pad=0.5, rect=True)
    assert items.batch_shapes.tolist() == want["batch_shapes"]
    assert len(items) == len(want["items"])
    for j in range(len(items)):
        img, labels, path, shapes = items[j]
        exp = want["items"][Path(path).name]
        _same(img, exp, f"{key} {Path(path).name}")
        (h0, w0), ((rh, rw), (pw, ph)) = shapes
        np.testing.assert_allclose([h0, w0, rh, rw, pw, ph], exp["shapes"], atol=1e-4)
        np.testing.assert_allclose(labels[:, 1:].numpy(), np.array(exp["labels"]).reshape(-1, 5), atol=2e-4)


@pytest.mark.parametrize("size", [320, 416, 640])
def test_validation_tensors_equal_the_reference_on_hand_built_images(hand, size):
    """Integer (1/2, 1/4) and non-integer shrinks, enlargements, portrait / landscape, odd and thin
    sizes, in rectangular batches of 4: the letterboxed tensors, canvases and labels of ``val.py``."""
    _check_val(hand, f"hand/{size}", size)


@pytest.mark.data
@pytest.mark.parametrize("size", [320, 416, 640])
def test_validation_tensors_equal_the_reference_on_coco_jpegs(coco16, size):
    """Real JPEGs (decoding included): the 640x425-to-320x212 kind of shrink that moved mAP."""
    _check_val(coco16, f"coco16/{size}", size)


@pytest.mark.parametrize("size", [320, 640])
def test_prediction_tensors_equal_detect_py(tmp_path, size):
    """One image per batch: ``detect.py``'s minimal-rectangle letterbox of the original image,
    1-pixel-thin images included (where the reference itself fails, nostride still gives a tensor)."""
    write_images(tmp_path, {**DATASET_IMAGES, **PREDICT_ONLY_IMAGES}, labels=False)
    files = sorted((tmp_path / "images").glob("*.png"))
    data = LetterboxedImages([(f.name, f) for f in files], size, 32, auto=True)
    for i, f in enumerate(files):
        name, _, img, _, _, err = data[i]
        assert err is None
        exp = EXPECTED["predict"][str(size)][f.name]
        if "error" in exp:  # OpenCV 4.5.4 refused this 1x1 image; later versions resize it
            assert EXPECTED_WARPS is None or "error" not in EXPECTED_WARPS["predict"][str(size)][f.name]
            exp = (EXPECTED_WARPS or {}).get("predict", {}).get(str(size), {}).get(f.name)
            if exp is None:
                continue
        _same(img, exp, f"predict {f.name} at {size}")


def test_training_load_shrinks_with_inter_linear_as_the_reference(hand):
    for f in sorted((hand / "images").glob("*.png")):
        img, _, _ = load_image(f, 320, augment=True)
        _same(img, EXPECTED["train_load"][f.name], f"train load {f.name}")


def _base() -> tuple[torch.Tensor, torch.Tensor]:
    img = torch.from_numpy(np.ascontiguousarray(pattern(333, 517, 5)[:, :, ::-1].transpose(2, 0, 1)))
    labels = torch.tensor([[0, 100.0, 80.0, 300.0, 250.0], [1, 10.0, 10.0, 60.0, 40.0], [2, 400.0, 200.0, 510.0, 330.0]],
                          dtype=torch.float64)
    return img, labels


def test_random_perspective_equals_the_reference():
    img, labels = _base()
    for exp in EXPECTED["perspective"]:
        random.seed(exp["seed"])
        out, lab = random_perspective(img, labels, degrees=10, translate=0.1, scale=0.5, shear=2,
                                      perspective=exp["perspective"])
        _warp_matches(out, EXPECTED["perspective"].index(exp), "perspective", f"random_perspective seed {exp['seed']}")
        np.testing.assert_allclose(lab.numpy(), np.array(exp["labels"]).reshape(-1, 5), atol=2e-4)


def test_hsv_jitter_equals_the_reference():
    img, _ = _base()
    for exp in EXPECTED["hsv"]:
        _same(apply_hsv_gains(img, tuple(exp["gains"])), exp, f"augment_hsv gains {exp['gains']}")


def test_mosaic_equals_the_reference(hand):
    """The same random draws give the reference's mosaic (four images, INTER_LINEAR loads,
    rotation, shear, scale, translation), pixel for pixel, and its labels."""
    index = DetectionDataset(hand / "images", cache=False, verbose=False, workers=1)
    ds = DetectionTrainDataset(index, 320, hyp=HYP, augment=True, verbose=False)
    for exp in EXPECTED["mosaic"]:
        random.seed(exp["seed"])
        img, labels = ds.load_mosaic(exp["index"])
        _warp_matches(img, EXPECTED["mosaic"].index(exp), "mosaic", f"mosaic seed {exp['seed']}")
        np.testing.assert_allclose(labels.numpy(), np.array(exp["labels"]).reshape(-1, 5), atol=2e-3)
