"""Evaluate a classifier on a dataset: one inference pass, then :class:`ClassificationEvaluator`."""

from __future__ import annotations

import contextlib
import math
import sys
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ...utils.device import select_device
from ...utils.paths import increment_path
from .metrics import ClassificationEvaluator

__all__ = ["evaluate_classifier", "resolve_device", "validate_classifier"]

resolve_device = select_device  # the earlier name, kept for existing imports



def _num_outputs(model: nn.Module) -> int | None:
    """The class count: the model's ``num_classes`` (nostride, timm), else the outputs of its last
    linear or convolution layer (torchvision models, converted or not)."""
    n = getattr(model, "num_classes", None)
    if isinstance(n, int) and n > 0:
        return n
    last = None
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            last = m
    n = getattr(last, "out_features", None) or getattr(last, "out_channels", None)
    return int(n) if n else None


@torch.inference_mode()
def evaluate_classifier(
    model: nn.Module,
    dataset: Dataset | DataLoader,
    batch_size: int = 128,
    device: str | torch.device | None = None,
    workers: int | None = None,
    class_names: Sequence[str] | None = None,
    topk: Sequence[int] = (1, 5),
    amp: bool | None = None,
    progress: bool = True,
    desc: str = "val",
) -> dict[str, Any]:
    """Top-k accuracy, per-class accuracy, confusion matrix and mean loss of ``model`` on ``dataset``.

    Args:
        model: a classifier returning ``(N, C)`` logits; put in eval mode (and restored after).
        dataset: items ``(image_tensor, class_index)``, or a ready ``DataLoader`` of such batches
            (then ``batch_size`` / ``workers`` are ignored).
        batch_size: images per forward pass.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or ``None`` (best available).
        workers: DataLoader worker processes (0 = load in this process; None = the available CPUs, at most 8).
        class_names: names for the result (default: ``model.names`` when set).
        topk: accuracies to report (see :class:`ClassificationEvaluator`).
        amp: float16 autocast; ``None`` = on for CUDA, off elsewhere. Metrics are computed on
            float32 logits either way.
        progress: show a tqdm progress bar.
        desc: progress bar label.

    Returns:
        :meth:`ClassificationEvaluator.evaluate`'s dict (``top1``, ``top5``, ``loss``, ``per_class``,
        ``confusion``, ``count``, ...). Under ``torch.distributed`` the counts are summed over ranks.
    """
    from nostride.utils.progress import progress as progress_bar

    dev = select_device(device)
    if amp is None:
        amp = dev.type == "cuda"
    if class_names is None:
        class_names = getattr(model, "names", None)
    num_classes = len(class_names) if class_names is not None else _num_outputs(model)

    if isinstance(dataset, DataLoader):
        loader = dataset
    else:
        if len(dataset) == 0:
            raise ValueError("the evaluation dataset is empty")
        from nostride.utils.workers import default_workers

        workers = default_workers() if workers is None else workers
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                            pin_memory=dev.type == "cuda", persistent_workers=False)

    was_training = model.training
    model.eval().to(dev)
    evaluator: ClassificationEvaluator | None = None
    autocast = torch.autocast("cuda", dtype=torch.float16) if amp and dev.type == "cuda" else contextlib.nullcontext()
    try:
        for images, targets in progress_bar(loader, desc=desc, disable=not progress, unit="batch"):
            images = images.to(dev, non_blocking=True)
            targets = torch.as_tensor(targets).to(dev, non_blocking=True)
            with autocast:
                logits = model(images)
            if evaluator is None:
                n = num_classes or logits.shape[1]
                if logits.shape[1] != n:
                    raise ValueError(f"the model outputs {logits.shape[1]} classes but {n} class names were given")
                evaluator = ClassificationEvaluator(n, class_names=class_names, topk=topk)
            evaluator.process(logits.float(), targets)
    finally:
        model.train(was_training)
    if evaluator is None:  # an empty DataLoader (e.g. this rank's shard)
        evaluator = ClassificationEvaluator(num_classes or 1, class_names=class_names, topk=topk)
    return evaluator.evaluate()


# ---- `nostride val` for classification checkpoints -------------------------------------------

def _checkpoint_classes(ckpt: dict[str, Any], model: nn.Module) -> int:
    if ckpt.get("names"):
        return len(ckpt["names"])
    n = (ckpt.get("model_kwargs") or {}).get("num_classes") or _num_outputs(model)
    if not n:
        raise ValueError("the checkpoint's model has no classifier (no class count recorded and no final "
                         "linear or convolution layer); nothing to evaluate")
    return int(n)


def recorded_options_line(config: dict[str, Any], data_path: Any, img_size: Any, args: Any) -> str:
    """Which of the training run's options `nostride val` uses, and the flags that override them."""
    if not config:
        return "options: the checkpoint records no training options (not from nostride train); using the flags' values"
    used = [f"data={data_path}{' (--data)' if getattr(args, 'data', None) else ''}",
            f"img_size={img_size}{' (--img-size)' if getattr(args, 'img_size', None) else ''}"]
    cap = config.get("max_per_class")
    if getattr(args, "max_per_class", None) is not None:
        used.append(f"max_per_class={args.max_per_class or 'all'} (--max-per-class)")
    elif cap is not None:
        used.append(f"max_per_class={cap}")
    used += [f"val_fraction={config.get('val_fraction', 0.1)}", f"seed={config.get('seed', 0)}"]
    return ("options recorded in the checkpoint: " + ", ".join(used)
            + " (override with --data, --img-size, --max-per-class N; --max-per-class 0 = every image)")


def _split_subset(dataset: Dataset, max_per_class: int | None) -> Dataset:
    """The first ``max_per_class`` samples of each class of ``dataset`` (all when ``None``)."""
    if max_per_class is None:
        return dataset
    from torch.utils.data import Subset

    from ...data.classification import first_per_class

    return Subset(dataset, first_per_class(list(dataset.targets), max_per_class))



def format_per_class_table(metrics: dict[str, Any], max_rows: int = 30) -> str:
    """Per-class accuracy as a text table; with more than ``max_rows`` classes only the 10 worst and 10 best."""
    names = metrics.get("class_names") or [str(i) for i in range(len(metrics["per_class"]))]
    rows = list(zip(names, metrics["per_class_count"], metrics["per_class"]))
    note = ""
    if len(rows) > max_rows:
        ranked = sorted((r for r in rows if r[2] is not None), key=lambda r: r[2])
        rows = ranked[:10] + [("...", "", None)] + ranked[-10:]
        note = f"(the 10 worst and 10 best of {len(names)} classes; metrics.json lists all)"
    width = max(len("class"), len("all"), *(len(str(r[0])) for r in rows))
    lines = [f"{'class':<{width}}  {'images':>7}  {'top-1':>7}"]
    for name, count, acc in rows:
        shown = f"{acc:6.2f}%" if acc is not None else ("" if name == "..." else "    n/a")
        lines.append(f"{name:<{width}}  {count:>7}  {shown:>7}")
    top1 = metrics["top1"]
    lines.append(f"{'all':<{width}}  {metrics['count']:>7}  " + (f"{top1:6.2f}%" if math.isfinite(top1) else "    n/a"))
    if note:
        lines.append(note)
    return "\n".join(lines)


def _undefined_reason(metrics: dict[str, Any]) -> str:
    loss = metrics.get("loss")
    if metrics.get("nonfinite"):
        return (f"the model's outputs are not finite for {metrics['nonfinite']} of {metrics['count']} images "
                "(NaN/inf logits: diverged or damaged weights), so no metric is defined")
    if isinstance(loss, float) and not math.isfinite(loss):
        return "the model's outputs are not finite (NaN/inf logits: diverged or damaged weights)"
    return "no images to measure them on (e.g. a class without images in this split)"


def run_cli(args: Any, ckpt: dict[str, Any]) -> int:
    """``nostride val`` for a classification checkpoint (:func:`validate_classifier`); returns 0."""
    validate_classifier(args, ckpt)
    return 0


def validate_classifier(args: Any, ckpt: dict[str, Any]) -> dict[str, Any]:
    """``nostride val`` for a classification checkpoint: metrics on the test or validation split.

    The data is built as in training (the checkpoint's ``img_size``, ``val_fraction``, ``seed``,
    ``max_per_class`` and normalisation), so ``--split val`` is exactly the held-out part of train
    the run validated on. Prints top-1/top-5 and a per-class table; writes ``metrics.json``,
    ``confusion_matrix.png`` and ``per_class_accuracy.png`` to ``--project/--name``; returns what
    ``metrics.json`` holds, with ``save_dir``.
    """

    from ...checkpoint import model_from_checkpoint
    from ...data.classification import build_classification_data
    from ...utils.jsonio import write_json
    from .plots import plot_confusion_matrix, plot_per_class_accuracy
    from ...checkpoint import recorded_option
    from .predict import _stats

    config = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    data_path = args.data or config.get("data")
    if not data_path:
        raise ValueError("no --data given and the checkpoint does not record its training data")
    mean, std = _stats(recorded_option(ckpt, "mean")), _stats(recorded_option(ckpt, "std"))
    img_size = args.img_size or recorded_option(ckpt, "img_size")
    val_fraction = float(config.get("val_fraction", 0.1))
    recorded_cap = config.get("max_per_class")
    # --max-per-class N overrides the training's cap, 0 = every image; by default the run's own cap,
    # so val evaluates the very images the training run reported its test/val numbers on
    cap = recorded_cap if args.max_per_class is None else (args.max_per_class or None)
    print(recorded_options_line(config, data_path, img_size, args))

    def build(max_per_class: int | None):
        # the training max_per_class decides which images the validation split was carved from
        return build_classification_data(
            data_path, img_size=img_size, val_fraction=val_fraction, seed=int(config.get("seed", 0)),
            augment=False, max_per_class=max_per_class,
            mean=mean if std is not None else None, std=std if mean is not None else None)

    split = args.split
    data = build(recorded_cap)
    if split is None:  # the test split if the dataset has one, else the validation split
        split = "test" if data.test is not None else "val"
    if split == "test" and cap != recorded_cap:
        data = build(cap)  # the test split is the dataset's own: capped as asked
    if split == "val" and val_fraction <= 0:
        raise ValueError(f"{args.weights}: trained with val_fraction=0, so there is no validation split; use --split test")

    model = model_from_checkpoint(ckpt)
    n_ckpt = _checkpoint_classes(ckpt, model)
    if n_ckpt != data.num_classes:
        raise ValueError(f"class count mismatch: the checkpoint {args.weights} has {n_ckpt} classes but "
                         f"{data_path} has {data.num_classes} ({data.format})")
    names = list(ckpt.get("names") or data.classes)
    if ckpt.get("names") and list(ckpt["names"]) != list(data.classes):
        differ = [f"{i}: {a!r} vs {b!r}" for i, (a, b) in enumerate(zip(ckpt["names"], data.classes)) if a != b]
        print(f"warning: class names differ between checkpoint and data (index: checkpoint vs data): "
              f"{'; '.join(differ[:5])}{' ...' if len(differ) > 5 else ''}; evaluating by class index", file=sys.stderr)

    dataset = data.test if split == "test" else data.val
    if dataset is None:
        other = "val" if split == "test" else "test"
        raise ValueError(f"{data_path} has no {split} split ({data.format}); use --split {other}")
    if split == "val" and cap != recorded_cap and cap is not None:
        dataset = _split_subset(dataset, cap)  # within the images the run validated on

    epoch = ckpt.get("epoch", 0)  # 1-based: epochs finished
    model_label = ckpt.get("model_name") or f"{ckpt.get('source')}:{ckpt.get('source_model')}"
    print(f"{model_label} ({args.weights}{f', after epoch {epoch}' if isinstance(epoch, int) and epoch >= 1 else ''}) "
          f"on {data_path} [{data.format}, {split} split, {len(dataset)} images, {data.img_size}x{data.img_size}]")
    metrics = evaluate_classifier(model, dataset, batch_size=args.batch_size, device=args.device or None,
                                  workers=args.workers, class_names=names, desc=f"val ({split})")
    base = dataset.dataset if hasattr(dataset, "dataset") else dataset  # under a Subset
    skipped = int(getattr(base, "skipped", 0))

    if metrics.get("nonfinite"):
        print(f"top-1 n/a  top-5 n/a  loss n/a  ({metrics['count']} images: {_undefined_reason(metrics)})")
    else:
        print(f"top-1 {metrics['top1']:.2f}%  top-5 {metrics['top5']:.2f}%  loss {metrics['loss']:.4f}  "
              f"mean class accuracy {metrics['mean_class_accuracy']:.2f}%  ({metrics['count']} images)")
    print(format_per_class_table(metrics))
    if skipped:
        from ...utils.numbers import plural

        print(f"warning: {plural(skipped, 'unreadable image')} skipped (each replaced by the next readable one)",
              file=sys.stderr)

    out = increment_path(Path(args.project) / args.name, getattr(args, "exist_ok", False))
    plot_confusion_matrix(metrics["confusion"], out / "confusion_matrix.png", names,
                          title=f"{model_label}: {split} confusion (row-normalised)")
    plot_per_class_accuracy(metrics["per_class"], out / "per_class_accuracy.png", names)
    record = {
        "weights": str(args.weights), "model": model_label, "epoch": epoch, "data": str(data_path),
        "format": data.format, "split": split, "img_size": data.img_size, "mean": list(data.mean),
        "std": list(data.std), "skipped": skipped,
        **{k: v for k, v in metrics.items() if k != "confusion"},
        "confusion": metrics["confusion"].tolist(),
    }
    from ...utils.numbers import round_floats

    undefined = write_json(out / "metrics.json", round_floats(record), reason=_undefined_reason(metrics))
    if undefined:
        print(f"warning: {len(undefined)} metrics are undefined and written as null ({', '.join(undefined[:4])}"
              f"{' ...' if len(undefined) > 4 else ''}): {_undefined_reason(metrics)}", file=sys.stderr)
    print(f"results saved to {out} (metrics.json, confusion_matrix.png, per_class_accuracy.png)")
    return {**record, "save_dir": str(out)}
