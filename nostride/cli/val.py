"""``nostride val``: evaluate a checkpoint on a dataset split (the task comes from the checkpoint)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "val",
        help="evaluate a checkpoint (top-1/top-5, per-class accuracy, confusion matrix)",
        description="Evaluate a trained checkpoint on the test split or on the validation split carved "
        "from train at training time (same val_fraction and seed, read from the checkpoint). "
        "Writes metrics.json and plots to PROJECT/NAME. See docs/evaluation.md.",
    )
    p.add_argument("--weights", required=True, help="nostride checkpoint (.pt)")
    p.add_argument("--data", default=None, help="dataset path (default: the training data the checkpoint records)")
    p.add_argument("--split", choices=("test", "val"), default=None,
                   help="test: the dataset's own test split; val: the held-out part of train used during "
                   "training (default: test if the dataset has one, else val)")
    p.add_argument("--batch-size", type=int, default=128, help="images per forward pass")
    p.add_argument("--img-size", type=int, default=None, help="evaluation size (default: the training size)")
    p.add_argument("--device", default="", help="cpu, cuda, cuda:N or mps (default: cuda if available)")
    p.add_argument("--workers", type=int, default=2, help="data-loading worker processes")
    p.add_argument("--max-per-class", type=int, default=None, help="evaluate only the first N images of each class (default: all)")
    p.add_argument("--project", default="runs/val", help="output folder root")
    p.add_argument("--name", default="exp", help="run name: results go to PROJECT/NAME (NAME2, ... if it exists)")
    p.add_argument("--exist-ok", action="store_true", help="reuse PROJECT/NAME if it exists")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nostride.checkpoint import load_checkpoint

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.workers < 0:
        raise ValueError(f"--workers must be >= 0, got {args.workers}")
    if args.max_per_class is not None and args.max_per_class < 1:
        raise ValueError(f"--max-per-class must be >= 1, got {args.max_per_class}")
    ckpt = load_checkpoint(args.weights)
    task = ckpt.get("task")
    if task == "detect":
        raise ValueError(f"{args.weights} is a detection checkpoint ({ckpt.get('model_name')}); detection "
                         "evaluation (mAP) is not available in this version of nostride")
    if task != "classify":
        raise ValueError(f"{args.weights}: checkpoint has unknown task {task!r}")
    from nostride.tasks.classify.evaluate import run_cli

    return run_cli(args, ckpt)
