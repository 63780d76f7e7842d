"""``nostride import``: turn a YOLOv5 ``.pt`` (v6.x/v7.0 or YOLOv5-SPD fork) into a nostride checkpoint."""

from __future__ import annotations

import argparse

from . import output_file_arg, path_arg


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import",
        help="import a YOLOv5 v6.x/v7.0 or YOLOv5-SPD checkpoint as a nostride checkpoint",
        description="Read a checkpoint written by ultralytics/yolov5 (v6.x, v7.0) or the YOLOv5-SPD fork "
        "without the YOLOv5 code and without running anything from the file, rebuild the model in "
        "nostride, and write a nostride checkpoint (loadable with weights_only=True) for "
        "`nostride predict/val/train`. See docs/import.md.",
    )
    p.add_argument("source", type=path_arg, help="YOLOv5 .pt file (e.g. yolov5s.pt, runs/train/exp/weights/best.pt)")
    p.add_argument("output", type=output_file_arg, help="nostride checkpoint to write (.pt)")
    p.add_argument("--fp32", action="store_true", help="store float32 weights (default: keep the file's dtype, float16)")
    p.add_argument(
        "--weights",
        choices=["auto", "ema", "model"],
        default="auto",
        help="which weights of a training checkpoint: 'ema' if present (auto, default), 'ema', or 'model'",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from nostride.checkpoint import make_checkpoint, save_checkpoint
    from nostride.models.yolo.import_yolov5 import build_yolov5, read_yolov5_checkpoint
    from nostride.utils import count_parameters
    from nostride.utils.atomic import check_output_path

    use_ema = {"auto": "auto", "ema": True, "model": False}[args.weights]
    src, out = Path(args.source), Path(args.output)
    if os.path.realpath(src) == os.path.realpath(out):  # realpath, unlike resolve(), never raises on a link loop
        raise ValueError(f"{out}: output would overwrite the source file; choose another name")
    check_output_path(out)  # before the work: a folder, device or FIFO is never replaced by a file
    meta = read_yolov5_checkpoint(src, use_ema=use_ema)
    model = build_yolov5(meta, fp32=args.fp32)
    imported_from = {"file": src.name, "weights": meta.weights, **meta.info}
    ckpt = make_checkpoint(model, names=model.names, hyp=meta.hyp, imported_from=imported_from)
    save_checkpoint(ckpt, out)
    n_params = count_parameters(model)
    dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    layout = f"YOLOv5 {meta.info['layout']}" + (" (SPD fork)" if meta.info["spd"] else "")
    print(
        f"imported {src} ({layout}, '{meta.weights}' weights, nc={len(model.names)}, "
        f"{n_params:,} params, stride {[int(s) for s in meta.stride]}) -> {out} ({dtype})"
    )
    return 0
