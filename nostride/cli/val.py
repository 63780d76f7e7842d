"""``nostride val``: evaluate a checkpoint on a dataset split (the task comes from the checkpoint)."""

from __future__ import annotations

import argparse

from nostride.utils import bounds

from . import batch_size_arg, img_size_arg, int_arg, max_det_arg, path_arg, probability_arg, workers_arg


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "val",
        help="evaluate a checkpoint (classifiers: top-1/top-5; detectors: mAP, AP by object size, COCO)",
        description="Evaluate a trained checkpoint. Classifiers: on the test split or on the validation split "
        "carved from train at training time (same val_fraction and seed, read from the checkpoint). "
        "Detectors (a nostride checkpoint or a YOLOv5 .pt): on a dataset YAML's val/test split, with "
        "YOLOv5's metrics, AP by object size and, for COCO data, pycocotools. "
        "Writes metrics.json and plots to PROJECT/NAME. See docs/evaluation.md.",
    )
    p.add_argument("--weights", required=True, type=path_arg,
                   help="nostride checkpoint (.pt), a model exported by nostride export (.onnx, .torchscript), or a "
                   "YOLOv5 .pt for detection")
    p.add_argument("--data", default=None, type=path_arg, help="dataset path (default: the training data the checkpoint records)")
    p.add_argument("--split", choices=("test", "val", "train"), default=None,
                   help="classifiers: test = the dataset's own test split, val = the held-out part of train used "
                   "during training; detectors: the dataset YAML's split (default for both: test if the dataset has "
                   "one, else val, as nostride compare scores)")
    p.add_argument("--batch-size", type=batch_size_arg, default=None,
                   help="images per forward pass (default: 128 for classifiers, 32 for detectors)")
    p.add_argument("--img-size", type=img_size_arg, default=None, help="evaluation size (default: the training size)")
    p.add_argument("--device", default="", help="cpu, cuda, cuda:N or mps (default: cuda if available)")
    p.add_argument("--workers", type=workers_arg, default=None, help="data-loading worker processes (default: the available CPUs, at most 8)")
    p.add_argument("--max-per-class", type=int_arg(0, bounds.MAX_COUNT), default=None,
                   help="evaluate the first N images of each class; 0 = every image (default: as the training "
                   "run, which the checkpoint records)")
    p.add_argument("--project", default="runs/val", type=path_arg, help="output folder root")
    p.add_argument("--name", default="exp", type=path_arg, help="run name: results go to PROJECT/NAME (NAME2, ... if it exists)")
    p.add_argument("--exist-ok", action="store_true", help="reuse PROJECT/NAME if it exists")
    g = p.add_argument_group("detection")
    g.add_argument("--conf", type=probability_arg, default=0.001, help="confidence threshold of NMS (default: 0.001)")
    g.add_argument("--iou", type=probability_arg, default=0.6, help="NMS IoU threshold (default: 0.6)")
    g.add_argument("--max-det", type=max_det_arg, default=300, help="most detections per image (default: 300)")
    g.add_argument("--single-cls", action="store_true", help="score every object as one class")
    g.add_argument("--save-json", action="store_true",
                   help="write predictions.json in COCO results format (always on for COCO data)")
    g.add_argument("--half", action="store_true", help="float16 inference (CUDA only)")
    g.add_argument("--no-plots", action="store_true", help="do not write the PR / F1 / confusion / size plots")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nostride.checkpoint import open_weights

    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.workers is not None and args.workers < 0:
        raise ValueError(f"--workers must be >= 0, got {args.workers}")
    if args.max_per_class is not None and args.max_per_class < 0:
        raise ValueError(f"--max-per-class must be >= 0 (0 = every image), got {args.max_per_class}")
    ckpt = open_weights(args.weights)  # a checkpoint, an exported model or a YOLOv5 .pt
    task = ckpt.get("task") or "detect"
    if task == "detect":
        from nostride.tasks.detect.evaluate import run_cli as run_detect

        return run_detect(args, ckpt)
    if args.batch_size is None:
        args.batch_size = 128
    if args.split == "train":
        raise ValueError("--split train is for detection datasets; classifiers are evaluated on test or val")
    if task != "classify":
        raise ValueError(f"{args.weights}: checkpoint has unknown task {task!r}")
    from nostride.tasks.classify.evaluate import run_cli

    return run_cli(args, ckpt)
