"""``nostride export``: a checkpoint to a deployment format (ONNX, TorchScript), checked."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a checkpoint to ONNX or TorchScript (fused, checked against PyTorch)",
        description="Export a nostride checkpoint for deployment. By default the model is fused first "
        "(BatchNorm folded, SPD + conv as one strided conv: nostride.fuse) and the exported file is "
        "checked against the PyTorch model on random inputs.",
    )
    p.add_argument("--weights", required=True, help="nostride checkpoint (.pt)")
    p.add_argument("--format", choices=["onnx", "torchscript"], default="onnx", help="output format")
    p.add_argument("--output", default=None, help="output file (default: the checkpoint's path with the format's suffix)")
    p.add_argument("--img-size", type=int, nargs="+", default=None, help="input size: S or H W (default: the training size)")
    p.add_argument("--batch-size", type=int, default=1, help="batch size of the example input")
    p.add_argument("--dynamic", action="store_true", help="ONNX: dynamic batch, height and width")
    p.add_argument("--no-fuse", dest="fuse", action="store_false", help="export the unfused model")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset")
    p.add_argument("--no-check", dest="check", action="store_false", help="skip the check against PyTorch")
    p.set_defaults(func=run)


def _default_size(ckpt: dict) -> int:
    from nostride.checkpoint import recorded_option

    size = recorded_option(ckpt, "img_size")
    if size:
        return int(size)
    return 640 if ckpt.get("task") == "detect" else 224


def _input_channels(model) -> int:
    kwargs = getattr(model, "model_kwargs", None) or {}
    definition = getattr(model, "yaml", None)
    return int(kwargs.get("in_chans") or (definition.get("ch") if isinstance(definition, dict) else None) or 3)


def run(args: argparse.Namespace) -> int:
    from nostride.checkpoint import load_checkpoint, model_from_checkpoint
    from nostride.export import EXPORT_FORMATS, export

    ckpt = load_checkpoint(args.weights)
    model = model_from_checkpoint(ckpt)
    size = args.img_size or [_default_size(ckpt)]
    if len(size) not in (1, 2):
        raise ValueError(f"--img-size takes one or two numbers, got {size}")
    h, w = (size[0], size[0]) if len(size) == 1 else size
    channels = _input_channels(model)
    shape = (args.batch_size, channels, h, w)
    fmt = EXPORT_FORMATS[args.format]
    output = Path(args.output) if args.output else Path(args.weights).with_suffix(fmt.suffix)
    kwargs = dict(input_shape=shape, fuse=args.fuse, check=args.check)
    if args.format == "onnx":
        kwargs.update(dynamic=args.dynamic, opset=args.opset)
    elif args.dynamic:
        raise ValueError("--dynamic applies to ONNX only")
    path = export(model, output, format=args.format, **kwargs)
    size_mb = path.stat().st_size / 1e6
    checked = "checked against PyTorch" if args.check else "not checked"
    print(
        f"{ckpt['model_name'] or ckpt.get('source_model')}: {args.format} export of input {tuple(shape)}"
        f"{' (dynamic)' if args.dynamic else ''}, {'fused' if args.fuse else 'unfused'}, {checked} -> "
        f"{path} ({size_mb:.1f} MB)"
    )
    return 0
