"""``nostride benchmark``: what models cost at inference, in each deployment form, side by side."""

from __future__ import annotations

import argparse
import sys

from . import batch_size_arg, img_size_arg, int_arg, name_arg, output_file_arg


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "benchmark",
        help="parameters, GFLOPs, latency, throughput and memory of models (eager, fused, compiled, "
        "TorchScript, ONNX Runtime, OpenVINO, ncnn)",
        description="Benchmark models side by side: parameters, GFLOPs, median and p90 latency, throughput "
        "and peak activation memory, in each form asked for. Models are timed interleaved (one call of each "
        "in turn), so the ratios against the first model hold on a busy machine.",
    )
    p.add_argument("models", nargs="+", metavar="MODEL",
                   help="registered model names (nostride models; NAME@down=hwd for builder options), op:NAME for "
                   "one downsampling operator alone (64 -> 128 channels at 80x80; op:hwd@c_in=32,c_out=64), or "
                   "checkpoint files")
    p.add_argument("--down", default=None, type=name_arg, metavar="OP,OP,...",
                   help="benchmark each model once per downsampling operator (MODEL@down=OP), e.g. "
                   "strided,spd,conv-equal,hwd; the first is the reference of the ratios (default: none)")
    p.add_argument("--img-size", type=img_size_arg, nargs="+", default=None,
                   help="square input size(s) (default: 640 for detectors, 224 for classifiers)")
    p.add_argument("--batch-size", type=batch_size_arg, nargs="+", default=[1], help="batch size(s) (default: 1)")
    p.add_argument("--forms", nargs="+", default=["eager", "fused"],
                   help="eager fused compile torchscript onnxruntime openvino ncnn train (a training step), or 'all' "
                   "(default: eager fused)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--half", action="store_true", help="float16 models and inputs (CUDA)")
    p.add_argument("--threads", type=int_arg(1, 1024), default=None, help="CPU threads for torch, ONNX Runtime, OpenVINO (default: torch's)")
    p.add_argument("--repeats", type=int_arg(1, 10_000), default=30, help="timed calls per model and form (default: 30)")
    p.add_argument("--warmup", type=int_arg(0, 1000), default=3, help="untimed calls first (default: 3)")
    p.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory pass")
    p.add_argument("--csv", default=None, type=output_file_arg, help="also write the rows to this CSV file (default: none)")
    p.add_argument("--json", default=None, type=output_file_arg, help="also write the run to this JSON file (default: none)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nostride.benchmark import FORMS, benchmark

    forms = list(FORMS) if args.forms == ["all"] else args.forms
    models = list(args.models)
    if args.down:
        from nostride.layers import downsample_op

        ops = [downsample_op(o).name for o in args.down.split(",") if o.strip()]
        models = [f"{m}{',' if '@' in m else '@'}down={op}" for m in models for op in ops]
    report = benchmark(
        models,
        img_size=args.img_size,
        batch_size=args.batch_size,
        forms=forms,
        device=args.device,
        half=args.half,
        threads=args.threads,
        repeats=args.repeats,
        warmup=args.warmup,
        memory=args.memory,
        progress=lambda line: print(line, file=sys.stderr),
    )
    print(report.table())
    if args.csv:
        report.to_csv(args.csv)
        print(f"rows written to {args.csv}")
    if args.json:
        report.to_json(args.json)
        print(f"run written to {args.json}")
    return 0
