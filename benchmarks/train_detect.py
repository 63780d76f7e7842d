"""Detection training throughput: the model step and the data loader, measured separately and together.

* model step: forward + :class:`YOLOv5Loss` + backward + SGD step on a synthetic batch (8 boxes
  per image, the same for every variant), in train mode (AMP + GradScaler on CUDA), for yolov5n and
  yolov5n_spd at each size. Variants: nostride as ``nostride train`` runs it, and with the speed
  options of ``nostride train`` alone and combined: channels-last memory, for yolov5n_spd the
  strided SPD form (``--spd-form strided``), and with ``--compile`` each of those again under
  ``torch.compile`` (compilation happens in the warm-up call, outside the timing); and, when given
  (``--reference``), YOLOv5 v6.0's own ``Model`` + ``ComputeLoss`` from a checkout of
  ultralytics/yolov5 (tag v6.0) and, for yolov5n_spd, the SPD-Conv fork's (``--reference-spd``,
  the YOLOv5-SPD folder of LabSAINT/SPD-Conv). The reference code is imported from those folders
  at run time (its missing optional imports such as OpenCV or pandas are stubbed: the model and loss
  do not use them). All variants of a row are timed round-robin in this one process, so machine
  load hits them alike; the ratio column is variant / reference (or / nostride without one).
* loader: :class:`DetectionTrainDataset` with the default (scratch) augmentation: mosaic, random
  perspective, HSV, flips, on the coco128 training images (``--data``), ``--workers`` processes,
  with ``--cache ram`` and without a cache; images per second over whole epochs (worker start-up
  included) and per CPU-second of the workers and this process;
* together: loader + model step in one loop, as ``nostride train`` runs them;
* headroom = loader images/s / model-step images/s (the loader keeps up when it is above 1; the
  target is 3 for yolov5n at 320 with 2 workers on a CPU). On a CPU it is also given per
  CPU-second: workers and the model step share the cores, and CPU time is far less distorted than
  wall time when other jobs load the machine.

    python benchmarks/train_detect.py [--device cpu|cuda] [--threads 2] [--batch-size 16]
        [--sizes 320 640] [--workers 2] [--compile] [--reference /tmp/yolov5-v6.0]
        [--reference-spd /tmp/SPD-Conv/YOLOv5-SPD] [--data ../shared/data/coco128/data.yaml] [--quick]
        [--models yolov5n_spd] [--no-loader]
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import types
from pathlib import Path
from typing import Any, Callable

import torch
import statistics

from _common import add_device_args, apply_threads, cpu_seconds, describe_device, sync

from nostride.models import create_model, set_spd_form
from nostride.tasks.detect import YOLOv5Loss
from nostride.tasks.detect.hyp import load_hyp

MODELS = {"yolov5n": "yolov5n.yaml", "yolov5n_spd": "space_depth_n.yaml"}
LOSS_KEYS = ("box", "cls", "obj", "cls_pw", "obj_pw", "anchor_t", "fl_gamma")


def synthetic_batch(batch: int, size: int, device: torch.device, boxes: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images in [0, 1] and ``boxes`` random targets per image ``[i, cls, xc, yc, w, h]``."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, size, size, generator=g)
    n = batch * boxes
    t = torch.zeros(n, 6)
    t[:, 0] = torch.arange(batch).repeat_interleave(boxes).float()
    t[:, 1] = torch.randint(0, 80, (n,), generator=g).float()
    t[:, 2:4] = torch.rand(n, 2, generator=g) * 0.8 + 0.1
    t[:, 4:6] = torch.rand(n, 2, generator=g) * 0.25 + 0.05
    return x.to(device), t.to(device)


def make_step(model: torch.nn.Module, loss_fn: Callable, x: torch.Tensor, t: torch.Tensor,
              device: torch.device) -> Callable[[], None]:
    """One training step (forward, loss * bs, backward, SGD) as ``nostride train`` does it."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.937, nesterov=True, weight_decay=5e-4)
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=amp)

    def step() -> None:
        with torch.autocast(device.type, enabled=amp):
            loss, _ = loss_fn(model(x), t)
        scaler.scale(loss.sum()).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)

    return step


def nostride_step(name: str, x: torch.Tensor, t: torch.Tensor, device: torch.device, channels_last: bool = False,
                  compile: bool = False, spd_form: str = "spd") -> Callable[[], None]:
    torch.manual_seed(0)
    model = create_model(name, num_classes=80).to(device).train()
    set_spd_form(model, spd_form)
    hyp = {k: v for k, v in load_hyp("scratch").items() if k in LOSS_KEYS}
    loss_fn = YOLOv5Loss(model, hyp, img_size=x.shape[-1])
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    run = torch.compile(model) if compile else model
    return make_step(run, loss_fn, x, t, device)


# ------------------------------------------------------------------------------- the reference
class _Stub(types.ModuleType):
    """Stands in for an optional package the reference imports but the model and loss never use."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Stub(f"{self.__name__}.{name}")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _Stub(self.__name__ + "()")


def load_reference(folder: str) -> tuple[type, type]:
    """``(Model, ComputeLoss)`` of a YOLOv5 checkout (its ``models`` and ``utils`` packages are
    imported, then removed from ``sys.modules`` so that another checkout can be loaded too)."""
    for name in ("cv2", "pandas", "seaborn", "requests", "pkg_resources", "thop", "wandb", "tensorboard"):
        try:
            importlib.import_module(name)
        except Exception:
            sys.modules[name] = _Stub(name)
    sys.path.insert(0, str(Path(folder).resolve()))
    download = torch.hub.download_url_to_file
    # its plotting font (unused here) would be downloaded: matplotlib's DejaVu Sans stands in
    import shutil

    import matplotlib

    font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    torch.hub.download_url_to_file = lambda url, dst, *a, **k: shutil.copyfile(font, dst)
    try:
        yolo = importlib.import_module("models.yolo")
        loss = importlib.import_module("utils.loss")
        return yolo.Model, loss.ComputeLoss
    finally:
        torch.hub.download_url_to_file = download
        sys.path.pop(0)
        for mod in [m for m in sys.modules if m.split(".")[0] in ("models", "utils")]:
            del sys.modules[mod]


def reference_step(classes: tuple[type, type], folder: str, name: str, x: torch.Tensor, t: torch.Tensor,
                   device: torch.device) -> Callable[[], None]:
    Model, ComputeLoss = classes
    torch.manual_seed(0)
    model = Model(str(Path(folder) / "models" / MODELS[name] if name.endswith("_spd") else
                      Path(folder) / "models" / MODELS[name]), ch=3, nc=80).to(device).train()
    hyp = dict(load_hyp("scratch"))
    nl = model.model[-1].nl
    hyp["box"] *= 3 / nl  # the gain scaling train.py applies
    hyp["cls"] *= 80 / 80 * 3 / nl
    hyp["obj"] *= (x.shape[-1] / 640) ** 2 * 3 / nl
    hyp["label_smoothing"] = 0.0
    model.hyp, model.nc, model.gr = hyp, 80, 1.0
    return make_step(model, ComputeLoss(model), x, t, device)


# ----------------------------------------------------------------------------------- the loader
def build_loader(data: str, size: int, batch: int, workers: int, cache: str):
    from torch.utils.data import DataLoader

    from nostride.data.detection import DetectionDataset, collate_detection, load_data_yaml
    from nostride.data.detection.train_dataset import DetectionTrainDataset
    from nostride.engine.distributed import worker_init_fn

    cfg = load_data_yaml(data)
    index = DetectionDataset(cfg.train, names=cfg.names, verbose=False)
    ds = DetectionTrainDataset(index, size, hyp=load_hyp("scratch"), cache=cache, verbose=False)
    return DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, collate_fn=collate_detection,
                      worker_init_fn=worker_init_fn, drop_last=True)  # workers end each epoch: their CPU time counts


def loader_images_per_s(loader, epochs: int) -> float:
    """Images per wall second over ``epochs`` whole epochs (worker start-up included, as in training)."""
    n, start = 0, time.perf_counter()
    for _ in range(epochs):
        for images, *_ in loader:
            n += len(images)
    return n / (time.perf_counter() - start)


def together_images_per_s(loader, step_model: str, size: int, device: torch.device, batches: int) -> float:
    torch.manual_seed(0)
    model = create_model(step_model, num_classes=80).to(device).train()
    loss_fn = YOLOv5Loss(model, {k: v for k, v in load_hyp("scratch").items() if k in LOSS_KEYS}, img_size=size)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.937, nesterov=True)
    n, start, it = 0, None, iter(loader)
    for i in range(batches + 1):
        try:
            images, targets, *_ = next(it)
        except StopIteration:
            it = iter(loader)
            images, targets, *_ = next(it)
        x = images.to(device).float().div_(255)
        loss, _ = loss_fn(model(x), targets.to(device))
        loss.sum().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i == 0:
            sync(device)
            start = time.perf_counter()
        else:
            n += len(images)
    sync(device)
    return n / (time.perf_counter() - start)


def time_round_robin(fns: dict[str, Callable[[], None]], device: torch.device, repeats: int,
                     warmup: int = 1) -> dict[str, tuple[float, float]]:
    """``(median wall seconds, median CPU seconds)`` per call of each function, timed round-robin
    (call 1 of each, then call 2 of each, ...) so that load from other processes hits all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            sync(device)
            c0, t0 = cpu_seconds(), time.perf_counter()
            fn()
            sync(device)
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(cpu_seconds() - c0)
    return {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in fns}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_device_args(p)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--sizes", type=int, nargs="+", default=[320, 640])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd models")
    p.add_argument("--reference", help="a checkout of ultralytics/yolov5 at tag v6.0")
    p.add_argument("--reference-spd", help="the YOLOv5-SPD folder of LabSAINT/SPD-Conv")
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "coco128" / "data.yaml"))
    p.add_argument("--loader-epochs", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="320 only, 1 repeat, 1 loader epoch")
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS),
                   help="model-step rows for these models only (the loader section needs both)")
    p.add_argument("--no-loader", action="store_true", help="model step only (no loader / together sections)")
    args = p.parse_args()
    if args.quick:
        args.sizes, args.repeats, args.loader_epochs = [320], 1, 1
    apply_threads(args.threads)
    device = torch.device(args.device)
    print(f"device: {describe_device(device)}; batch {args.batch_size}; torch {torch.__version__}")

    refs: dict[str, tuple[tuple[type, type], str]] = {}
    if args.reference:
        refs["yolov5n"] = (load_reference(args.reference), args.reference)
    if args.reference_spd:
        refs["yolov5n_spd"] = (load_reference(args.reference_spd), args.reference_spd)

    cpu_note = device.type == "cpu"
    print("\nmodel step (forward + loss + backward + SGD); ratio = variant / reference (or / nostride)"
          + ("; per CPU-second: less distorted by other load" if cpu_note else ""))
    print(f"{'model':<12} {'size':>5} {'variant':<37} {'img/s':>8} {'ratio':>6}"
          + (f" {'img/CPU-s':>10} {'ratio':>6}" if cpu_note else ""))
    step_ips: dict[tuple[str, int], tuple[float, float]] = {}
    for size in args.sizes:
        x, t = synthetic_batch(args.batch_size, size, device)
        for name in args.models:
            # the levers of `nostride train`: --channels-last, --spd-form strided (SPD models), --compile
            spd = ("spd", "strided") if name.endswith("_spd") else ("spd",)
            fns = {}
            for compiled in (False, True) if args.compile else (False,):
                for form in spd:
                    for cl in (False, True):
                        label = " ".join(["nostride"] + (["strided"] if form == "strided" else [])
                                         + (["channels_last"] if cl else []) + (["compile"] if compiled else []))
                        fns[label] = nostride_step(name, x, t, device, channels_last=cl, compile=compiled,
                                                   spd_form=form)
            if name in refs:
                classes, folder = refs[name]
                fns["YOLOv5 reference"] = reference_step(classes, folder, name, x, t, device)
            times = time_round_robin(fns, device, args.repeats)
            base = times.get("YOLOv5 reference", times["nostride"])
            for variant, (wall, cpu) in times.items():
                line = f"{name:<12} {size:>5} {variant:<37} {args.batch_size / wall:>8.1f} {base[0] / wall:>6.2f}"
                if cpu_note:
                    line += f" {args.batch_size / cpu:>10.1f} {base[1] / cpu:>6.2f}"
                print(line, flush=True)
            w, c = times["nostride"]
            step_ips[(name, size)] = (args.batch_size / w, args.batch_size / c)

    if args.no_loader or len(args.models) < len(MODELS):
        return
    if not Path(args.data).is_file():
        print(f"\nloader: {args.data} not found, skipped")
        return
    print(f"\nloader (mosaic, perspective, HSV, flips; {args.workers} workers), images/s; "
          "headroom = loader / nostride model step")
    print(f"{'size':>5} {'cache':<6} {'img/s':>8} {'img/CPU-s':>10} {'headroom yolov5n':>17} "
          f"{'(per CPU-s)':>11} {'headroom yolov5n_spd':>21} {'(per CPU-s)':>11}")
    for size in args.sizes:
        for cache in ("ram", ""):
            loader = build_loader(args.data, size, args.batch_size, args.workers, cache)
            c0 = cpu_seconds()
            ips = loader_images_per_s(loader, args.loader_epochs)
            cps = ips * (args.loader_epochs * len(loader) * args.batch_size / ips) / max(cpu_seconds() - c0, 1e-9)
            del loader
            n, s_ = step_ips[("yolov5n", size)], step_ips[("yolov5n_spd", size)]
            print(f"{size:>5} {cache or 'none':<6} {ips:>8.1f} {cps:>10.1f} {ips / n[0]:>17.2f} {cps / n[1]:>11.2f} "
                  f"{ips / s_[0]:>21.2f} {cps / s_[1]:>11.2f}", flush=True)
    print("\ntogether (loader + model step in one loop, cache ram), images/s")
    for size in args.sizes:
        loader = build_loader(args.data, size, args.batch_size, args.workers, "ram")
        for name in MODELS:
            ips = together_images_per_s(loader, name, size, device, batches=max(4, args.repeats * 2))
            print(f"{name:<12} {size:>5} {ips:>8.1f}  (model step alone {step_ips[(name, size)][0]:.1f})", flush=True)


if __name__ == "__main__":
    main()
