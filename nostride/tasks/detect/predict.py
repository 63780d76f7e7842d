"""Detect objects with a YOLOv5(-SPD) model: ``predict()`` from Python and ``nostride predict``.

Pipeline per image: decode to uint8 RGB -> letterbox to ``img_size`` (a multiple of the model's
largest stride; OpenCV's ``INTER_LINEAR`` resize, grey 114 padding; with one image per batch the
minimal stride-multiple rectangle, YOLOv5 ``detect.py``'s tensor pixel for pixel; with larger
batches a square, so images stack) -> scale to [0, 1] -> eval-mode model ->
:func:`~nostride.tasks.detect.nms.non_max_suppression` -> boxes mapped back to the original image
with the letterbox's own ratio and padding (:func:`~nostride.data.detection.scale_boxes`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ...checkpoint import model_from_checkpoint, model_or_checkpoint, recorded_option
from ...data.detection.letterbox import scale_boxes
from ...data.files import list_images
from ...utils.atomic import atomic_write_text
from ...utils.device import select_device
from ...utils.paths import increment_path
from .detections import Detections
from .draw import draw_detections, save_image
from .nms import non_max_suppression
from .sources import LetterboxedImages, collate_list, image_items

__all__ = [
    "Detections",
    "predict",
    "iter_detections",
    "default_img_size",
    "check_img_size",
    "list_images",
    "draw_detections",
    "increment_run_dir",
    "run_cli",
]


def check_img_size(img_size: int, stride: int) -> int:
    """``img_size`` rounded up to a multiple of ``stride`` (with a warning when it changes)."""
    from ...utils.bounds import check_img_size as check_bounds

    check_bounds(img_size)  # before anything is allocated at that size
    new = int(math.ceil(img_size / stride) * stride)
    if new != img_size:
        warnings.warn(f"img_size {img_size} is not a multiple of the model stride {stride}; using {new}", stacklevel=3)
    return new


def _model_stride(model: nn.Module) -> int:
    stride = getattr(model, "stride", None)
    if stride is None:
        return 32
    return int(torch.as_tensor(stride).max().item())


def _class_names(model: nn.Module, names: Sequence[str] | None) -> list[str]:
    if names is not None:
        return list(names)
    model_names = getattr(model, "names", None)
    if isinstance(model_names, dict):  # {index: name}
        return [model_names[k] for k in sorted(model_names)]
    if model_names is not None:
        return list(model_names)
    nc = getattr(getattr(model, "model", [None])[-1], "nc", None) if hasattr(model, "model") else None
    return [str(i) for i in range(nc or 0)]


@torch.inference_mode()
def iter_detections(
    model: nn.Module,
    source: Any,
    img_size: int = 640,
    conf: float = 0.25,
    iou: float = 0.45,
    max_det: int = 300,
    agnostic: bool = False,
    classes: Sequence[int] | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 1,
    names: Sequence[str] | None = None,
    progress: bool = False,
    workers: int | None = None,
) -> Iterator[tuple[Detections | None, Tensor | None, str | None, float]]:
    """Yield ``(detections, original uint8 image, error, seconds per image)`` for each input, in order.

    An unreadable file yields ``(None, None, message, 0)`` and the run goes on. Images are decoded
    and letterboxed by ``workers`` DataLoader processes (default: none for a few images or for
    tensors, else up to 4).
    """
    from nostride.utils.progress import progress as progress_bar

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    items = image_items(source)
    dev = select_device(device)
    model = model.to(dev).eval()
    stride = _model_stride(model)
    size = check_img_size(int(img_size), stride)
    fixed = getattr(model, "fixed_input_hw", None)  # an exported file of a fixed input shape
    if fixed is not None and size != fixed[0]:
        warnings.warn(f"{model.path.name} takes {fixed[0]}x{fixed[1]} inputs; predicting at {fixed[0]}, not {size}",
                      stacklevel=3)
        size = fixed[0]
    class_names = _class_names(model, names)
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    if workers is None:  # worker start-up costs more than it saves on a few images
        from_files = not any(isinstance(item, Tensor) for _, item in items)
        workers = min(4, os.cpu_count() or 1) if from_files and len(items) > 4 * batch_size else 0
    # one image per batch: YOLOv5 detect.py's minimal rectangle; larger batches share a square
    images = LetterboxedImages(items, size, stride, auto=batch_size == 1)
    loader = DataLoader(images, batch_size=batch_size, num_workers=workers,
                        collate_fn=collate_list)

    bar = progress_bar(total=len(items), desc="predict", unit="img", disable=not progress)
    for loaded in loader:
        batch = []  # (name, original, letterboxed, ratio, pad)
        for name, img0, img, ratio, pad, err in loaded:
            if err is not None:
                bar.update(1)
                yield None, None, err, 0.0
            else:
                batch.append((name, img0, img, ratio, pad))
        if not batch:
            continue
        t0 = time.perf_counter()
        x = torch.stack([b[2] for b in batch]).to(dev).to(dtype) / 255
        out = model(x)
        pred = out[0] if isinstance(out, (tuple, list)) else out
        finite = torch.isfinite(pred).flatten(1).all(1).tolist()
        if not all(finite):  # NaN/inf outputs are no detections: those images are reported, not drawn
            pred = torch.nan_to_num(pred, nan=0.0, posinf=0.0, neginf=0.0)
        best = _best_scores(pred, classes)
        dets = non_max_suppression(pred, conf, iou, classes=classes, agnostic=agnostic, max_det=max_det)
        dets = [d.float().cpu() for d in dets]  # (also waits for the device, for the timing)
        dt = (time.perf_counter() - t0) / len(batch)
        for (name, img0, img, ratio, pad), d, top, ok in zip(batch, dets, best, finite):
            if not ok:
                bar.update(1)
                yield None, None, (f"{name}: the model's outputs for this image are not finite (NaN/inf: diverged "
                                   "or damaged weights); no detections"), dt
                continue
            boxes = scale_boxes(img.shape[1:], d[:, :4].clone(), img0.shape[1:], (ratio, pad))
            result = Detections(
                path=name,
                boxes=boxes,
                scores=d[:, 4].clone(),
                classes=d[:, 5].long(),
                names=class_names,
                image_size=(int(img0.shape[1]), int(img0.shape[2])),
                best_score=top,
            )
            bar.update(1)
            yield result, img0, None, dt
    bar.close()


def _best_scores(pred: Tensor, classes: Sequence[int] | None) -> list[float]:
    """Per image, the highest confidence (objectness x class probability) of any candidate box, among
    ``classes`` when given: what a lower ``conf`` would let through."""
    scores = pred[..., 5:].float() * pred[..., 4:5].float()
    if classes is not None:
        keep = torch.tensor(sorted(set(int(c) for c in classes) & set(range(scores.shape[-1]))), dtype=torch.long)
        scores = scores[..., keep.to(scores.device)] if len(keep) else scores[..., :0]
    if scores.shape[-1] == 0 or scores.shape[1] == 0:
        return [0.0] * pred.shape[0]
    return scores.amax(dim=(1, 2)).cpu().tolist()


def predict(
    model_or_weights: nn.Module | dict | str | os.PathLike,
    source: Any,
    img_size: int | None = None,
    conf: float = 0.25,
    iou: float = 0.45,
    max_det: int = 300,
    agnostic: bool = False,
    classes: Sequence[int] | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 1,
    names: Sequence[str] | None = None,
    progress: bool = False,
    workers: int | None = None,
) -> list[Detections]:
    """Detect objects in images.

    Args:
        model_or_weights: a YOLOv5 model (eval-mode output ``(decoded, raw)`` or just ``decoded``),
            a nostride checkpoint dict, or a checkpoint path.
        source: an image file, a folder (recursive), a list of files, a uint8 (3, H, W) tensor, a
            (B, 3, H, W) batch or a list of (3, H, W) tensors.
        img_size: square inference size, rounded up to a multiple of the model's stride; default
            the checkpoint's training size, else 640.
        conf, iou, max_det, agnostic, classes: NMS settings (:func:`non_max_suppression`).
        device: ``"cpu"``, ``"cuda"``, ... (default: the best available).
        batch_size: images per forward pass.
        names: class names (default: the model's / checkpoint's).
        progress: show a progress bar.
        workers: image-decoding processes (default: 0 for a few images, else up to 4).

    Returns:
        One :class:`Detections` per readable image, in input order, boxes in original-image
        pixels. Unreadable files are skipped with a ``RuntimeWarning`` naming each.
    """
    model, ckpt = model_or_checkpoint(model_or_weights, "detect", "detection predict")
    if img_size is None:
        img_size = default_img_size(ckpt)
    results = []
    for det, _, err, _ in iter_detections(model, source, img_size, conf, iou, max_det, agnostic, classes, device,
                                          batch_size, names, progress, workers):
        if err is not None:
            warnings.warn(f"skipping unreadable image: {err}", RuntimeWarning, stacklevel=2)
        else:
            results.append(det)
    return results


def default_img_size(ckpt: dict | None) -> int:
    """The training image size a checkpoint records (:func:`~nostride.checkpoint.recorded_option`), else 640."""
    size = recorded_option(ckpt, "img_size")
    return size if isinstance(size, int) and size > 0 else 640


def increment_run_dir(path: str | os.PathLike) -> Path:
    """``path`` if it does not exist, else ``path2``, ``path3``, ... (the first free one); not created.

    :func:`nostride.utils.increment_path` with ``mkdir=False``.
    """
    return increment_path(path, mkdir=False)


def run_cli(args: argparse.Namespace, ckpt: dict[str, Any]) -> int:
    """``nostride predict`` for a detection checkpoint (or an exported detector, or a YOLOv5 ``.pt``).

    Writes ``<project>/<name>[N]/``: the annotated images or video (unless ``--no-save``),
    ``labels/*.txt`` with ``--save-txt`` and ``predictions.json``; prints one line per image or frame.
    Returns 0, or 1 if no image was readable.
    """
    from .sources import is_video, natural_key

    model = model_from_checkpoint(ckpt)
    img_size = args.img_size or default_img_size(ckpt)
    source = Path(args.source)
    video = is_video(source)
    if video:
        if not source.is_file():
            raise FileNotFoundError(f"source not found: {source}")
        files = []
    else:
        files = sorted(list_images(source), key=natural_key)  # FileNotFoundError / ValueError: one CLI error line
    save_dir = increment_path(Path(args.project) / args.name, mkdir=False)
    names = ckpt.get("names")
    options = dict(conf=args.conf, iou=args.iou, max_det=args.max_det, agnostic=args.agnostic_nms,
                   classes=getattr(args, "classes", None), device=args.device or None, batch_size=args.batch_size,
                   names=names)
    draw = dict(line_width=getattr(args, "line_width", None), hide_labels=getattr(args, "hide_labels", False),
                hide_conf=getattr(args, "hide_conf", False))
    save_txt = getattr(args, "save_txt", False)

    records, skipped = [], []
    best: tuple[float, str] = (0.0, "")
    if video:
        stream = _video_detections(model, source, img_size, options, save_dir if not args.no_save else None, draw)
    else:
        progress = source.is_dir() and len(files) > 1
        stream = _image_detections(model, files, source, img_size, options, save_dir if not args.no_save else None,
                                   draw, progress)
    for det, err, label_name, shown in stream:
        if det is None:
            skipped.append(err)
            continue
        if det.best_score is not None and det.best_score > best[0]:
            best = (det.best_score, shown)
        if save_txt:
            txt = save_dir / "labels" / f"{label_name}.txt"
            txt.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(txt, "".join(r + "\n" for r in det.yolo_rows()))
        records.append(det.to_json())

    from nostride.utils.numbers import plural

    if records:  # something to write: the folder only now
        save_dir.mkdir(parents=True, exist_ok=True)
        summary = {
            "weights": str(args.weights),
            "model": ckpt.get("model_name"),
            "img_size": check_img_size(int(img_size), _model_stride(model)),
            "conf": args.conf,
            "iou": args.iou,
            "max_det": args.max_det,
            "agnostic_nms": bool(args.agnostic_nms),
            "classes": options["classes"],
            "names": _class_names(model, names),
            "images": records,
            "skipped": skipped,
        }
        atomic_write_text(save_dir / "predictions.json", json.dumps(summary, indent=1))
    n_det = sum(len(r["detections"]) for r in records)
    what = "frame" if video else "image"
    print(f"{plural(len(records), what)}, {plural(n_det, 'detection')}"
          + (f"; results saved to {save_dir}" if records else ""))
    if records and not n_det:
        among = f" among classes {' '.join(map(str, options['classes']))}" if options["classes"] else ""
        print(f"nothing scored above --conf {args.conf:g}: the highest confidence{among} was {best[0]:.2g} "
              f"({best[1]}); lower the threshold to see such boxes, e.g. --conf {_lower_conf(best[0])}",
              file=sys.stderr)
    if skipped:
        print(f"skipped {plural(len(skipped), 'image')} (unreadable, or no finite model output):", file=sys.stderr)
        for err in skipped:
            print(f"  {err}", file=sys.stderr)
    return 0 if records else 1


def _lower_conf(best: float) -> str:
    """A threshold just under ``best``, with one significant digit (0.031 -> 0.03; 0.0007 -> 0.0007)."""
    if best <= 0:
        return "0.001"
    exponent = math.floor(math.log10(best))
    return f"{math.floor(best / 10 ** exponent) * 10 ** exponent:.{max(-exponent, 0)}f}"


def _image_detections(model, files, source, img_size, options, save_dir, draw, progress):
    """``(detections or None, error or None, label file name, name to show)`` per image, printed as it goes."""
    log = _tqdm_write if progress else print
    n_total = len(files)
    for done, (det, img0, err, dt) in enumerate(iter_detections(model, files, img_size, progress=progress, **options), 1):
        if err is not None:
            log(f"image {done}/{n_total}: skipped, {err}")
            yield None, err, None, None
            continue
        rel = _relative(Path(det.path), source)
        h, w = det.image_size
        if save_dir is not None:
            out = save_image(draw_detections(img0, det, **draw), save_dir / rel)
            det.extra["saved_to"] = str(out)
        log(f"image {done}/{n_total} {rel}: {w}x{h} {det.summary()} ({dt * 1e3:.1f} ms)")
        yield det, None, rel.with_suffix("").as_posix(), str(rel)


def _video_detections(model, path: Path, img_size, options, save_dir, draw, chunk: int = 32):
    """``(detections, None, label file name, name to show)`` per frame of a video, read with OpenCV ``chunk`` frames at a
    time; with ``save_dir``, the annotated frames go to ``save_dir/NAME.mp4`` at the video's frame rate."""
    from .sources import read_video

    writer, out_path = None, None
    total = None
    try:
        for start, frames, fps, total in read_video(path, chunk):
            for k, (det, img0, err, dt) in enumerate(iter_detections(model, frames, img_size, **options)):
                index = start + k
                det.path = f"{path}#{index + 1}"
                det.extra["frame"] = index + 1
                h, w = det.image_size
                if save_dir is not None:
                    import cv2

                    if writer is None:
                        save_dir.mkdir(parents=True, exist_ok=True)
                        out_path = save_dir / f"{path.stem}.mp4"
                        writer = cv2.VideoWriter(str(out_path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
                    drawn = draw_detections(img0, det, **draw)
                    writer.write(drawn.permute(1, 2, 0).numpy()[:, :, ::-1].copy())  # RGB -> BGR
                    det.extra["saved_to"] = str(out_path)
                print(f"video {path.name} frame {index + 1}/{total or '?'}: {w}x{h} {det.summary()} ({dt * 1e3:.1f} ms)")
                yield det, None, f"{path.stem}_{index + 1}", f"{path.name} frame {index + 1}"
    finally:
        if writer is not None:
            writer.release()


def _relative(path: Path, source: Path) -> Path:
    if source.is_dir():
        try:
            return path.relative_to(source)
        except ValueError:
            pass
    return Path(path.name)


def _tqdm_write(msg: str) -> None:
    from tqdm import tqdm

    tqdm.write(msg)
