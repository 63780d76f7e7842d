"""Classify images with a trained checkpoint: ``predict_classes()`` and ``nostride predict`` (classify).

Preprocessing must match training, so it comes from the checkpoint (see :func:`preprocessing_from_checkpoint`):
the image's shorter side is resized to ``img_size`` and the central square taken, then pixels are
scaled to [0, 1] and normalised with the training ``mean`` / ``std``
(``nostride.data.classification.eval_transform``).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ...checkpoint import model_or_checkpoint, recorded_option
from ...data.io import ImageDecodeError, list_images, read_image_rgb
from ...utils.device import select_device

__all__ = ["Preprocessing", "preprocessing_from_checkpoint", "list_images", "predict_classes", "run_cli"]


@dataclass(frozen=True)
class Preprocessing:
    """How images are prepared for a model: resize/centre-crop size and normalisation."""

    img_size: int | None  # None: unknown (the caller must give one)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    source: str  # where the values came from, for messages


def _format_defaults(data_path: str | None, fmt: str | None = None) -> tuple[str | None, int | None, tuple, tuple]:
    """(format, native image size, mean, std) of the training data's format (given, or from its path)."""
    from ...data.classification import CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD, detect_format

    if fmt is None and data_path:
        try:
            fmt = detect_format(data_path)
        except (OSError, ValueError):
            fmt = "cifar10" if "cifar" in Path(str(data_path)).name.lower() else None  # gone, but named
    if fmt is not None and fmt.startswith("cifar"):
        return fmt, 32, CIFAR10_MEAN, CIFAR10_STD
    if fmt == "tiny-imagenet":
        return fmt, 64, IMAGENET_MEAN, IMAGENET_STD
    return fmt, None, IMAGENET_MEAN, IMAGENET_STD


def _stats(value: Any) -> tuple[float, float, float] | None:
    if isinstance(value, (list, tuple)) and len(value) == 3 and all(isinstance(v, (int, float)) for v in value):
        return tuple(float(v) for v in value)
    return None


def preprocessing_from_checkpoint(ckpt: dict[str, Any], img_size: int | None = None) -> Preprocessing:
    """The preprocessing a classification checkpoint was trained with.

    Order of precedence, for each value:

    1. ``img_size`` given here (e.g. ``--img-size``);
    2. what the checkpoint records: ``ckpt["config"]["img_size" | "mean" | "std"]`` (the training
       options), else the same keys at the checkpoint's top level or in ``ckpt["data"]``;
    3. the defaults of the training dataset's format (``data_format`` as recorded, else detected
       from the ``config["data"]`` path): CIFAR-10 -> 32 px
       and the CIFAR-10 statistics; Tiny ImageNet -> 64 px and the ImageNet statistics;
    4. the ImageNet mean / std (an approximation for image folders, whose statistics are estimated
       at training time and should be recorded in the checkpoint).

    ``img_size`` stays ``None`` when none of these gives one.
    """
    config = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    recorded_fmt = recorded_option(ckpt, "data_format")
    fmt, fmt_size, fmt_mean, fmt_std = _format_defaults(config.get("data"), recorded_fmt if isinstance(recorded_fmt, str) else None)
    sources = []
    size = img_size
    if size is None:
        recorded = recorded_option(ckpt, "img_size")
        if isinstance(recorded, int) and recorded > 0:
            size = recorded
            sources.append("img_size from the checkpoint")
        elif fmt_size is not None:
            size = fmt_size
            sources.append(f"img_size = the {fmt} default")
    mean, std = _stats(recorded_option(ckpt, "mean")), _stats(recorded_option(ckpt, "std"))
    if mean is None or std is None:
        mean, std = tuple(fmt_mean), tuple(fmt_std)
        sources.append(f"mean/std = the {fmt if fmt_size else 'ImageNet'} default (none recorded)")
    else:
        sources.append("mean/std from the checkpoint")
    return Preprocessing(size, mean, std, "; ".join(sources))


class _ImageFiles(Dataset):
    """Items ``(index, tensor or None, error or None)``: an unreadable file is reported, not raised."""

    def __init__(self, files: Sequence[Path], transform) -> None:
        self.files = list(files)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        try:
            return i, self.transform(read_image_rgb(self.files[i])), None
        except (ImageDecodeError, OSError) as e:
            return i, None, str(e)


def _collate(items):
    return items  # images stacked by the caller after dropping unreadable ones


@torch.inference_mode()
def _predict(
    model_or_ckpt: nn.Module | dict | str | os.PathLike,
    source: str | os.PathLike | Sequence[str | os.PathLike],
    topk: int = 5,
    img_size: int | None = None,
    device: str | torch.device | None = None,
    class_names: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    batch_size: int = 16,
    workers: int | None = None,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], list[tuple[str, str]], Preprocessing]:
    from nostride.utils.progress import progress as progress_bar

    from ...data.classification import IMAGENET_MEAN, IMAGENET_STD, eval_transform

    if topk < 1:
        raise ValueError(f"topk must be >= 1, got {topk}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model, ckpt = model_or_checkpoint(model_or_ckpt, "classify", "predict_classes")
    if ckpt is not None:
        prep = preprocessing_from_checkpoint(ckpt, img_size)
    else:
        prep = Preprocessing(img_size, tuple(IMAGENET_MEAN), tuple(IMAGENET_STD), "ImageNet mean/std default")
    if mean is not None or std is not None:
        if mean is None or std is None:
            raise ValueError("give both mean and std, or neither")
        prep = Preprocessing(prep.img_size, tuple(mean), tuple(std), prep.source + "; mean/std given")
    if prep.img_size is not None:
        from ...utils.bounds import check_img_size

        check_img_size(prep.img_size)
    if prep.img_size is None:
        raise ValueError("the input size is unknown (the checkpoint records none): pass img_size / --img-size")
    names = list(class_names) if class_names is not None else getattr(model, "names", None)

    from ...utils.paths import natural_key

    files = list_images(source)
    if not isinstance(source, (list, tuple)):
        files = sorted(files, key=natural_key)  # a folder's frame2 before frame10
    dev = select_device(device)
    if workers is None:  # worker start-up costs more than it saves on a few images
        workers = 0 if len(files) <= 4 * batch_size else min(4, os.cpu_count() or 1)
    loader = DataLoader(_ImageFiles(files, eval_transform(prep.img_size, prep.mean, prep.std)),
                        batch_size=batch_size, num_workers=workers, collate_fn=_collate)
    model.eval().to(dev)
    results: list[dict[str, Any]] = []
    skipped: list[tuple[str, str]] = []
    bar = progress_bar(total=len(files), desc="predict", unit="img", disable=not progress or len(files) == 1)
    for batch in loader:
        good = [(i, x) for i, x, err in batch if x is not None]
        for i, _, err in batch:
            if err is not None:
                skipped.append((str(files[i]), err))
                warnings.warn(f"skipping unreadable image: {err}", RuntimeWarning, stacklevel=2)
        bar.update(len(batch))
        if not good:
            continue
        images = torch.stack([x for _, x in good]).to(dev)
        logits = model(images).float()
        if names is not None and logits.shape[1] != len(names):
            raise ValueError(f"the model outputs {logits.shape[1]} classes but there are {len(names)} class names")
        probs = logits.softmax(1)
        k = min(topk, probs.shape[1])
        # stable descending sort of the logits: ties go to the lower class index, so top-1 == argmax
        order = logits.sort(dim=1, descending=True, stable=True).indices[:, :k]
        finite = torch.isfinite(logits).all(1).cpu()
        for (i, _), idx, p, ok in zip(good, order.cpu(), probs.cpu(), finite):
            if not ok:  # a ranking of NaN scores is no prediction: reported, never written
                err = (f"{files[i]}: the model's outputs for this image are not finite (NaN/inf: diverged or "
                       "damaged weights); no prediction")
                skipped.append((str(files[i]), err))
                warnings.warn(err, RuntimeWarning, stacklevel=2)
                continue
            top = [(int(c), names[c] if names is not None else str(int(c)), float(p[c])) for c in idx]
            results.append({"path": str(files[i]), "topk": top})
    bar.close()
    return results, skipped, prep


def predict_classes(
    model_or_ckpt_path: nn.Module | dict | str | os.PathLike,
    source: str | os.PathLike | Sequence[str | os.PathLike],
    topk: int = 5,
    img_size: int | None = None,
    device: str | torch.device | None = None,
    class_names: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    batch_size: int = 16,
    workers: int | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Top-k classes of each image in ``source``.

    Args:
        model_or_ckpt_path: a checkpoint path, a checkpoint dict, or a model (then ``img_size`` is
            required and ``mean``/``std`` default to ImageNet's).
        source: an image file, a folder (searched recursively, files sorted by path, numbers in names
            compared as numbers: ``frame2`` before ``frame10``) or a list of files.
        topk: classes per image (clipped to the number of classes).
        img_size: input size; default the checkpoint's (see :func:`preprocessing_from_checkpoint`).
        device: ``"cpu"``, ``"cuda"``, ... or ``None`` for the best available.
        class_names: names to report (default: the checkpoint's ``names``; else the index as text).
        mean, std: normalisation overriding the checkpoint's.
        batch_size: images per forward pass.
        workers: DataLoader workers (default: 0 for a few images, else up to 4).
        progress: progress bar for more than one image.

    Returns:
        One dict per readable image, in ``source`` order: ``{"path": str, "topk": [(class_index,
        name, probability), ...]}``, best first. Unreadable images are skipped with a
        ``RuntimeWarning`` naming each.
    """
    results, _, _ = _predict(model_or_ckpt_path, source, topk, img_size, device, class_names, mean, std,
                             batch_size, workers, progress)
    return results


def _display_path(path: str, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root)) if root.is_dir() else Path(path).name
    except ValueError:
        return path


def format_table(results: list[dict[str, Any]], root: Path | None = None) -> str:
    """Predictions as an aligned text table: one row per image, columns = ranks 1..k ("name prob%")."""
    if not results:
        return ""
    rows = [[_display_path(r["path"], root) if root is not None else r["path"]]
            + [f"{name} {100 * p:.1f}%" for _, name, p in r["topk"]] for r in results]
    k = max(len(r) for r in rows) - 1
    header = ["image"] + [f"top-{i + 1}" for i in range(k)]
    widths = [max(len(str(row[c])) if c < len(row) else 0 for row in rows + [header]) for c in range(k + 1)]
    line = lambda row: "  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header)] + [line(row) for row in rows])


def run_cli(args: argparse.Namespace, ckpt: dict[str, Any]) -> int:
    """``nostride predict`` for a classification checkpoint: print the top-k table (exit 1 if no image was readable)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # bad files are listed below instead
        results, skipped, prep = _predict(ckpt, args.source, topk=args.topk, img_size=args.img_size,
                                          device=args.device or None, batch_size=args.batch_size)
    from ...utils.numbers import plural

    label = ckpt.get("model_name") or f"{ckpt.get('source')}:{ckpt.get('source_model')}"
    print(f"{label}: {plural(len(results), 'image')}, input {prep.img_size}x{prep.img_size} ({prep.source})")
    table = format_table(results, Path(args.source))
    if table:
        print(table)
    if skipped:
        print(f"skipped {plural(len(skipped), 'image')} (unreadable, or no finite model output):", file=sys.stderr)
        for _, err in skipped:
            print(f"  {err}", file=sys.stderr)
    if not results:
        print(f"nostride predict: error: none of the images in {args.source} gave a prediction (see above)",
              file=sys.stderr)
        return 1
    if not getattr(args, "no_save", False):
        from ...utils.paths import increment_path

        out = increment_path(Path(getattr(args, "project", "runs/predict")) / getattr(args, "name", "exp"),
                             getattr(args, "exist_ok", False))
        out.mkdir(parents=True, exist_ok=True)
        save_predictions(results, out, weights=str(args.weights), model=label, img_size=prep.img_size,
                         skipped=[str(err) for _, err in skipped])
        print(f"results saved to {out} (predictions.json, predictions.csv)")
    return 0


def save_predictions(results: list[dict[str, Any]], folder: str | Path, **info: Any) -> tuple[Path, Path]:
    """Write ``predictions.json`` (``info`` plus one entry per image) and ``predictions.csv`` (one row per
    image and rank: ``path, rank, class_index, class_name, probability``) to ``folder``."""
    import csv
    import io
    import json

    from ...utils.atomic import atomic_write_text
    from ...utils.numbers import round_sig

    folder = Path(folder)
    images = [{"path": r["path"], "topk": [{"class_index": int(i), "class_name": name, "probability": round_sig(float(p))}
                                           for i, name, p in r["topk"]]} for r in results]
    json_path, csv_path = folder / "predictions.json", folder / "predictions.csv"
    atomic_write_text(json_path, json.dumps({**info, "images": images}, indent=1))
    buffer = io.StringIO(newline="")
    w = csv.writer(buffer)
    w.writerow(["path", "rank", "class_index", "class_name", "probability"])
    for image in images:
        for rank, t in enumerate(image["topk"], 1):
            w.writerow([image["path"], rank, t["class_index"], t["class_name"], t["probability"]])
    atomic_write_text(csv_path, buffer.getvalue())
    return json_path, csv_path
