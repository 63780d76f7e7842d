"""Whole detection training runs: ``nostride train`` against the reference's ``train.py``, same data and settings.

Each run is its own process (as a user starts it), the variants round-robin ``--repeats`` times so
that machine load hits them alike. Per run: the wall seconds of its epochs (from the first
epoch's start to the end of the last one: data loading, training steps, the validation of each
epoch and its checkpoints) and of the whole process (start-up, data scan, model build and the
final evaluation included). Ratios are reference / nostride seconds of the same repeat, median
over the repeats (above 1: nostride is faster).

Both sides: ``--model`` from scratch (yolov5n against YOLOv5 v6.0's ``train.py``, yolov5n_spd
against the SPD-Conv fork's), the scratch hyperparameters (YOLOv5 v6.0's default, the same values
as nostride's ``--hyp scratch``, whose file both read), the
same images (a copy of ``--data``'s train and val splits: the reference writes label caches beside
them), ``--img-size``, ``--batch-size``, ``--epochs``, ``--workers``, autoanchor off and no plots
(the reference's plotting imports pandas and seaborn, which this benchmark stubs out; its final
validation runs without plots). nostride's final evaluation may add pycocotools on COCO data; the
copy leaves out the COCO json so it does not. Variants: ``nostride`` as ``nostride train`` runs
it, and with extra ``nostride train`` options (``--variant "channels_last=True"``,
``--variant "spd_form=strided,channels_last=True"``).

The reference is imported from a checkout of ultralytics/yolov5 at tag v6.0 (``--reference``) or
the ``YOLOv5-SPD`` folder of LabSAINT/SPD-Conv (``--reference-spd``, for yolov5n_spd); nothing of
them is in this repository; the optional modules they import (pandas, seaborn,
tensorboard) are stubbed, ``torch.load`` is given ``weights_only=False`` for its own files, and a
temporary copy of it gets the one-line loss fix current PyTorch needs (see :func:`_reference_copy`).

    python benchmarks/train_detect_run.py --reference /tmp/yolov5 [--data ../shared/data/coco128/data.yaml]
        [--img-size 320] [--batch-size 16] [--epochs 2] [--workers 2] [--repeats 3] [--variant channels_last=True]
    python benchmarks/train_detect_run.py --model yolov5n_spd --reference-spd /tmp/SPD-Conv/YOLOv5-SPD
        --variant spd_form=strided,channels_last=True
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MARK = "TIMINGS "
REFERENCE_CFG = {"yolov5n": "models/yolov5n.yaml", "yolov5n_spd": "models/space_depth_n.yaml"}


def _copy_data(data: str, dest: Path) -> Path:
    """Train and val images and labels of ``data`` under ``dest``, and a YOLOv5 v6.0 style yaml (nc + names list)."""
    import yaml

    from nostride.data.detection import DetectionDataset, load_data_yaml

    cfg = load_data_yaml(data)
    for split, source in (("train", cfg.split("train")), ("val", cfg.val)):
        index = DetectionDataset(source, names=cfg.names, verbose=False, cache=False)
        (dest / "images" / split).mkdir(parents=True)
        (dest / "labels" / split).mkdir(parents=True)
        for img, lab in zip(index.im_files, index.label_files):
            shutil.copy(img, dest / "images" / split / img.name)
            if lab.is_file():
                shutil.copy(lab, dest / "labels" / split / lab.name)
    names = list(cfg.names.values()) if isinstance(cfg.names, dict) else list(cfg.names)
    path = dest / "data.yaml"
    path.write_text(yaml.safe_dump({"path": str(dest), "train": "images/train", "val": "images/val",
                                    "nc": len(names), "names": names}, sort_keys=False))
    return path


def _reference_copy(checkout: str, dest: Path) -> Path:
    """A copy of the reference checkout with the one line current PyTorch needs: its loss clamps
    integer grid indices with float bounds, which PyTorch now refuses (the same change as for
    ``benchmarks/train_detect.py``)."""
    shutil.copytree(checkout, dest, ignore=shutil.ignore_patterns(".git", "runs", "*.pt"))
    loss = dest / "utils" / "loss.py"
    loss.write_text(loss.read_text().replace("clamp_(0, gain[3] - 1), gi.clamp_(0, gain[2] - 1)",
                                             "clamp_(0, int(gain[3]) - 1), gi.clamp_(0, int(gain[2]) - 1)"))
    return dest


def _run_nostride(args: argparse.Namespace, options: dict) -> dict:
    import nostride
    from nostride.engine import Hook

    marks: dict[str, float] = {}

    class Clock(Hook):
        def before_epoch(self, trainer):
            marks.setdefault("first_epoch", time.perf_counter())

        def after_epoch(self, trainer):  # after the epoch's validation and checkpoints
            marks["last_epoch"] = time.perf_counter()

    nostride.train(args.model, args.data, img_size=args.img_size, batch_size=args.batch_size, epochs=args.epochs,
                   workers=args.workers, device="cpu", plots=False, autoanchor=False, quiet=True,
                   project=args.project, name=args.name, hooks=[Clock()], **options)
    return marks


def _run_reference(args: argparse.Namespace) -> dict:
    import torch

    sys.path.insert(0, str(REPO / "benchmarks"))
    from yolov5_val_crosscheck import _stub_reference_imports

    _stub_reference_imports()
    tb = types.ModuleType("torch.utils.tensorboard")

    class SummaryWriter:  # no TensorBoard here
        def __init__(self, *a, **k) -> None: ...

        def __getattr__(self, name):
            return lambda *a, **k: None

    tb.SummaryWriter = SummaryWriter
    sys.modules["torch.utils.tensorboard"] = tb
    load = torch.load
    torch.load = lambda *a, **k: load(*a, **{"weights_only": False, **k})  # its checkpoints pickle the model
    sys.path.insert(0, str(Path(args.reference).resolve()))
    os.chdir(args.reference)
    import train  # noqa: E402  (YOLOv5 v6.0)
    import val
    from utils.callbacks import Callbacks
    from utils.loggers import Loggers

    def nothing(*a, **k):
        return None

    train.check_git_status = train.check_requirements = nothing  # no network, no pip
    train.plot_labels = nothing
    Loggers.on_train_batch_end = nothing  # batch pictures and the TensorBoard graph
    Loggers.on_train_end = nothing  # results.png (pandas)
    run_val = val.run
    val.run = lambda *a, **k: run_val(*a, **{**k, "plots": False})
    marks: dict[str, float] = {}
    callbacks = Callbacks()
    callbacks.register_action("on_pretrain_routine_end", "clock",
                              lambda *a, **k: marks.setdefault("first_epoch", time.perf_counter()))
    callbacks.register_action("on_model_save", "clock",  # after the epoch's validation and checkpoints
                              lambda *a, **k: marks.__setitem__("last_epoch", time.perf_counter()))
    opt = train.parse_opt(True)
    from nostride.tasks.detect.hyp import hyp_path

    for k, v in dict(cfg=REFERENCE_CFG[args.model], weights="", hyp=str(hyp_path("scratch")), data=args.data, imgsz=args.img_size,
                     batch_size=args.batch_size, epochs=args.epochs, workers=args.workers, device="cpu",
                     noautoanchor=True, project=args.project, name=args.name, exist_ok=True).items():
        setattr(opt, k, v)
    train.main(opt, callbacks)
    return marks


def _one_run(args: argparse.Namespace) -> None:
    options = json.loads(args.options or "{}")
    marks = _run_reference(args) if args.run == "reference" else _run_nostride(args, options)
    print(MARK + json.dumps({"epochs": marks["last_epoch"] - marks["first_epoch"]}), flush=True)


def _parse_variant(text: str) -> dict:
    import yaml

    out = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        out[key.strip()] = yaml.safe_load(value)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=list(REFERENCE_CFG), default="yolov5n")
    ap.add_argument("--reference", help="checkout of ultralytics/yolov5 at tag v6.0 (for yolov5n)")
    ap.add_argument("--reference-spd", help="the YOLOv5-SPD folder of LabSAINT/SPD-Conv (for yolov5n_spd)")
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "coco128" / "data.yaml"))
    ap.add_argument("--img-size", type=int, default=320)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--variant", action="append", default=[],
                    help="extra nostride variant: nostride.train options, e.g. channels_last=True")
    ap.add_argument("--run", choices=["nostride", "reference"], help=argparse.SUPPRESS)  # one run (internal)
    ap.add_argument("--options", help=argparse.SUPPRESS)
    ap.add_argument("--project", help=argparse.SUPPRESS)
    ap.add_argument("--name", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run:
        return _one_run(args)

    tmp = Path(tempfile.mkdtemp(prefix="train-detect-run-"))
    try:
        data = _copy_data(args.data, tmp / "data")
        checkout = args.reference_spd if args.model == "yolov5n_spd" else args.reference
        reference = _reference_copy(checkout, tmp / "reference") if checkout else None
        ref = None if reference is None else "SPD-Conv fork" if args.model == "yolov5n_spd" else "YOLOv5 v6.0"
        variants: dict[str, tuple[str, dict]] = {"nostride": ("nostride", {})}
        for v in args.variant:
            variants[f"nostride {v}"] = ("nostride", _parse_variant(v))
        if ref is not None:
            variants[ref] = ("reference", {})
        epochs: dict[str, list[float]] = {k: [] for k in variants}
        totals: dict[str, list[float]] = {k: [] for k in variants}
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        for r in range(args.repeats):
            for i, (label, (side, options)) in enumerate(variants.items()):
                cmd = [sys.executable, str(Path(__file__).resolve()), "--run", side, "--options", json.dumps(options),
                       "--model", args.model,
                       "--data", str(data), "--img-size", str(args.img_size), "--batch-size", str(args.batch_size),
                       "--epochs", str(args.epochs), "--workers", str(args.workers),
                       "--project", str(tmp / "runs"), "--name", f"r{r}v{i}"]
                if reference is not None:
                    cmd += ["--reference", str(reference)]
                start = time.perf_counter()
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                total = time.perf_counter() - start
                line = next((x for x in proc.stdout.splitlines() if x.startswith(MARK)), None)
                if proc.returncode or line is None:
                    sys.exit(f"{label} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
                epochs[label].append(json.loads(line[len(MARK):])["epochs"])
                totals[label].append(total)
                print(f"  repeat {r + 1} {label:<46} epochs {epochs[label][-1]:7.1f} s   whole run {total:7.1f} s",
                      flush=True)
        print(f"\n{args.epochs} epochs of {args.model} from scratch at {args.img_size} px, batch {args.batch_size}, "
              f"{args.workers} workers, on {args.data}; median of {args.repeats} runs each, round-robin")

        def paired(times: dict[str, list[float]], label: str) -> float:  # the same repeat: the same machine load
            return statistics.median(r / x for r, x in zip(times[ref], times[label]))

        for label in variants:
            e, t = statistics.median(epochs[label]), statistics.median(totals[label])
            ratio = "" if ref is None or label == ref else (
                f"   {paired(epochs, label):.2f}x / {paired(totals, label):.2f}x the reference's speed")
            print(f"  {label:<46} epochs {e:7.1f} s   whole run {t:7.1f} s{ratio}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
