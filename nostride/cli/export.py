"""``nostride export``: a checkpoint to a deployment format (ONNX, TorchScript), checked."""

from __future__ import annotations

import argparse
import sys

from . import batch_size_arg, img_size_arg, int_arg, max_det_arg, output_file_arg, path_arg, probability_arg


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a checkpoint to ONNX or TorchScript (fused, checked against PyTorch)",
        description="Export a nostride checkpoint for deployment. By default the model is fused first "
        "(BatchNorm folded, SPD + conv as one strided conv: nostride.fuse) and the exported file is "
        "checked against the PyTorch model on random inputs.",
    )
    p.add_argument("--weights", required=True, type=path_arg, help="nostride checkpoint (.pt), or a YOLOv5 / YOLOv5-SPD .pt")
    p.add_argument("--format", choices=["onnx", "torchscript"], default="onnx", help="output format")
    p.add_argument("--output", default=None, type=output_file_arg, help="output file (default: the checkpoint's path with the format's suffix)")
    p.add_argument("--img-size", type=img_size_arg, nargs="+", default=None,
                   help="input size: S or H W, rounded up to a multiple of a detector's stride (default: the training size)")
    p.add_argument("--batch-size", type=batch_size_arg, default=1, help="batch size of the example input")
    p.add_argument("--dynamic", action="store_true", help="ONNX: dynamic batch, height and width")
    p.add_argument("--no-fuse", dest="fuse", action="store_false", help="export the unfused model")
    p.add_argument("--opset", type=int_arg(18, 99), default=18,
                   help="ONNX opset, from 18 (the oldest the exporter writes) to the newest the installed onnx package knows")
    p.add_argument("--half", action="store_true", help="ONNX: a float16 graph, exported on a GPU (needs --device cuda)")
    p.add_argument("--device", default="cpu", help="where the model runs for the export and its check: cpu, cuda, "
                   "cuda:N (default cpu)")
    p.add_argument("--no-check", dest="check", action="store_false", help="skip the check against PyTorch")
    p.add_argument("--nms", action="store_true",
                   help="detectors, ONNX: NMS in the graph, output (n, 7) [image, x1, y1, x2, y2, conf, class] (default: off)")
    # --conf/--iou as in predict and val; the YOLOv5 spellings are kept as aliases
    p.add_argument("--conf", "--conf-thres", dest="conf_thres", type=probability_arg, default=0.25,
                   help="with --nms: confidence threshold (default: 0.25)")
    p.add_argument("--iou", "--iou-thres", dest="iou_thres", type=probability_arg, default=0.45,
                   help="with --nms: NMS IoU threshold (default: 0.45)")
    p.add_argument("--max-det", type=max_det_arg, default=300, help="with --nms: most detections per image (default: 300)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nostride.exported import export_weights
    from nostride.export import ExportCheckError

    try:
        export_weights(args.weights, output=args.output, format=args.format, img_size=args.img_size,
                       batch_size=args.batch_size, dynamic=args.dynamic, fuse=args.fuse, opset=args.opset,
                       check=args.check, nms=args.nms, conf=args.conf_thres, iou=args.iou_thres, max_det=args.max_det,
                       half=args.half, device=args.device)
    except ExportCheckError as e:
        # the file does not compute what the model computes: it is never put where a deployment would pick it up
        print(f"nostride export: error: {args.output or args.weights}: the exported model failed its check against "
              f"PyTorch, so no file was written: {e}", file=sys.stderr)
        return 1
    return 0
