"""Make ``expected.json``: YOLOv5 v6.0's own tensors for the hand-built test images.

Not part of nostride and not run by the tests: it imports the reference code (ultralytics/yolov5
at tag v6.0, GPL-3.0, never copied into this repository) from a checkout outside it, calls its
loaders on the images ``tests/yolov5_pixels_images.py`` builds, and stores digests (shape,
SHA-256 of the uint8 CHW RGB bytes, sum) of what they return. How the stored file was made::

    git --git-dir=<yolov5 mirror> worktree add /tmp/yolov5 v6.0
    python3.9 -m venv /tmp/y5venv
    /tmp/y5venv/bin/pip install torch==1.10.2 torchvision==0.11.3 numpy==1.21.6 \\
        opencv-python-headless==4.5.4.60 matplotlib==3.5.3 scipy==1.7.3 pandas==1.3.5 seaborn==0.11.2 \\
        PyYAML==6.0 tqdm requests Pillow==9.0.1 tensorboard==2.8.0 protobuf==3.20.3
    /tmp/y5venv/bin/python tests/data/yolov5_v6_pixels/make_expected.py --yolov5 /tmp/yolov5 \\
        --coco128 ../shared/data/coco128
    # the same reference code under nostride's own (newer) OpenCV and NumPy:
    PYTHONPATH=. python tests/data/yolov5_v6_pixels/make_expected.py --yolov5 /tmp/yolov5 \\
        --coco128 ../shared/data/coco128 --stub-missing

Each run writes ``expected-opencv-<version>.json``. OpenCV's ``warpAffine`` rounds a few pixels
differently between 4.5 and 5.x (resize, padding, colour conversion and lookup tables agree), so the
warps and mosaics are recorded per OpenCV version.

What is recorded (see ``tests/test_yolov5_pixels.py`` for the nostride side of each):

* ``val``: ``LoadImagesAndLabels(rect=True, pad=0.5, augment=False)`` items at 320, 416 and 640
  (batch size 4), for the hand-built images and the first 16 coco128 train images (JPEG);
* ``predict``: ``LoadImages(auto=True)`` (``detect.py``) tensors at 320 and 640, including
  1-pixel-thin images;
* ``train_load``: ``load_image`` of an augmenting dataset (``INTER_LINEAR`` shrinks) at 320;
* ``perspective`` / ``hsv`` / ``mosaic``: ``random_perspective``, ``augment_hsv`` and
  ``load_mosaic`` with seeded random draws.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import sys
import tempfile
import types
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SIZES = (320, 416, 640)
HYP = {"hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.4, "degrees": 10.0, "translate": 0.1, "scale": 0.5, "shear": 2.0,
       "perspective": 0.0, "flipud": 0.0, "fliplr": 0.5, "mosaic": 1.0, "mixup": 0.0, "copy_paste": 0.0}


def digest(chw) -> dict:
    a = np.ascontiguousarray(np.asarray(chw))
    return {"shape": list(a.shape), "sha256": hashlib.sha256(a.tobytes()).hexdigest(), "sum": int(a.sum(dtype=np.int64))}


def bgr_to_chw_rgb(im: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(im[:, :, ::-1].transpose(2, 0, 1))


def rows(a) -> list:
    return np.round(np.asarray(a, dtype=np.float64), 4).tolist()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--yolov5", required=True, help="checkout of ultralytics/yolov5 at tag v6.0")
    ap.add_argument("--coco128", required=True, help="coco128 (its first 16 train images are used)")
    ap.add_argument("--stub-missing", action="store_true",
                    help="run in nostride's environment: stub the modules the reference imports but these paths "
                         "do not use (benchmarks/yolov5_val_crosscheck.py)")
    args = ap.parse_args()
    if args.stub_missing:
        sys.path.insert(0, str(HERE.parents[2] / "benchmarks"))
        from yolov5_val_crosscheck import _stub_reference_imports

        _stub_reference_imports()
    sys.path.insert(0, str(Path(args.yolov5).resolve()))
    sys.path.insert(0, str(HERE.parents[1]))  # tests/: the shared image builder
    import cv2
    from utils.augmentations import augment_hsv, random_perspective
    from utils.datasets import LoadImages, LoadImagesAndLabels, load_image, load_mosaic

    import yolov5_pixels_images as hb

    tmp = Path(tempfile.mkdtemp(prefix="y5pixels-"))
    hand = tmp / "hand"
    hb.write_images(hand, hb.DATASET_IMAGES)
    coco = tmp / "coco16"
    (coco / "images").mkdir(parents=True)
    (coco / "labels").mkdir(parents=True)
    src = Path(args.coco128)
    for f in sorted((src / "images" / "train2017").glob("*.jpg"))[:16]:
        shutil.copy(f, coco / "images" / f.name)
        lab = src / "labels" / "train2017" / f"{f.stem}.txt"
        if lab.is_file():
            shutil.copy(lab, coco / "labels" / lab.name)
    out: dict = {"reference": "ultralytics/yolov5 v6.0 (956be8e)", "opencv": cv2.__version__, "numpy": np.__version__,
                 "val": {}, "predict": {}, "train_load": {}, "perspective": [], "hsv": [], "mosaic": []}

    for set_name, root in (("hand", hand), ("coco16", coco)):
        for size in SIZES:
            ds = LoadImagesAndLabels(str(root / "images"), size, 4, augment=False, hyp=None, rect=True, stride=32,
                                     pad=0.5, prefix="")
            items = {}
            for i in range(len(ds)):
                img, labels, path, shapes = ds[i]
                items[Path(path).name] = {**digest(img.numpy()), "labels": rows(labels.numpy()[:, 1:]),
                                          "shapes": rows([*shapes[0], *shapes[1][0], *shapes[1][1]])}
            out["val"][f"{set_name}/{size}"] = {"batch_shapes": np.asarray(ds.batch_shapes).tolist(), "items": items}

    pred = tmp / "predict"
    hb.write_images(pred, {**hb.DATASET_IMAGES, **hb.PREDICT_ONLY_IMAGES}, labels=False)
    for size in (320, 640):
        items = {}
        for f in sorted((pred / "images").glob("*.png")):
            try:  # one file at a time: the reference fails on some 1-pixel-wide images
                _, img, _, _ = next(iter(LoadImages(str(f), img_size=size, stride=32, auto=True)))
                items[f.name] = digest(img)
            except cv2.error as e:
                items[f.name] = {"error": str(e).strip().splitlines()[-1]}
        out["predict"][str(size)] = items

    files = sorted(str(p) for p in (hand / "images").glob("*.png"))
    fake = types.SimpleNamespace(imgs=[None] * len(files), img_npy=[None] * len(files), img_files=files,
                                 img_size=320, augment=True)
    for i, f in enumerate(files):
        im, _, _ = load_image(fake, i)
        out["train_load"][Path(f).name] = digest(bgr_to_chw_rgb(im))

    base = hb.pattern(333, 517, 5)  # BGR
    targets = np.array([[0, 100.0, 80.0, 300.0, 250.0], [1, 10.0, 10.0, 60.0, 40.0], [2, 400.0, 200.0, 510.0, 330.0]])
    for seed, persp in ((0, 0.0), (1, 0.0), (2, 0.0), (3, 0.0005)):
        random.seed(seed)
        im, t = random_perspective(base.copy(), targets.copy(), degrees=10, translate=0.1, scale=0.5, shear=2,
                                   perspective=persp)
        out["perspective"].append({"seed": seed, "perspective": persp, **digest(bgr_to_chw_rgb(im)), "labels": rows(t)})
    for seed in range(3):
        np.random.seed(seed)
        gains = (np.random.uniform(-1, 1, 3) * [HYP["hsv_h"], HYP["hsv_s"], HYP["hsv_v"]] + 1).tolist()
        np.random.seed(seed)
        im = base.copy()
        augment_hsv(im, HYP["hsv_h"], HYP["hsv_s"], HYP["hsv_v"])
        out["hsv"].append({"gains": gains, **digest(bgr_to_chw_rgb(im))})
    ds = LoadImagesAndLabels(str(hand / "images"), 320, 4, augment=True, hyp=HYP, rect=False, stride=32, pad=0.0,
                             prefix="")
    for seed, index in ((0, 0), (1, 3), (2, 7)):
        random.seed(seed)
        im, labels = load_mosaic(ds, index)
        out["mosaic"].append({"seed": seed, "index": index, **digest(bgr_to_chw_rgb(im)), "labels": rows(labels)})

    dest = HERE / f"expected-opencv-{cv2.__version__}.json"
    dest.write_text(json.dumps(out, separators=(",", ":")) + "\n")
    shutil.rmtree(tmp)
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
