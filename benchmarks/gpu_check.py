"""GPU readiness check: the CUDA paths of training, validation and export, then a throughput table.

One run (under 8 minutes on one GPU at the defaults) does, and reports each as ok / FAILED / skipped:

* AMP training steps of yolov5n_spd (YOLOv5 loss) and resnet18_spd (cross-entropy): autocast +
  GradScaler, every loss finite, the scaler stepping (the weights move; a step skipped for an
  inf/NaN gradient lowers the scale, as it should, and is counted);
* the same steps with ``--compile`` (torch.compile), ``--spd-form strided`` and channels-last;
* ``nostride val --half`` of a yolov5n_spd checkpoint (``--data``: a dataset YAML; default: a
  small generated one), metrics.json written;
* ``nostride export --half`` of that checkpoint, checked in ONNX Runtime (its CUDA provider when
  onnxruntime-gpu is installed, else the CPU provider);
* a throughput table: training-step images/s of nostride's yolov5n, yolov5n_spd (also strided +
  channels-last) and resnet18_spd (compiled steps are timed by benchmarks/train_detect.py
  --compile; here compilation is checked, not timed, to stay in budget), and of YOLOv5 v6.0's own yolov5n
  and the SPD-Conv fork's yolov5n_spd (``--reference``, ``--reference-spd``: checkouts, loaded as
  benchmarks/train_detect.py does), timed round-robin in this process.

``--device cpu`` is the smoke mode: tiny sizes, float32 (AMP, float16 validation and export need
CUDA: the first two run in float32, the export must refuse ``--half`` with one line), no compile
unless ``--compile`` is given (minutes on a CPU). tests/test_gpu_check.py runs it.

    python benchmarks/gpu_check.py [--device cuda] [--img-size 320] [--batch-size 32] [--steps 20]
        [--reference /tmp/yolov5-v6.0] [--reference-spd /tmp/SPD-Conv/YOLOv5-SPD] [--data coco128.yaml]
    python benchmarks/gpu_check.py --device cpu          # smoke mode
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from _common import describe_device, sync

RESULTS: list[tuple[str, str, str]] = []


def check(name: str, fn: Callable[[], str]) -> None:
    """Run one check; record ok (with ``fn``'s note), skipped (``fn`` returns "skipped: ...") or FAILED."""
    t0 = time.perf_counter()
    try:
        note = fn()
        status = "skipped" if note.startswith("skipped") else "ok"
    except Exception as e:  # a check that fails must not stop the others
        status, note = "FAILED", f"{type(e).__name__}: {e}".splitlines()[0][:300]
        traceback.print_exc(file=sys.stderr)
    RESULTS.append((name, status, f"{note} ({time.perf_counter() - t0:.1f}s)"))
    print(f"[{status}] {name}: {RESULTS[-1][2]}", flush=True)


# --------------------------------------------------------------------------------- training steps
def detector_step(name: str, x: torch.Tensor, targets: torch.Tensor, device: torch.device, amp: bool,
                  channels_last: bool = False, compile: bool = False, spd_form: str = "spd"):
    """A yolov5 training step as ``nostride train`` runs it; returns ``(step, model, scaler)``."""
    from nostride.models import create_model, set_spd_form
    from nostride.tasks.detect import YOLOv5Loss
    from nostride.tasks.detect.hyp import load_hyp

    torch.manual_seed(0)
    model = create_model(name, num_classes=80).to(device).train()
    set_spd_form(model, spd_form)
    keys = ("box", "cls", "obj", "cls_pw", "obj_pw", "anchor_t", "fl_gamma")
    loss_fn = YOLOv5Loss(model, {k: v for k, v in load_hyp("scratch").items() if k in keys}, img_size=x.shape[-1])
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    run = torch.compile(model) if compile else model
    return _step(model, run, lambda out: loss_fn(out, targets)[0].sum(), x, device, amp)


def classifier_step(name: str, x: torch.Tensor, device: torch.device, amp: bool, channels_last: bool = False,
                    compile: bool = False, spd_form: str = "spd"):
    """A classifier training step (cross-entropy); returns ``(step, model, scaler)``."""
    from nostride.models import create_model, set_spd_form

    torch.manual_seed(0)
    model = create_model(name, num_classes=10).to(device).train()
    set_spd_form(model, spd_form)
    labels = torch.arange(x.shape[0], device=device) % 10
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    run = torch.compile(model) if compile else model
    return _step(model, run, lambda out: F.cross_entropy(out.float(), labels), x, device, amp)


def _step(model, run, loss_of: Callable, x: torch.Tensor, device: torch.device, amp: bool):
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True)
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    losses: list[float] = []

    def step() -> None:
        with torch.autocast(device.type, enabled=amp):
            loss = loss_of(run(x))
        losses.append(loss.detach())
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)

    step.losses = losses  # type: ignore[attr-defined]
    return step, model, scaler


def training_check(build: Callable[[], tuple], steps: int, amp: bool) -> str:
    """``steps`` steps: every loss finite, the weights moved (the scaler stepped the optimizer)."""
    step, model, scaler = build()
    before = [p.detach().clone() for p in model.parameters()]
    scales = []
    for _ in range(steps):
        step()
        scales.append(scaler.get_scale() if amp else 1.0)
    losses = [float(v) for v in step.losses]
    if not all(math.isfinite(v) for v in losses):
        raise AssertionError(f"non-finite loss: {losses}")
    moved = sum(not torch.equal(a, p.detach()) for a, p in zip(before, model.parameters()))
    if moved == 0:
        raise AssertionError("no weight changed: the grad scaler skipped every step")
    skipped = sum(b < a for a, b in zip(scales, scales[1:]))  # the scale drops once per skipped step
    mode = f"AMP, scale {scales[0]:g} -> {scales[-1]:g} ({skipped} steps skipped for inf/NaN grads)" if amp \
        else "float32"
    return f"{mode}; loss {losses[0]:.4g} -> {losses[-1]:.4g}; {moved} tensors updated"


# ------------------------------------------------------------------------------- CLI: val, export
def tiny_detection_data(root: Path) -> Path:
    """A generated dataset YAML (8 images of coloured boxes, 80 COCO names) for the CLI checks."""
    import json

    from nostride.data.io import write_image
    from nostride.models.yolo.names import COCO80_NAMES

    g = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(8):
            img = torch.full((3, 96, 128), 114, dtype=torch.uint8)
            x0, y0 = (int(v) for v in torch.randint(8, 60, (2,), generator=g))
            img[:, y0:y0 + 30, x0:x0 + 40] = torch.tensor([200, 40, 40]).view(3, 1, 1)
            write_image(img, root / "images" / split / f"{i + 1:012d}.png")
            (root / "labels" / split / f"{i + 1:012d}.txt").write_text(
                f"0 {(x0 + 20) / 128:.6f} {(y0 + 15) / 96:.6f} {40 / 128:.6f} {30 / 96:.6f}\n")
    yaml = root / "data.yaml"
    yaml.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames: {json.dumps(COCO80_NAMES)}\n")
    return yaml


def detector_checkpoint(path: Path, img_size: int) -> Path:
    from nostride.checkpoint import make_checkpoint, save_checkpoint
    from nostride.models import create_model
    from nostride.models.yolo.names import COCO80_NAMES

    torch.manual_seed(0)
    model = create_model("yolov5n_spd", num_classes=80)
    return save_checkpoint(make_checkpoint(model, list(COCO80_NAMES), img_size=img_size), path)


def val_check(weights: Path, data: Path, img_size: int, device: torch.device, out: Path) -> str:
    import json

    from nostride.cli import main

    half = device.type == "cuda"
    args = ["val", "--weights", str(weights), "--data", str(data), "--img-size", str(img_size), "--batch-size", "8",
            "--device", str(device), "--workers", "0", "--project", str(out), "--name", "val", "--no-plots"]
    rc = main(args + (["--half"] if half else []))
    metrics = json.loads((out / "val" / "metrics.json").read_text())
    if rc not in (0, 1) or metrics.get("images", 0) < 1:  # 1: nothing scored, which an untrained model may give
        raise AssertionError(f"nostride val exited {rc}, metrics {metrics.get('images')} images")
    if metrics["options"]["half"] != half:
        raise AssertionError(f"validation ran with half={metrics['options']['half']}")
    return f"{'float16' if half else 'float32 (float16 needs CUDA)'}: {metrics['images']} images, " \
           f"mAP50 {metrics['mAP50']:.3g}, inference {metrics['speed_ms']['inference']:.2f} ms/image"


def export_check(weights: Path, img_size: int, device: torch.device, out: Path) -> str:
    import contextlib
    import io

    from nostride.cli import main

    args = ["export", "--weights", str(weights), "--img-size", str(img_size), "--output", str(out / "half.onnx"),
            "--half", "--device", str(device)]
    if device.type == "cuda":
        rc = main(args)
        if rc != 0 or not (out / "half.onnx").is_file():
            raise AssertionError(f"nostride export --half exited {rc}")
        from nostride.export import onnx_providers

        return f"float16 ONNX checked in ONNX Runtime ({onnx_providers(device)[0]})"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(args)
    message = err.getvalue().strip()
    if rc != 2 or "\n" in message or "CUDA" not in message:
        raise AssertionError(f"--half on {device}: exit {rc}, {message!r} (expected one line naming CUDA)")
    if main(args[:-3] + ["--device", str(device)]) != 0:
        raise AssertionError("the float32 export failed")
    return "skipped: float16 needs CUDA (refused in one line); float32 ONNX export checked in ONNX Runtime"


# ------------------------------------------------------------------------------------ throughput
def throughput(fns: dict[str, Callable[[], None]], batch: int, device: torch.device, repeats: int) -> None:
    from train_detect import time_round_robin

    times = time_round_robin(fns, device, repeats)
    base = times.get("YOLOv5 v6.0 yolov5n", times[next(iter(fns))])[0]
    print(f"\ntraining step throughput on {describe_device(device)} (batch {batch}; ratio = time / first row's "
          f"or YOLOv5 v6.0's)")
    print(f"{'variant':<48}{'images/s':>10}{'ms/step':>10}{'ratio':>8}")
    for name, (wall, _) in times.items():
        print(f"{name:<48}{batch / wall:>10.1f}{wall * 1e3:>10.1f}{wall / base:>8.2f}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--img-size", type=int, default=None, help="default 320 (cuda), 64 (cpu)")
    p.add_argument("--batch-size", type=int, default=None, help="default 32 (cuda), 2 (cpu)")
    p.add_argument("--steps", type=int, default=None, help="training steps per check (default 20 cuda, 2 cpu)")
    p.add_argument("--repeats", type=int, default=None, help="timed steps per throughput row (default 20 / 2)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="include torch.compile (default: on for cuda, off for cpu)")
    p.add_argument("--reference", help="a checkout of ultralytics/yolov5 at tag v6.0")
    p.add_argument("--reference-spd", help="the YOLOv5-SPD folder of LabSAINT/SPD-Conv")
    p.add_argument("--data", help="dataset YAML for the val check (default: a generated one)")
    p.add_argument("--no-throughput", action="store_true", help="only the checks")
    args = p.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    size = args.img_size or (320 if cuda else 64)
    batch = args.batch_size or (32 if cuda else 2)
    steps = args.steps or (20 if cuda else 2)
    repeats = args.repeats or (20 if cuda else 2)
    use_compile = cuda if args.compile is None else args.compile
    print(f"gpu_check on {describe_device(device)}; torch {torch.__version__}; img {size}, batch {batch}", flush=True)
    t_start = time.perf_counter()

    from train_detect import synthetic_batch

    x, targets = synthetic_batch(batch, size, device)
    for name in ("yolov5n_spd", "resnet18_spd"):
        def build(**kw):
            if name.startswith("yolo"):
                return lambda: detector_step(name, x, targets, device, cuda, **kw)
            return lambda: classifier_step(name, x, device, cuda, **kw)

        check(f"{name} training steps", lambda: training_check(build(), steps, cuda))
        check(f"{name} --spd-form strided", lambda: training_check(build(spd_form="strided"), steps, cuda))
        check(f"{name} channels-last", lambda: training_check(build(channels_last=True), steps, cuda))
        if use_compile:
            check(f"{name} --compile", lambda: training_check(build(compile=True), steps, cuda))
        else:
            check(f"{name} --compile", lambda: "skipped: off (--compile to include it)")

    with tempfile.TemporaryDirectory(prefix="nostride-gpu-check-") as tmp:
        tmp = Path(tmp)
        weights = detector_checkpoint(tmp / "yolov5n_spd.pt", size)
        data = Path(args.data) if args.data else tiny_detection_data(tmp / "data")
        check("nostride val --half", lambda: val_check(weights, data, size, device, tmp))
        check("nostride export --half", lambda: export_check(weights, size, device, tmp))

    if not args.no_throughput:
        fns: dict[str, Callable[[], None]] = {}
        if args.reference or args.reference_spd:
            from train_detect import load_reference, reference_step

            if args.reference:
                fns["YOLOv5 v6.0 yolov5n"] = reference_step(load_reference(args.reference), args.reference,
                                                            "yolov5n", x, targets, device)
            if args.reference_spd:
                fns["SPD-Conv fork yolov5n_spd"] = reference_step(load_reference(args.reference_spd),
                                                                  args.reference_spd, "yolov5n_spd", x, targets, device)
        fns["nostride yolov5n"] = detector_step("yolov5n", x, targets, device, cuda)[0]
        fns["nostride yolov5n_spd"] = detector_step("yolov5n_spd", x, targets, device, cuda)[0]
        fns["nostride yolov5n_spd strided + channels-last"] = detector_step(
            "yolov5n_spd", x, targets, device, cuda, channels_last=True, spd_form="strided")[0]
        fns["nostride resnet18_spd"] = classifier_step("resnet18_spd", x, device, cuda)[0]
        throughput(fns, batch, device, repeats)
        sync(device)

    failed = [r for r in RESULTS if r[1] == "FAILED"]
    print(f"\n{len(RESULTS) - len(failed)}/{len(RESULTS)} checks passed or skipped; {len(failed)} failed; "
          f"{time.perf_counter() - t_start:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
