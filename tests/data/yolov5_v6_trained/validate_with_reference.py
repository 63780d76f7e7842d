"""Validate a YOLOv5 checkpoint with YOLOv5 v6.0's own ``val.py`` and store its numbers (``expected.json``).

Not part of nostride and not run by the tests: it imports the reference code (ultralytics/yolov5
at tag v6.0, GPL-3.0, never copied into this repository) from a checkout outside it; see the
README beside it for the whole recipe.

    /tmp/y5venv/bin/python tests/data/yolov5_v6_trained/validate_with_reference.py --yolov5 /tmp/yolov5 \\
        --weights tests/data/yolov5_v6_trained/yolov5p_coco16.pt --data /tmp/coco16/coco16.yaml --img-size 128
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--yolov5", required=True)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--img-size", type=int, required=True)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--conf", type=float, default=0.001)
    ap.add_argument("--iou", type=float, default=0.6)
    args = ap.parse_args()
    sys.path.insert(0, str(Path(args.yolov5).resolve()))
    import val  # noqa: E402  (YOLOv5 v6.0)

    (mp, mr, map50, map_, *_), maps, _ = val.run(data=args.data, weights=args.weights, batch_size=args.batch_size,
                                                 imgsz=args.img_size, conf_thres=args.conf, iou_thres=args.iou,
                                                 task="val", device="cpu", plots=False,
                                                 project=tempfile.mkdtemp(prefix="y5val-"))
    out = {"options": {"img_size": args.img_size, "batch_size": args.batch_size, "conf": args.conf, "iou": args.iou},
           "reference": "ultralytics/yolov5 v6.0 (956be8e) val.run",
           "precision": mp, "recall": mr, "mAP50": map50, "mAP50-95": map_}
    (HERE / "expected.json").write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
