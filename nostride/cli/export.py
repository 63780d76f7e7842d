"""``nostride export``: a checkpoint to a deployment format (ONNX, TorchScript), checked."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import positive_int


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
    p.add_argument("--img-size", type=positive_int, nargs="+", default=None, help="input size: S or H W (default: the training size)")
    p.add_argument("--batch-size", type=positive_int, default=1, help="batch size of the example input")
    p.add_argument("--dynamic", action="store_true", help="ONNX: dynamic batch, height and width")
    p.add_argument("--no-fuse", dest="fuse", action="store_false", help="export the unfused model")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset")
    p.add_argument("--half", action="store_true", help="ONNX: a float16 graph, exported on a GPU (needs --device cuda)")
    p.add_argument("--device", default="cpu", help="where the model runs for the export and its check: cpu, cuda, "
                   "cuda:N (default cpu)")
    p.add_argument("--no-check", dest="check", action="store_false", help="skip the check against PyTorch")
    p.add_argument("--nms", action="store_true",
                   help="detectors, ONNX: NMS in the graph, output (n, 7) [image, x1, y1, x2, y2, conf, class] (default: off)")
    # --conf/--iou as in predict and val; the YOLOv5 spellings are kept as aliases
    p.add_argument("--conf", "--conf-thres", dest="conf_thres", type=float, default=0.25,
                   help="with --nms: confidence threshold (default: 0.25)")
    p.add_argument("--iou", "--iou-thres", dest="iou_thres", type=float, default=0.45,
                   help="with --nms: NMS IoU threshold (default: 0.45)")
    p.add_argument("--max-det", type=int, default=300, help="with --nms: most detections per image (default: 300)")
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

    from nostride.utils.device import select_device

    if args.half and args.format != "onnx":
        raise ValueError("--half applies to ONNX only")
    device = select_device(args.device)
    if args.half and device.type != "cuda":
        raise ValueError(f"--half needs a CUDA device (--device cuda), got {device}: float16 convolutions run on GPUs")
    ckpt = load_checkpoint(args.weights)
    model = model_from_checkpoint(ckpt).to(device)
    size = args.img_size or [_default_size(ckpt)]
    if len(size) not in (1, 2):
        raise ValueError(f"--img-size takes one or two numbers, got {size}")
    h, w = (size[0], size[0]) if len(size) == 1 else size
    channels = _input_channels(model)
    shape = (args.batch_size, channels, h, w)
    fmt = EXPORT_FORMATS[args.format]
    output = Path(args.output) if args.output else Path(args.weights).with_suffix(fmt.suffix)
    if args.nms:
        if ckpt.get("task") != "detect":
            raise ValueError(f"--nms applies to detectors; {args.weights} holds a {ckpt.get('task')} model")
        if args.format != "onnx":
            raise ValueError("--nms applies to ONNX only")
        from nostride.convert.fuse import fuse
        from nostride.tasks.detect.graph_nms import DetectorWithNMS

        # fused before wrapping; the check compares the file with the same wrapped model
        model = DetectorWithNMS(fuse(model) if args.fuse else model, args.conf_thres, args.iou_thres, args.max_det)
        args.fuse = False
    kwargs = dict(input_shape=shape, fuse=args.fuse, check=args.check)
    if args.format == "onnx":
        kwargs.update(dynamic=args.dynamic, opset=args.opset, half=args.half)
    elif args.dynamic:
        raise ValueError("--dynamic applies to ONNX only")
    if args.nms:
        # boxes after NMS are not compared with PyTorch's: boxes of equal score (common for
        # untrained or flat-image outputs) may be resolved differently by two runtimes
        kwargs["check"] = False
    path = export(model, output, format=args.format, **kwargs)
    size_mb = path.stat().st_size / 1e6
    checked = "checked against PyTorch" if args.check else "not checked"
    if args.nms and args.check:
        _check_runs(path, shape)
        checked = "checked: valid ONNX, runs in ONNX Runtime"
    print(
        f"{ckpt['model_name'] or ckpt.get('source_model')}: {args.format} export of input {tuple(shape)}"
        f"{' (dynamic)' if args.dynamic else ''}{', float16' if args.half else ''}, "
        f"{'fused' if args.fuse or args.nms else 'unfused'}"
        f"{', NMS in the graph' if args.nms else ''}, {checked} -> "
        f"{path} ({size_mb:.1f} MB)"
    )
    return 0


def _check_runs(path: Path, shape: tuple) -> None:
    """A graph with NMS: valid ONNX, and ONNX Runtime (when installed) returns (n, 7) detections."""
    import importlib.util

    import onnx

    onnx.checker.check_model(str(path), full_check=True)
    if importlib.util.find_spec("onnxruntime") is None:
        return
    import numpy as np
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: np.random.rand(*shape).astype(np.float32)})
    if out.ndim != 2 or out.shape[1] != 7:
        raise ValueError(f"{path}: the exported NMS graph returned shape {out.shape}, expected (n, 7)")
