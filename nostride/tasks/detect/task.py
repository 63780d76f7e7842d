"""Object detection (YOLOv5 / YOLOv5-SPD) as a training task of the one engine.

What the engine gets from :class:`DetectTask` (see :mod:`nostride.tasks.base`):

* data: the dataset YAML's train split as a :class:`~nostride.data.detection.DetectionTrainDataset`
  (mosaic, random perspective, HSV, flips, mixup; rect, cache), the val / test splits letterboxed
  in rectangular batches (YOLOv5's ``val.py`` loading);
* the model: ``create_model(model, num_classes=nc)``, optionally initialised from ``weights`` (a
  nostride checkpoint, or a YOLOv5 / YOLOv5-SPD ``.pt``: tensors of the same name and shape are
  copied; with another class count the head keeps the box and objectness outputs and re-initialises
  only the class outputs), the first ``freeze`` layers frozen, anchors checked by autoanchor;
* the loss: :class:`YOLOv5Loss` (``loss * batch size``, ``loss_reduction = "sum"``), gains scaled
  to the class count, levels and image size; multi-scale resizing when asked;
* validation: NMS (conf 0.001, IoU 0.6, multi-label) and the :class:`DetectionEvaluator` on the
  EMA, plus the validation losses; the final evaluation of ``best.pt`` uses IoU 0.65 on COCO data
  (as the reference's ``train.py``) and its one pass also gives the pycocotools summary (``coco_eval.json``);
  fitness ``0.1 mAP50 + 0.9 mAP50-95``;
* hooks: the labels plot and ``train_batch0..2.jpg`` at the start, ``close_mosaic``.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nostride.tasks.base import DatasetSplits, Task

from .hyp import HYP_KEYS, check_task_options
from .weights import freeze_layers, load_source_weights, transfer_weights, yolov5_model_of

__all__ = ["DetectTask", "transfer_weights", "freeze_layers", "load_source_weights", "yolov5_model_of",
           "FITNESS_WEIGHTS"]

FITNESS_WEIGHTS = {"mAP50": 0.1, "mAP50-95": 0.9}
VAL_CONF, VAL_IOU, FINAL_IOU_COCO = 0.001, 0.6, 0.65
LOSS_KEYS = ("box", "obj", "cls")
# metric -> YOLOv5's results.csv column
RESULTS_METRICS = {"precision": "metrics/precision", "recall": "metrics/recall", "mAP50": "metrics/mAP_0.5",
                   "mAP50-95": "metrics/mAP_0.5:0.95"}
# results.csv columns of earlier nostride versions -> today's (a resumed run's file is rewritten)
LEGACY_RESULTS_COLUMNS = {"lr": "x/lr1", **{f"train/{k}": f"train/{k}_loss" for k in LOSS_KEYS},
                          **{f"val/{k}": c for k, c in RESULTS_METRICS.items()},
                          **{f"val/{k}": f"metrics/{k}" for k in ("AP_small", "AP_medium", "AP_large")}}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _rank_world() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _default_img_size(data: Any) -> int:
    """640 as YOLOv5, except for a built-in set: its images' own size, rounded up to the stride (32)."""
    from nostride.data.builtin import builtin_img_size

    size = builtin_img_size(data)
    return 640 if size is None else -(-size // 32) * 32


class DetectTask(Task):
    """Trains a YOLOv5-family detector on a YOLO / COCO detection dataset (see the module doc).

    Uses from the options: ``model``, ``model_options``, ``data`` (a dataset YAML), ``img_size``,
    ``batch_size``, ``workers``, ``augment``, ``cache``, ``weights``, ``label_smoothing``, ``seed``, ``resume``
    and ``task_options`` (:mod:`nostride.tasks.detect.hyp`: loss gains, augmentation, ``rect``,
    ``multi_scale``, ``close_mosaic``, ``freeze``, ``autoanchor``, ``plots``).
    """

    name = "detect"
    loss_reduction = "sum"

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.opts = check_task_options(dict(getattr(cfg, "task_options", {}) or {}))
        self.img_size = int(cfg.img_size or _default_img_size(cfg.data))
        self.stride = 32
        self.data_cfg = None
        self.train_set = None
        self.loss_fn = None
        self.anchor_check = None
        self.final = False  # the final evaluation of best.pt (IoU 0.65 on COCO)
        self.transfer_note = ""
        self.val_index = None
        from nostride.data.detection import collate_detection

        self.collate_fn = collate_detection

    # ------------------------------------------------------------------ data
    def build_datasets(self) -> DatasetSplits:
        from nostride.data.detection import DetectionDataset, load_data_yaml
        from nostride.data.detection.train_dataset import DetectionTrainDataset

        cfg, opts = self.cfg, self.opts
        rank, world = _rank_world()
        if self.img_size % self.stride:
            raise ValueError(f"img_size {self.img_size} must be a multiple of the model stride {self.stride}")
        self.data_cfg = dc = load_data_yaml(cfg.data)
        self.names = list(dc.names)
        verbose = rank == 0 and not cfg.quiet
        train_index = DetectionDataset(dc.split("train"), names=dc.names, verbose=verbose, prefix="train: ")
        per_rank = max(cfg.batch_size // world, 1)
        self.train_set = DetectionTrainDataset(
            train_index, self.img_size, hyp=opts, augment=cfg.augment, rect=opts["rect"], batch_size=per_rank,
            stride=self.stride, cache=cfg.cache, workers=max(self._workers(), 1), verbose=verbose)
        val = DetectionDataset(dc.val, names=dc.names, verbose=verbose, prefix="val: ") if dc.val else None
        test = DetectionDataset(dc.test, names=dc.names, verbose=verbose, prefix="test: ") if dc.test else None
        self.val_index = val
        skipped = sum(d.stats.skipped for d in (train_index, val, test) if d is not None)
        return DatasetSplits(self.train_set, val, test, skipped=skipped)

    def _workers(self) -> int:
        """The run's DataLoader workers (``workers=None``: the available CPUs, at most 8)."""
        from nostride.utils.workers import default_workers

        return default_workers() if self.cfg.workers is None else self.cfg.workers

    def train_loader(self, dataset, batch_size, workers, info, seed, pin_memory=False):
        """Rectangular training batches need their own batch sampler; other runs use the engine's loader."""
        if not self.opts["rect"]:
            return None
        from nostride.data.detection.train_dataset import RectTrainBatchSampler
        from nostride.data.epoch_workers import epoch_loader
        from nostride.utils.workers import default_workers

        sampler = RectTrainBatchSampler(len(dataset), batch_size, info.rank, info.world_size, seed)
        workers = default_workers() if workers is None else workers
        return epoch_loader(dataset, sampler, workers, seed, info.rank, collate_fn=self.collate_fn,
                            pin_memory=pin_memory)

    def eval_loader(self, dataset, batch_size, workers, info, pin_memory=False, persistent_workers=False):
        """Letterboxed rectangular batches (pad 0.5), each rank a disjoint shard of whole batches."""
        from nostride.data.detection import build_val_loader

        loader = build_val_loader(dataset, img_size=self.img_size, batch_size=batch_size, stride=self.stride,
                                  workers=workers, rank=info.rank, world_size=info.world_size, pin_memory=pin_memory,
                                  persistent_workers=persistent_workers)
        # evaluator keys: loader positions, so that results are scored in single-process order
        self._eval_positions = {**getattr(self, "_eval_positions", {}), **loader.dataset.positions()}
        return loader

    # ----------------------------------------------------------------- model
    def build_model(self) -> nn.Module:
        from nostride.models import create_model

        from .autoanchor import check_anchors
        from .loss import YOLOv5Loss

        if self.names is None:
            raise RuntimeError("build_datasets() must run before build_model() (the class count comes from the data)")
        cfg, opts = self.cfg, self.opts
        model = create_model(cfg.model, num_classes=len(self.names), **dict(getattr(cfg, "model_options", {}) or {}))
        if int(model.stride.max()) != self.stride:
            raise ValueError(f"{cfg.model}: largest stride {int(model.stride.max())}; detection training supports "
                             f"models of stride {self.stride}")
        if cfg.weights and not cfg.resume:
            self.transfer_note = transfer_weights(model, load_source_weights(cfg.weights))
        model.names = list(self.names)
        frozen = freeze_layers(model, int(opts["freeze"]))
        if frozen:
            self.transfer_note += f"{'; ' if self.transfer_note else ''}froze layers 0-{opts['freeze'] - 1} ({frozen} tensors)"
        if opts["autoanchor"] and not cfg.resume and self.train_set is not None:
            self.anchor_check = check_anchors(model.detect, self.train_set.index.shapes, self.train_set.labels,
                                              self.img_size, anchor_t=opts["anchor_t"], seed=cfg.seed)
        hyp = {k: opts[k] for k in ("box", "cls", "obj", "cls_pw", "obj_pw", "anchor_t", "fl_gamma")}
        hyp["label_smoothing"] = float(getattr(cfg, "label_smoothing", 0.0) or 0.0)
        self.loss_fn = YOLOv5Loss(model, hyp, img_size=self.img_size)
        return model

    # ------------------------------------------------------------------ step
    def preprocess(self, batch: Any, device: torch.device, channels_last: bool = False) -> Any:
        images, targets = batch[0], batch[1]
        images = images.to(device, non_blocking=True).float().div_(255)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return (images, targets.to(device, non_blocking=True), *batch[2:])

    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, Any]]:
        images, targets = batch[0], batch[1]
        if self.opts["multi_scale"]:
            images = self.multi_scale(images)
        preds = model(images)
        total, items = self.loss_fn(preds, targets)
        self._last_size = images.shape[-1]
        return total.sum(), {k: items[i] for i, k in enumerate(LOSS_KEYS)}

    def multi_scale(self, images: torch.Tensor) -> torch.Tensor:
        """Resize a batch to a size drawn from ``[0.5, 1.5] x img_size`` (multiples of the stride), as
        YOLOv5's ``--multi-scale``; targets are normalised so they stay valid."""
        gs = self.stride
        sz = random.randrange(int(self.img_size * 0.5), int(self.img_size * 1.5) + gs) // gs * gs
        sz = max(sz, gs)  # at img_size 32 the draw can round down to 0 (no image left)
        sf = sz / max(images.shape[2:])
        if sf == 1:
            return images
        ns = [math.ceil(x * sf / gs) * gs for x in images.shape[2:]]
        return F.interpolate(images, size=ns, mode="bilinear", align_corners=False)

    def progress(self, batch: Any) -> str:
        return f"instances {len(batch[1])}  size {getattr(self, '_last_size', batch[0].shape[-1])}"

    # ------------------------------------------------------------ evaluation
    def build_evaluator(self) -> Any:
        """The evaluator of a validation pass; the final one on COCO data also collects COCO results
        records of the validation images, so that one pass gives YOLOv5's metrics and pycocotools'."""
        from .evaluator import DetectionEvaluator

        target = self._coco_target() if self.final else None
        categories = target.category_ids if target is not None else None
        return _WithLosses(DetectionEvaluator(len(self.names), names=self.names, json_categories=categories),
                           coco=target)

    def eval_step(self, model: nn.Module, batch: Any, evaluator: Any) -> None:
        from .evaluator import nonfinite_images, to_original, val_nms

        images, targets, paths, shapes = batch[0], batch[1], batch[2], batch[3]
        out, train_out = model(images)
        if self.loss_fn is not None:
            evaluator.add_loss(self.loss_fn([x.float() for x in train_out], targets)[1])
        iou = FINAL_IOU_COCO if self.final and self._is_coco() else VAL_IOU
        bad = nonfinite_images(out)
        preds = val_nms(out.float(), conf=VAL_CONF, iou=iou)  # as nostride val: v6.0's validation NMS
        p, lab = to_original(preds, targets, tuple(images.shape[2:]), shapes)
        positions = getattr(self, "_eval_positions", {})
        keys = [positions.get(str(x)) for x in paths]
        ids = None
        if getattr(evaluator, "coco", None) is not None:  # COCO image ids of the validation images
            ids = [self._coco_image_ids.get(str(x)) for x in paths]
            ids = ids if None not in ids else None  # another split's images: no pycocotools records
        evaluator.process(p, lab, keys=keys if None not in keys else list(paths), image_ids=ids, nonfinite=bad)

    def _coco_target(self) -> Any:
        """The validation split's :class:`~.coco_eval.CocoTarget` when it is COCO data (a COCO json, or
        COCO's 80 classes with numeric file names, as the evaluator decides), else ``None``."""
        if not hasattr(self, "_coco"):
            from .coco_eval import coco_target

            val = getattr(self, "val_index", None)
            self._coco = coco_target(val) if val is not None else None
            if self._coco is not None:
                self._coco_image_ids = {str(f): i for f, i in zip(val.im_files, self._coco.image_ids)}
        return self._coco

    def _is_coco(self) -> bool:
        return self._coco_target() is not None

    def fitness(self, metrics: dict[str, Any]) -> float:
        return sum(w * float(metrics.get(k) or 0.0) for k, w in FITNESS_WEIGHTS.items())

    def summary(self, metrics: dict[str, Any]) -> str:
        keys = ("precision", "recall", "mAP50", "mAP50-95", "AP_small")
        parts = [f"{'P' if k == 'precision' else 'R' if k == 'recall' else k} {metrics[k]:.4g}"
                 for k in keys if isinstance(metrics.get(k), float) and not math.isnan(metrics[k])]
        return "  ".join(parts)

    # --------------------------------------------------------------- results
    def results_layout(self) -> dict[str, Any]:
        """results.csv as YOLOv5 writes it: its names, padded fields; older nostride names renamed on resume."""
        return {"padded": True, "rename": LEGACY_RESULTS_COLUMNS.get}

    def results_row(self, trainer: Any) -> dict[str, Any]:
        """YOLOv5's results.csv columns in its order (``x/lr0..2``: norm weights, other weights, biases,
        its parameter groups), then nostride's: AP by object size and the other metrics, ``fitness``."""
        lrs = {g.get("group"): g["lr"] for g in trainer.optimizer.param_groups}
        t, m = trainer.train_items, trainer.metrics
        row: dict[str, Any] = {"epoch": trainer.epoch + 1}
        row.update({f"train/{k}_loss": t.get(k) for k in LOSS_KEYS})
        row.update({col: m.get(key) for key, col in RESULTS_METRICS.items()})
        row.update({f"val/{k}_loss": m.get(f"{k}_loss") for k in LOSS_KEYS})
        row.update({f"x/lr{i}": lrs.get(g) for i, g in enumerate(("norm", "decay", "bias"))})
        done = set(RESULTS_METRICS) | {f"{k}_loss" for k in LOSS_KEYS}
        row.update({f"metrics/{k}": float(v) for k, v in m.items() if k not in done and _is_number(v)})
        row["fitness"] = trainer.fitness
        return row

    def final_report(self, trainer: Any, result: dict[str, Any]) -> None:
        """COCO data: the pycocotools summary of best.pt's final validation pass, printed and written
        to ``coco_eval.json`` (rank 0)."""
        summary = (result.get("val") or {}).get("coco")
        if trainer.info.is_main and summary:
            from nostride.utils.jsonio import write_json

            write_json(trainer.run_dir / "coco_eval.json", summary, indent=1)
            trainer.log("pycocotools (best.pt): " + "  ".join(f"{k} {v:.4g}" for k, v in summary.items()
                                                            if isinstance(v, float)), always=True)

    # ------------------------------------------------------------------ extras
    def hooks(self) -> list[Any]:
        return [_DetectHook(self)]

    def checkpoint_extra(self) -> dict[str, Any]:
        out: dict[str, Any] = {"img_size": self.img_size, "stride": self.stride,
                               "hyp": {k: float(self.opts[k]) for k in HYP_KEYS}}
        if self.anchor_check is not None:
            out["autoanchor"] = asdict(self.anchor_check)
        if self.data_cfg is not None:
            out["data"] = str(Path(self.cfg.data).resolve()) if Path(self.cfg.data).exists() else str(self.cfg.data)
        return out


class _WithLosses:
    """A detection evaluator that also averages the validation losses (reduced over ranks)."""

    def __init__(self, evaluator: Any, coco: Any = None) -> None:
        self.evaluator = evaluator
        self.coco = coco  # a CocoTarget: score the collected records with pycocotools too
        self.reset()

    def reset(self) -> None:
        self.evaluator.reset()
        self.loss_sum = torch.zeros(3, dtype=torch.float64)
        self.batches = 0
        self.coco_images = 0

    def add_loss(self, items: torch.Tensor) -> None:
        self.loss_sum += items.detach().double().cpu()
        self.batches += 1

    def process(self, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("image_ids") is not None:
            self.coco_images += len(kwargs["image_ids"])
        self.evaluator.process(*args, **kwargs)

    def evaluate(self) -> dict[str, Any]:
        import torch.distributed as dist

        metrics = dict(self.evaluator.evaluate())
        t = torch.cat((self.loss_sum, torch.tensor([float(self.batches)], dtype=torch.float64)))
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
            t = t.to(dev)
            dist.all_reduce(t)
            t = t.cpu()
        if t[3] > 0:
            metrics.update({f"{k}_loss": float(t[i] / t[3]) for i, k in enumerate(LOSS_KEYS)})
        for k in ("AP_small", "AP_medium", "AP_large"):
            if k in metrics and metrics[k] is None:
                metrics[k] = float("nan")  # a fixed set of columns in results.csv
        scored = torch.tensor([float(self.coco_images)], dtype=torch.float64)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
            scored = scored.to(dev)
            dist.all_reduce(scored)
        if self.coco is not None and scored.item() > 0:  # the records were gathered from every rank
            from .coco_eval import coco_summary

            rank0 = not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
            metrics["coco"] = coco_summary(self.coco.gt, self.evaluator.jdict,
                                           image_ids=sorted(set(self.coco.image_ids))) if rank0 else None
        return metrics


class _DetectHook:
    """Detection's pieces of the run: labels plot and batch pictures, autoanchor report, close_mosaic,
    the final evaluation's IoU."""

    def __init__(self, task: DetectTask) -> None:
        self.task = task

    def before_train(self, trainer: Any) -> None:
        task = self.task
        if task.transfer_note:
            trainer.log(task.transfer_note)
        if task.anchor_check is not None:
            trainer.log(task.anchor_check.summary())
        if trainer.info.is_main and task.opts["plots"] and trainer.start_epoch == 0 and task.train_set is not None:
            from .train_plots import plot_labels, size_shares

            ts = task.train_set
            plot_labels(ts.labels, ts.index.shapes, task.names, trainer.run_dir / "labels.jpg")
            shares = size_shares(ts.labels, ts.index.shapes)
            trainer.log("objects: " + ", ".join(f"{100 * v:.1f} % {k}" for k, v in shares.items())
                        + f" (labels plot: {trainer.run_dir / 'labels.jpg'})")

    def before_epoch(self, trainer: Any) -> None:
        n = int(self.task.opts["close_mosaic"])
        ts = self.task.train_set
        if n and ts is not None and ts.augment and not ts.rect:
            on = trainer.epoch < trainer.cfg.epochs - n
            if ts.mosaic_enabled and not on:
                trainer.log(f"close_mosaic: mosaic off for the last {n} epochs")
            ts.mosaic_enabled = on

    def after_step(self, trainer: Any) -> None:
        task = self.task
        if (trainer.info.is_main and task.opts["plots"] and trainer.epoch == trainer.start_epoch
                and trainer.batch_index < 3):
            from .train_plots import draw_batch

            images, targets = trainer.batch[0], trainer.batch[1]
            draw_batch(images, targets, task.names, trainer.run_dir / f"train_batch{trainer.batch_index}.jpg")

    def after_train(self, trainer: Any) -> None:
        self.task.final = True  # the final evaluation of best.pt: IoU 0.65 and pycocotools on COCO data

    def before_step(self, trainer: Any) -> None: ...

    def after_epoch(self, trainer: Any) -> None: ...
