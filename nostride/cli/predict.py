"""``nostride predict``: run a trained model on images (the task comes from the checkpoint)."""

from __future__ import annotations

import argparse
import importlib

from nostride.utils import bounds

from . import batch_size_arg, img_size_arg, int_arg, max_det_arg, path_arg, probability_arg


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="predict classes (classifiers) or boxes (detectors) for images",
        description="Run a checkpoint on an image or a folder of images. The task (classify or detect) "
        "is read from the checkpoint.",
    )
    p.add_argument("--weights", required=True, type=path_arg,
                   help="nostride checkpoint (.pt), a model exported by nostride export (.onnx, .torchscript), or a "
                   "YOLOv5 / YOLOv5-SPD .pt")
    p.add_argument("--source", required=True, type=path_arg,
                   help="an image file, a folder of images (video frames: in natural order, frame2 before frame10) "
                   "or, for detectors, a video file (.mp4, .avi, .mov, .mkv, ...)")
    p.add_argument("--img-size", type=img_size_arg, default=None, help="inference size (default: the model's training size)")
    p.add_argument("--device", default="", help="cpu, cuda, cuda:N or mps (default: cuda if available)")
    p.add_argument("--batch-size", type=batch_size_arg, default=16, help="images per forward pass")
    g = p.add_argument_group("classification")
    g.add_argument("--topk", type=int_arg(1, 1000), default=5, help="how many classes to print per image")
    g = p.add_argument_group("detection")
    g.add_argument("--conf", type=probability_arg, default=0.25, help="confidence threshold")
    g.add_argument("--iou", type=probability_arg, default=0.45, help="NMS IoU threshold")
    g.add_argument("--max-det", type=max_det_arg, default=300, help="maximum detections per image")
    g.add_argument("--agnostic-nms", action="store_true", help="class-agnostic NMS")
    g.add_argument("--classes", type=int_arg(0, bounds.MAX_CLASSES - 1), nargs="+", default=None, metavar="N",
                   help="keep only these class indices, e.g. --classes 0 2 (default: all)")
    g.add_argument("--save-txt", action="store_true",
                   help="also write labels/NAME.txt per image: YOLO rows 'class x y w h conf' (fractions of the image)")
    g.add_argument("--line-width", type=int_arg(1, 100), default=None,
                   help="box line width in pixels (default: grows with the image, 1 below ~500 px)")
    g.add_argument("--hide-labels", action="store_true", help="draw boxes without labels")
    g.add_argument("--hide-conf", action="store_true", help="labels without the confidence")
    g = p.add_argument_group("output")
    g.add_argument("--project", default="runs/predict", type=path_arg, help="output folder root")
    g.add_argument("--name", default="exp", type=path_arg, help="output run name: PROJECT/NAME (NAME2, ... if it exists)")
    g.add_argument("--no-save", action="store_true",
                   help="write nothing (default: classifiers save predictions.json and predictions.csv, detectors "
                   "annotated images and predictions.json, to PROJECT/NAME)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nostride.checkpoint import open_weights

    ckpt = open_weights(args.weights)  # a checkpoint, an exported model or a YOLOv5 .pt
    task = ckpt.get("task")
    if task not in ("classify", "detect"):
        raise ValueError(f"{args.weights}: checkpoint has unknown task {task!r}")
    module = importlib.import_module(f"nostride.tasks.{task}.predict")
    return module.run_cli(args, ckpt)
