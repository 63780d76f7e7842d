"""Evaluate a detector on a dataset: ``evaluate_detector`` (Python), ``validate`` (``nostride val``).

One pass as YOLOv5 v6.0 ``val.py`` makes it: rectangular letterboxed batches
(:func:`~nostride.data.detection.build_val_loader`, pad 0.5), images / 255, the eval-mode model,
:func:`~nostride.tasks.detect.nms.non_max_suppression` (``conf 0.001``, ``iou 0.6``, multi-label,
``max_det 300``), boxes mapped back to the original images, and the
:class:`~nostride.tasks.detect.evaluator.DetectionEvaluator`. For COCO data the predictions are
also scored by pycocotools (:mod:`.coco_eval`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ...data.detection.dataset import DetectionDataset
from ...data.detection.dataset_yaml import DetectionDataConfig, load_data_yaml
from ...data.detection.val_loader import build_val_loader
from ...utils.atomic import atomic_write_text
from ...utils.device import select_device
from ...utils.paths import increment_path, removing_empty_run_folders
from .coco_eval import coco_summary, coco_target
from ...utils import bounds
from .evaluator import DetectionEvaluator, nonfinite_images, to_original, val_nms

__all__ = ["evaluate_detector", "validate", "load_detector", "format_results", "run_cli", "METRICS_FILE"]

METRICS_FILE = "metrics.json"


def _stride(model: nn.Module) -> int:
    s = getattr(model, "stride", None)
    return int(torch.as_tensor(s).max().item()) if s is not None else 32


def _model_nc(model: nn.Module) -> int | None:
    nc = getattr(model, "nc", None)
    if nc is None and hasattr(model, "model"):
        with contextlib.suppress(Exception):
            nc = getattr(model.model[-1], "nc", None)
    return int(nc) if nc is not None else None


def load_detector(weights: nn.Module | dict | str | os.PathLike) -> tuple[nn.Module, dict[str, Any] | None, str]:
    """``(model, checkpoint dict or None, description)`` from a model, a nostride checkpoint, an exported
    model (``.onnx``, ``.torchscript``) or a YOLOv5 ``.pt`` (:func:`nostride.checkpoint.open_weights`)."""
    if isinstance(weights, nn.Module):
        return weights, None, type(weights).__name__
    from ...checkpoint import RUNTIME_MODEL_KEY, model_from_checkpoint

    if isinstance(weights, dict):
        ckpt = weights
    else:  # a checkpoint, an exported model or a YOLOv5 .pt (read by the safe importer)
        from ...checkpoint import open_weights

        ckpt = open_weights(weights)
    if ckpt.get("task") not in (None, "detect"):
        raise ValueError(f"{weights if not isinstance(weights, dict) else 'checkpoint'} is a {ckpt.get('task')} "
                         "checkpoint, not a detector")
    try:
        model = model_from_checkpoint(ckpt)
    except RuntimeError as e:  # tensors that do not fit the recorded architecture
        where = weights if not isinstance(weights, dict) else "checkpoint"
        raise ValueError(f"{where}: the weights do not fit the {ckpt.get('model_name')} model it records "
                         f"({str(e).splitlines()[0]})") from None
    if isinstance(ckpt.get(RUNTIME_MODEL_KEY), nn.Module):  # an exported file or a YOLOv5 .pt
        return model, ckpt, str(ckpt.get("model_name") or type(model).__name__)
    return model, ckpt, f"{ckpt.get('model_name')} checkpoint"


def _dataset(data: Any, split: str, single_cls: bool, names: Sequence[str] | None, cache: bool,
             verbose: bool) -> tuple[DetectionDataset, DetectionDataConfig | None]:
    if isinstance(data, DetectionDataset):
        return data, getattr(data, "config", None)
    cfg = data if isinstance(data, DetectionDataConfig) else load_data_yaml(data)
    ds = DetectionDataset(cfg.split(split), names=cfg.names, cache=cache, single_cls=single_cls,
                          verbose=verbose, prefix=f"{split}: ")
    ds.config = cfg
    return ds, cfg


def _dist_info() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@torch.inference_mode()
def evaluate_detector(
    model: nn.Module,
    data: str | os.PathLike | dict | DetectionDataConfig | DetectionDataset,
    split: str = "val",
    img_size: int = 640,
    batch_size: int = 32,
    conf: float = 0.001,
    iou: float = 0.6,
    max_det: int = 300,
    single_cls: bool = False,
    device: str | torch.device | None = None,
    half: bool = False,
    workers: int = 2,
    save_json: bool | None = None,
    save_dir: str | os.PathLike | None = None,
    plots: bool = True,
    coco: bool | None = None,
    progress: bool = True,
    verbose: bool = True,
    cache: bool = True,
    rect: bool = True,
) -> dict[str, Any]:
    """mAP, P, R, AP by object size (and the pycocotools summary for COCO data) of a detector.

    Args:
        model: a YOLOv5(-SPD) model (eval-mode output ``(decoded, raw)`` or ``decoded``).
        data: a dataset YAML path / dict / :class:`DetectionDataConfig`, or a :class:`DetectionDataset`.
        split: ``"val"``, ``"test"`` or ``"train"`` (with a YAML).
        img_size: long side images are resized to (rounded up to a multiple of the model's stride).
        batch_size: images per batch (it also decides the rectangular canvases, as in YOLOv5).
        conf, iou, max_det: NMS settings (YOLOv5 validation: 0.001, 0.6, 300; multi-label NMS).
        single_cls: one class (class-agnostic NMS, every prediction and label scored as class 0).
        device: ``"cpu"``, ``"cuda"``, ... (default: the best available).
        half: float16 inference (CUDA only).
        workers: DataLoader processes.
        save_json: write ``predictions.json`` (COCO results format) to ``save_dir``; default: on for
            COCO data when ``save_dir`` is given.
        save_dir: folder for ``metrics.json``, plots and the json (nothing written when ``None``).
        plots: write PR / F1 curves, confusion matrix and AP-by-size plots into ``save_dir``.
        coco: run pycocotools (default: when the data is COCO, see :mod:`.coco_eval`).
        progress: progress bar; verbose: print the results table.
        cache: use the label cache.
        rect: rectangular batches (YOLOv5's validation); ``False``: every image letterboxed into an
            ``img_size`` square. An exported model of a fixed input shape always gets squares of its size.

    Returns:
        :meth:`DetectionEvaluator.evaluate`'s dict plus ``speed_ms`` (pre-process, inference, NMS
        per image), ``skipped`` (unreadable images), ``coco`` (pycocotools summary, when run), and
        the options used. Under ``torch.distributed`` each rank scores a disjoint shard; every
        rank returns the gathered result, and only rank 0 writes files.
    """
    from nostride.utils.progress import progress as progress_bar

    rank, world = _dist_info()
    dev = select_device(device)
    half = bool(half and dev.type == "cuda")
    ds, cfg = _dataset(data, split, single_cls, None, cache, verbose and rank == 0)
    names = list(ds.names) if ds.names is not None else None
    nc = 1 if single_cls else (len(names) if names is not None else _model_nc(model))
    model_nc = _model_nc(model)
    if model_nc is not None and names is not None and not single_cls and model_nc != len(names):
        raise ValueError(f"the model has {model_nc} classes but the dataset has {len(names)} "
                         f"({getattr(cfg, 'yaml_file', None) or 'dataset'})")
    if nc is None:
        raise ValueError("the number of classes is unknown: give the dataset names or a model with 'nc'")
    model_names = getattr(model, "names", None)
    if (verbose and rank == 0 and names is not None and not single_cls and isinstance(model_names, (list, tuple))
            and len(model_names) == len(names) and list(model_names) != list(names)):
        differ = [f"{i}: {a!r} vs {b!r}" for i, (a, b) in enumerate(zip(model_names, names)) if a != b]
        print(f"warning: class names differ between the model and the dataset (index: model vs data): "
              f"{'; '.join(differ[:5])}{' ...' if len(differ) > 5 else ''}; scoring by class index", file=sys.stderr)
    stride = _stride(model)
    size = int(math.ceil(bounds.check_img_size(img_size) / stride) * stride)
    fixed = getattr(model, "fixed_input_hw", None)  # an exported file of a fixed input shape
    if fixed is not None:
        if fixed[0] != fixed[1]:
            raise ValueError(f"{model.path}: a fixed {fixed[0]}x{fixed[1]} input; evaluation needs a square or "
                             "dynamic export (nostride export --dynamic)")
        if verbose and rank == 0:
            note = f" (not {size})" if size != fixed[0] else ""
            print(f"{model.path.name}: fixed input {fixed[0]}x{fixed[1]}{note}, so every image is letterboxed into "
                  "that square (no rectangular batches; export with --dynamic for YOLOv5's)", file=sys.stderr)
        size, rect = fixed[0], False
    target = coco_target(ds) if coco is not False else None
    if coco and target is None:
        raise ValueError("coco=True but the dataset is not COCO data (no COCO json, not COCO's 80 classes "
                         "with numeric file names)")
    if save_json is None:
        save_json = target is not None and save_dir is not None
    json_categories = (target.category_ids if target is not None else list(range(nc))) if (save_json or target) else None
    evaluator = DetectionEvaluator(nc, names=names if not single_cls else ["item"], single_cls=single_cls,
                                   json_categories=json_categories)
    loader = build_val_loader(ds, size, batch_size, stride, pad=0.5, rect=rect, workers=workers,
                              rank=rank, world_size=world, pin_memory=dev.type == "cuda")
    items = loader.dataset
    image_ids = target.image_ids if target is not None else [
        int(p.stem) if p.stem.isnumeric() else p.stem for p in ds.im_files]

    was_training = model.training
    model.eval().to(dev)
    dtype = torch.float16 if half else torch.float32
    if half:
        model.half()
    t_pre = t_inf = t_nms = 0.0
    seen = 0
    batch_indices = iter(loader.batch_sampler)
    try:
        for images, targets, paths, shapes in progress_bar(loader, desc=split, unit="batch",
                                                           disable=not progress or rank != 0):
            idx = next(batch_indices)
            t0 = time.perf_counter()
            x = images.to(dev, non_blocking=True).to(dtype) / 255
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t1 = time.perf_counter()
            out = model(x)
            pred = out[0] if isinstance(out, (tuple, list)) else out
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t2 = time.perf_counter()
            bad = nonfinite_images(pred)
            dets = val_nms(pred, conf, iou, max_det, single_cls)
            t3 = time.perf_counter()
            t_pre, t_inf, t_nms = t_pre + t1 - t0, t_inf + t2 - t1, t_nms + t3 - t2
            seen += len(paths)
            p_orig, l_orig = to_original(dets, targets, tuple(images.shape[2:]), shapes)
            ids = [image_ids[int(items.order[j])] for j in idx]
            evaluator.process(p_orig, l_orig, keys=list(idx), image_ids=ids, nonfinite=bad)
    finally:
        if half:
            model.float()
        model.train(was_training)
    metrics = evaluator.evaluate()
    speed = torch.tensor([t_pre, t_inf, t_nms, float(seen)], dtype=torch.float64)
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(speed)  # gloo / nccl: sum over ranks
    n = max(speed[3].item(), 1.0)
    metrics["speed_ms"] = {"preprocess": speed[0].item() / n * 1e3, "inference": speed[1].item() / n * 1e3,
                           "nms": speed[2].item() / n * 1e3}
    metrics["skipped"] = ds.stats.skipped
    metrics["options"] = {"split": split, "img_size": size, "rect": rect, "batch_size": batch_size, "conf": conf, "iou": iou,
                          "max_det": max_det, "single_cls": single_cls, "half": half, "world_size": world}
    out_dir = Path(save_dir) if save_dir is not None else None
    if out_dir is not None and rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
    json_path = None
    if save_json and out_dir is not None and rank == 0:
        json_path = out_dir / "predictions.json"
        atomic_write_text(json_path, json.dumps(evaluator.jdict))
    if target is not None and not metrics.get("nonfinite"):
        evaluated = sorted(set(image_ids))  # every image of the split (all ranks' shards)
        metrics["coco"] = coco_summary(target.gt, evaluator.jdict, image_ids=evaluated) if rank == 0 else None
        metrics["coco_ground_truth"] = str(target.gt) if isinstance(target.gt, Path) else "built from YOLO labels"
    if out_dir is not None and rank == 0:
        record = {k: v for k, v in metrics.items()}
        if metrics.get("nonfinite"):  # NaN is written as null: say why, as classification's metrics.json does
            record["undefined"] = {"why": metrics["undefined_reason"]}
        atomic_write_text(out_dir / METRICS_FILE, json.dumps(_json_safe(record), indent=1, allow_nan=False))
        if plots:
            from .plots import plot_all

            plot_all(metrics, evaluator.curves, evaluator.confusion_matrix.matrix if evaluator.confusion else None,
                     evaluator.names, out_dir)
    if verbose and rank == 0:
        print(format_results(metrics, evaluator.names))
    return metrics


def _json_safe(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        from nostride.utils.numbers import round_sig

        return round_sig(float(x)) if math.isfinite(float(x)) else None
    return x


def format_results(metrics: dict[str, Any], names: Sequence[str] | None = None, max_rows: int = 100) -> str:
    """The results table: an ``all`` row, one row per class, AP by size, pycocotools, speed."""
    head = f"{'Class':>20}{'Images':>11}{'Instances':>11}{'P':>11}{'R':>11}{'mAP50':>11}{'mAP50-95':>11}"
    fmt = "{:>20}{:>11}{:>11}{:>11.3f}{:>11.3f}{:>11.3f}{:>11.3f}"
    lines = [head, fmt.format("all", metrics["images"], metrics["instances"], metrics["precision"],
                              metrics["recall"], metrics["mAP50"], metrics["mAP50-95"])]
    rows = metrics.get("per_class", [])
    if 1 < len(rows) <= max_rows:
        for r in rows:
            lines.append(fmt.format(r["name"][:20], r["images"], r["instances"], r["precision"], r["recall"],
                                    r["mAP50"], r["mAP50-95"]))
    sizes = []
    for s in ("small", "medium", "large"):
        v = metrics.get(f"AP_{s}")
        sizes.append(f"{s} {'n/a' if v is None else f'{v:.3f}'} ({metrics.get(f'instances_{s}', 0)} objects)")
    lines.append("AP by object size (mAP50-95, COCO areas in original pixels): " + ", ".join(sizes))
    if metrics.get("coco"):
        c = metrics["coco"]
        lines.append("pycocotools: " + "  ".join(f"{k} {c[k]:.3f}" for k in
                                                  ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100")))
    if "speed_ms" in metrics:
        s = metrics["speed_ms"]
        lines.append(f"Speed: {s['preprocess']:.1f} ms pre-process, {s['inference']:.1f} ms inference, "
                     f"{s['nms']:.1f} ms NMS per image at {metrics['options']['img_size']} "
                     f"(batch {metrics['options']['batch_size']})")
    if metrics.get("skipped"):
        from nostride.utils.numbers import plural

        lines.append(f"warning: {plural(metrics['skipped'], 'unreadable image')} skipped")
    if metrics.get("nonfinite"):
        lines.append(f"warning: every metric is undefined (null in metrics.json): {metrics['undefined_reason']}")
    return "\n".join(lines)


@removing_empty_run_folders()
def validate(
    weights: nn.Module | dict | str | os.PathLike,
    data: str | os.PathLike | dict | DetectionDataConfig | DetectionDataset,
    project: str | os.PathLike = "runs/val",
    name: str = "exp",
    exist_ok: bool = False,
    weights_name: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Evaluate detector weights on a dataset and write a run folder (``nostride val`` from Python).

    Args:
        weights: a nostride checkpoint (path or dict), a YOLOv5 ``.pt`` (read by the safe importer),
            or a model.
        data: dataset YAML (path, dict, config) or a :class:`DetectionDataset`.
        project, name, exist_ok: results go to ``project/name`` (``name2``, ... if it exists).
        weights_name: how ``metrics.json`` names the weights (default: the path, or the model class).
        **options: :func:`evaluate_detector` options (``split``, ``img_size``, ``batch_size``,
            ``conf``, ``iou``, ``max_det``, ``single_cls``, ``save_json``, ``device``, ...).

    Returns:
        The metrics dict, with ``save_dir`` (the run folder) and ``weights`` added.
    """
    model, ckpt, desc = load_detector(weights)
    rank, _ = _dist_info()
    save_dir = increment_path(Path(project) / name, exist_ok, mkdir=rank == 0)
    if options.get("img_size") is None:
        from ...checkpoint import recorded_option

        size = recorded_option(ckpt, "img_size") if ckpt is not None else None
        options["img_size"] = size if isinstance(size, int) and size > 0 else 640
    metrics = evaluate_detector(model, data, save_dir=save_dir, **options)
    metrics["save_dir"] = str(save_dir)
    metrics["weights"] = weights_name or (str(weights) if isinstance(weights, (str, os.PathLike)) else desc)
    if rank == 0:
        path = save_dir / METRICS_FILE
        if path.exists():
            record = json.loads(path.read_text())
            record["weights"] = metrics["weights"]
            atomic_write_text(path, json.dumps(record, indent=1, allow_nan=False))
        print(f"results saved to {save_dir}", file=sys.stderr)
    return metrics


def _default_split(data: Any) -> str:
    """The split ``nostride val`` scores when none is asked for: the test split if the dataset has one,
    else the validation split (as classifiers and ``nostride compare`` do)."""
    try:
        cfg = data if isinstance(data, DetectionDataConfig) else load_data_yaml(data)
    except (OSError, ValueError):
        return "val"  # the evaluation names the problem
    return "test" if cfg.test else "val"


def run_cli(args: Any, ckpt: dict[str, Any] | None) -> int:
    """``nostride val`` for a detector: ``ckpt`` is the nostride checkpoint, or ``None`` for a YOLOv5 ``.pt``."""
    from ...checkpoint import recorded_option

    source: Any = ckpt
    if ckpt is None:  # not a nostride checkpoint: a YOLOv5 .pt, or the nostride error is raised here
        source = load_detector(args.weights)[0]
    data = args.data or (recorded_option(ckpt, "data") if ckpt is not None else None)
    if not data:
        raise ValueError("no --data given (a dataset YAML) and the checkpoint does not record its training data")
    if args.max_det < 1:
        raise ValueError(f"--max-det must be >= 1, got {args.max_det}")
    if not isinstance(data, dict) and Path(data).is_dir():
        what = f"a detection checkpoint ({ckpt.get('model_name')})" if ckpt is not None else "a detector"
        raise ValueError(f"{args.weights} is {what}: --data must be a dataset YAML (path, train, val, names), "
                         f"got the folder {data}")
    split = args.split or _default_split(data)
    print(f"{args.weights} on {data} ({split} split)", file=sys.stderr)
    metrics = validate(source, data, project=args.project, name=args.name,
                       exist_ok=args.exist_ok, weights_name=str(args.weights), split=split, img_size=args.img_size,
                       batch_size=args.batch_size or 32, conf=args.conf, iou=args.iou, max_det=args.max_det,
                       single_cls=args.single_cls, device=args.device or None, half=args.half, workers=args.workers,
                       save_json=True if args.save_json else None, plots=not args.no_plots)
    return 0 if metrics["images"] else 1
