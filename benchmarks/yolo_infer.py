"""YOLOv5n vs YOLOv5n-SPD inference speed, unfused and fused (``model.fuse()``).

Measured in one run, round-robin (one block of each model in turn, so load from other processes
hits all of them alike), median over the repeats:

* latency at batch 1, 640x640 and 320x320 (eval, no_grad, decoded output included, no NMS);
* throughput at batch 16, 640x640 (``--quick``: batch 4, 320x320);

each also as a ratio to YOLOv5n unfused. The paper reports 6.3 ms (YOLOv5n) vs 7.3 ms
(YOLOv5n-SPD) on a GPU at batch 1. ``--spd-conv`` adds the paper's SPD -> conv order.

    python benchmarks/yolo_infer.py [--device cpu|cuda] [--half] [--repeats 7] [--quick] [--spd-conv]
"""

from __future__ import annotations

import argparse
from typing import Callable

import torch
from _common import add_device_args, apply_threads, describe_device, measure

from nostride import create_model
from nostride.utils import count_flops, count_parameters



def build_models(device: torch.device, half: bool, spd_conv: bool) -> dict[str, torch.nn.Module]:
    specs = [("yolov5n", {}), ("yolov5n_spd", {})]
    if spd_conv:
        specs.append(("yolov5n_spd", {"spd_order": "spd-conv"}))
    models = {}
    for name, kwargs in specs:
        label = name + (" (spd-conv)" if kwargs else "")
        model = create_model(name, **kwargs).eval()
        models[label] = model
        models[label + " fused"] = create_model(name, **kwargs).eval().fuse()
    for model in models.values():
        model.to(device)
        if half:
            model.half()
    return models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_device_args(parser)
    parser.add_argument("--half", action="store_true", help="float16 models and inputs (CUDA)")
    parser.add_argument("--repeats", type=int, default=7, help="timed blocks per measurement (median)")
    parser.add_argument("--quick", action="store_true", help="5 repeats of one call each, throughput at batch 4 and 320x320")
    parser.add_argument("--spd-conv", action="store_true", help="also time the paper's SPD -> conv order")
    args = parser.parse_args()
    apply_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    repeats = 5 if args.quick else args.repeats
    min_time = 0.0 if args.quick else 0.2
    dtype = torch.float16 if args.half else torch.float32
    machine = describe_device(device)
    settings = [("b1 640", 1, 640), ("b1 320", 1, 320), ("b4 320", 4, 320) if args.quick else ("b16 640", 16, 640)]
    print(f"torch {torch.__version__}, device {device} ({machine}), {dtype}, median of {repeats} interleaved blocks")

    models = build_models(device, args.half, args.spd_conv)
    base = next(iter(models))
    info = {name: (count_parameters(m), count_flops(m.float(), (1, 3, 64, 64)) * 100 / 1e9) for name, m in models.items()}
    if args.half:
        for m in models.values():
            m.half()
    results: dict[str, dict[str, float]] = {}
    for label, batch, size in settings:
        x = torch.rand(batch, 3, size, size, device=device, dtype=dtype)

        def step(model: torch.nn.Module) -> Callable[[], object]:
            def run() -> object:
                with torch.no_grad():
                    return model(x)

            return run

        timed = measure({name: step(m) for name, m in models.items()}, device, repeats, min_time, warmup=1)
        results[label] = {name: median for name, (median, _) in timed.items()}

    width = max(len(n) for n in models) + 2
    head = f"{'model':<{width}}{'params':>11}{'GFLOPs':>8}"
    for label, batch, _ in settings[:2]:
        head += f"{label + ' ms':>12}{'ratio':>7}"
    label_t, batch_t, _ = settings[2]
    head += f"{label_t + ' img/s':>15}{'ratio':>7}"
    print(head)
    for name in models:
        params, gflops = info[name]
        row = f"{name:<{width}}{params:>11,}{gflops:>8.2f}"
        for label, _, _ in settings[:2]:
            t = results[label][name]
            row += f"{t * 1e3:>12.1f}{t / results[label][base]:>7.2f}"
        tput = batch_t / results[label_t][name]
        row += f"{tput:>15.1f}{tput / (batch_t / results[label_t][base]):>7.2f}"
        print(row)
    print(f"ratios: time (or throughput) / {base}'s in this run; GFLOPs at 640x640 (conv multiply-adds x 2)")


if __name__ == "__main__":
    main()
