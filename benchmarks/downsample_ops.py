"""Cost of every downsampling operator: parameters, FLOPs, a training step and inference (eager, fused,
ONNX Runtime), alone at typical shapes and inside yolov5n / resnet18 (``down=OP``), all measured in the
same run and interleaved, as ratios to the strided conv.

    python benchmarks/downsample_ops.py [--device cpu|cuda] [--repeats 10] [--quick] [--ops strided,spd,hwd]
                                        [--only shapes|models]

Training step: forward + backward + zeroing the gradients, in training mode. Inference: batch 1,
``nostride benchmark``'s forms (onnxruntime: the fused model's ONNX export). docs/downsampling.md
records a run.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch
from _common import add_device_args, apply_threads, describe_device

from nostride.benchmark import benchmark, interleaved_latencies
from nostride.layers import build_downsample, list_downsample_ops
from nostride.models import create_model
from nostride.utils.profile import count_flops, count_parameters

DEFAULT_OPS = ["strided", "spd", "conv-equal", "blurpool", "hwd", "adown", "scdown", "avgpool-conv", "maxpool-conv"]
SHAPES = [(8, 64, 80, 80, 128), (8, 128, 40, 40, 256)]  # (N, C, H, W, C_out): YOLOv5n-like P3 and P4 steps
QUICK_SHAPES = [(2, 64, 40, 40, 128)]
MODELS = [("resnet18@width=32", 3, 64, 8), ("yolov5n", 3, 128, 4)]  # (spec, channels, img, train batch)


def train_step(model: torch.nn.Module, x: torch.Tensor):
    def step():
        out = model(x)
        loss = sum(o.float().mean() for o in (out if isinstance(out, (list, tuple)) else [out]))
        loss.backward()
        model.zero_grad(set_to_none=True)
    return step


def build(spec: str, op: str) -> torch.nn.Module:
    name, _, opts = spec.partition("@")
    options = dict(kv.split("=") for kv in opts.split(",") if kv)
    options = {k: int(v) if v.isdigit() else v for k, v in options.items()}
    return create_model(name, down=op, **options)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_device_args(parser)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="one small shape, few repeats (a smoke run)")
    parser.add_argument("--only", choices=["shapes", "models"], default=None, help="run one part (default: both)")
    parser.add_argument("--ops", default=",".join(DEFAULT_OPS), help=f"operators (known: {', '.join(list_downsample_ops())})")
    args = parser.parse_args()
    apply_threads(args.threads)
    device = torch.device(args.device)
    ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    repeats = 3 if args.quick else args.repeats
    shapes = QUICK_SHAPES if args.quick else SHAPES
    print(f"# downsampling operators: {describe_device(device)}, torch {torch.__version__}, "
          f"median of {repeats} interleaved calls; ratios to 'strided' in the same run\n")

    for n, c, h, w, co in shapes if args.only != "models" else []:
        blocks = {op: build_downsample(op, c, co).to(device) for op in ops}
        for b in blocks.values():
            b.model_kwargs = {"in_chans": c}  # the benchmark's example input has this many channels
        x = torch.randn(n, c, h, w, device=device)
        train = interleaved_latencies({op: train_step(b.train(), x) for op, b in blocks.items()}, device, repeats, 2)
        inference = benchmark([(f"op:{op}", b) for op, b in blocks.items()], img_size=h, forms=["eager", "fused", "onnxruntime"],
                              device=device, repeats=repeats, warmup=2, memory=False)
        _table(f"{c} -> {co} channels, {h}x{w} input, train batch {n}", ops, blocks, (1, c, h, w), train,
               inference.rows, "op:")

    for spec, ch, img, batch in (MODELS[:1] if args.quick else MODELS) if args.only != "shapes" else []:
        img = 32 if args.quick else img
        models = {op: build(spec, op).to(device) for op in ops}
        x = torch.randn(batch, ch, img, img, device=device)
        train = interleaved_latencies({op: train_step(m.train(), x) for op, m in models.items()}, device, repeats, 2)
        inference = benchmark([(f"{spec}@down={op}", m) for op, m in models.items()], img_size=img,
                              forms=["eager", "fused", "onnxruntime"], device=device, repeats=repeats, warmup=2, memory=False)
        _table(f"{spec} at {img}x{img}, train batch {batch}", ops, models, (1, ch, img, img), train, inference.rows,
               f"{spec}@down=")
    return 0


def _table(title, ops, modules, shape, train, rows, prefix) -> None:
    med = {op: statistics.median(v) for op, v in train.items()}
    lat = {(r.model[len(prefix):], r.form): r.latency_ms for r in rows}
    base = ops[0]
    print(f"## {title}\n")
    print("| operator | params | GFLOPs | train step ms (ratio) | eager ms (ratio) | fused ms (ratio) | onnxruntime ms (ratio) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for op in ops:
        cells = [op, f"{count_parameters(modules[op]):,}", f"{count_flops(modules[op], shape) / 1e9:.3f}",
                 f"{med[op] * 1e3:.1f} ({med[op] / med[base]:.2f}x)"]
        for form in ("eager", "fused", "onnxruntime"):
            v, b = lat.get((op, form)), lat.get((base, form))
            cells.append(f"{v:.2f} ({v / b:.2f}x)" if v and b else "n/a")
        print("| " + " | ".join(cells) + " |")
    print()
    sys.stdout.flush()


if __name__ == "__main__":
    raise SystemExit(main())
