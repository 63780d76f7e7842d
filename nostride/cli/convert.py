"""``nostride convert``: turn a torchvision (or nostride) model into SPD-Conv and compare the two."""

from __future__ import annotations

import argparse

from nostride.utils import bounds

from . import img_size_arg, int_arg, output_file_arg, path_arg

_POLICIES = ["convert", "keep", "drop"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a torchvision, timm or nostride model to SPD-Conv; compare parameters and FLOPs",
        description="Replace every strided convolution and pooling layer of a model by space-to-depth "
        "and a stride-1 convolution (nostride.spdify), print what changed, parameters and FLOPs "
        "before/after and, with --init preserve, check that the outputs are unchanged.",
    )
    p.add_argument(
        "model",
        help="torchvision model name (torchvision.models.list_models()), nostride model name "
        "(`nostride models`) or timm:NAME (needs timm); prefix 'torchvision:' or 'nostride:' to choose when "
        "both have it (default: torchvision)",
    )
    p.add_argument("--weights", default=None, metavar="FILE", type=path_arg,
                   help="weights to convert and check: a torchvision/timm state dict (.pth), a training "
                   "checkpoint holding one, or a nostride checkpoint (default: random initialisation); "
                   "the class count is taken from the file unless --num-classes is given"),
    p.add_argument("--to", default="spd", metavar="OP",
                   help="downsampling operator to convert to (default spd: nostride.spdify): spd, conv-equal, "
                   "conv-spd, blurpool, blurpool5, hwd, adown, scdown, avgpool-conv, maxpool-conv, strided "
                   "(docs/downsampling.md); --kernel-size, --pool, --max-pool and --pool-conv apply to spd only")
    p.add_argument("--img-size", type=img_size_arg, default=224, help="square input size for FLOPs and the check (default 224)")
    p.add_argument("--kernel-size", type=int_arg(1, 31), default=None, help="odd kernel of the new convs (default: per layer)")
    p.add_argument("--pool", choices=_POLICIES, default="convert", help="what to do with strided pooling")
    p.add_argument("--max-pool", choices=_POLICIES, default=None, help="policy for max-pooling only (default: --pool)")
    p.add_argument(
        "--pool-conv", choices=["full", "depthwise"], default="full", help="conv replacing a pool: all channels or per channel"
    )
    p.add_argument("--init", choices=["preserve", "random"], default="preserve", help="weights of the new convs")
    p.add_argument("--exclude", nargs="+", default=[], metavar="PATTERN", help="module names to leave alone (fnmatch; default: none)")
    p.add_argument("--num-classes", type=int_arg(1, bounds.MAX_CLASSES), default=None, help="build the model with this many classes (default: the model's own)")
    p.add_argument("--output", default=None, metavar="FILE.pt", type=output_file_arg, help="save the converted weights as a nostride checkpoint (default: not saved)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from nostride.convert import spdify
    from nostride.utils import count_flops, count_parameters

    if args.output:
        from nostride.utils.atomic import check_output_path

        check_output_path(args.output)  # before the work: a folder, device or FIFO is never replaced by a file
    from nostride.layers import downsample_op

    op = downsample_op(args.to).name  # an unknown name lists the known ones (before building anything)
    model, source, name, weights_note = build_model(args.model, args.num_classes, args.weights)
    model.eval()
    if op != "spd":
        return _run_operator(args, op, model, source, name, weights_note)
    shape = (1, _in_channels(model), args.img_size, args.img_size)
    pool = {"avg": args.pool, "max": args.max_pool or args.pool}
    options = dict(
        kernel_size=args.kernel_size, pool=pool, init=args.init, exclude=list(args.exclude), pool_conv=args.pool_conv
    )
    converted, report = spdify(model, example_input=shape, **options)
    converted.eval()

    print(f"{source} model {name!r} -> SPD-Conv (init={args.init}, pool={_policy_text(pool)}, pool_conv={args.pool_conv})")
    print(weights_note)
    print()
    print(report)
    print()
    size = f"{args.img_size}x{args.img_size}"
    params = (count_parameters(model), count_parameters(converted))
    flops = (count_flops(model, shape), count_flops(converted, shape))
    rows = [
        ("", "parameters", f"GFLOPs @{size}"),
        ("original", f"{params[0]:,}", f"{flops[0] / 1e9:.3f}"),
        ("SPD-Conv", f"{params[1]:,}", f"{flops[1] / 1e9:.3f}"),
        ("change", _change(*params), _change(*flops)),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print(f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}")

    print()
    if args.init == "preserve":
        torch.manual_seed(0)
        x = torch.randn((_CHECK_BATCH, *shape[1:]))
        exact_only = None
        inexact = [e for e in report if e.action in ("converted", "dropped") and not e.exact]
        if inexact and any(e.exact and e.action == "converted" for e in report):
            # the exact layers alone: the same conversion with the approximate layers left out
            skip = list(args.exclude) + [e.name for e in inexact]
            exact_only, _ = spdify(model, example_input=shape, **{**options, "exclude": skip})
            exact_only.eval()
        for line in conversion_check(model, converted, report, x, exact_only, args.output):
            print(line)
    else:
        print("result: not a conversion of the function (--init random: the new convolutions start from "
              "random weights, for training from scratch)")
    if args.output:
        path = _save(converted, args, source, name, options)
        print(f"\nsaved the converted weights to {path}")
    return 0


def _run_operator(args: argparse.Namespace, op: str, model, source: str, name: str, weights_note: str) -> int:
    """``--to OP`` (other than spd): :func:`nostride.convert_downsampling`, report, costs, check, save."""
    import warnings

    import torch

    from nostride.convert import convert_downsampling

    shape = (1, _in_channels(model), args.img_size, args.img_size)
    options = dict(init=args.init, exclude=list(args.exclude), example_input=shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # layers it cannot serve are listed in the report below
        converted, report = convert_downsampling(model, op, **options)
    converted.eval()
    print(f"{source} model {name!r} -> {op} (init={args.init})")
    print(weights_note)
    print()
    print(report)
    print()
    _print_costs(model, converted, op, shape, args.img_size)
    print()
    new = [e for e in report if e.action == "converted" and not e.exact]
    exact = [e for e in report if e.action == "converted" and e.exact]
    if args.init == "preserve" and exact:
        torch.manual_seed(0)
        x = torch.randn((_CHECK_BATCH, *shape[1:]))
        exact_only = None
        if new:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                exact_only, _ = convert_downsampling(
                    model, op, **{**options, "exclude": list(args.exclude) + [e.name for e in new]})
            exact_only.eval()
        for line in conversion_check(model, converted, report, x, exact_only, args.output):
            print(line.replace("keep max-pools (--max-pool keep)", "leave max-pools alone (--exclude NAME)"))
    elif report.count_action("converted"):
        print(f"result: {_layers(len(new), 'new layer')}: {op} does not compute what the strided layers computed; "
              "train the converted model (its new layers start from random weights)")
    else:
        print(f"result: nothing converted: {op} replaced no layer of this model")
    if args.output:
        path = _save(converted, args, source, name, {})
        print(f"\nsaved the converted weights to {path}")
    return 0


def _print_costs(model, converted, label: str, shape: tuple, img_size: int) -> None:
    from nostride.utils import count_flops, count_parameters

    size = f"{img_size}x{img_size}"
    params = (count_parameters(model), count_parameters(converted))
    flops = (count_flops(model, shape), count_flops(converted, shape))
    rows = [
        ("", "parameters", f"GFLOPs @{size}"),
        ("original", f"{params[0]:,}", f"{flops[0] / 1e9:.3f}"),
        (label, f"{params[1]:,}", f"{flops[1] / 1e9:.3f}"),
        ("change", _change(*params), _change(*flops)),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print(f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}")


_CHECK_BATCH = 2
EXACT_TOLERANCE = 1e-4  # largest difference relative to the output scale still called exact (float32 rounding)


def _relative_difference(reference: list, other: list) -> tuple[float, float, float]:
    """``(max |difference|, output scale = max |reference|, their ratio)`` over all outputs."""
    diff = max((a - b).abs().max().item() for a, b in zip(reference, other))
    scale = max(a.abs().max().item() for a in reference)
    return diff, scale, diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))


def _share(rel: float) -> str:
    """A relative difference in words: ``75%`` or ``3.8e-07``."""
    return f"{rel:.0%}" if rel >= 0.01 else f"{rel:.2g}"


def _layers(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def conversion_check(model, converted, report, x, exact_only=None, output: str | None = None) -> list[str]:
    """The check's lines: the converted model against the original on ``x``, in words.

    ``exact_only``: the model with only the exactly converted layers converted (when some are
    approximate), so the exact part is checked on its own. ``output``: where the converted weights go.
    """
    import torch

    from nostride.utils import output_tensors

    def run(m):
        with torch.no_grad():
            return output_tensors(m(x), strict=False)

    ref = run(model)
    converted_layers = [e for e in report if e.action in ("converted", "dropped")]
    exact = [e for e in converted_layers if e.exact]
    approx = [e for e in converted_layers if not e.exact]
    diff, scale, rel = _relative_difference(ref, run(converted))
    inputs = f"{x.shape[0]} random {'x'.join(map(str, x.shape[1:]))} inputs"
    lines = [f"check on {inputs}: difference relative to the output scale (max |original output|)"]
    if not converted_layers:
        return lines + ["result: nothing converted: the model has no strided convolution or pooling to replace"]
    if not approx:
        verdict = "exact" if rel <= EXACT_TOLERANCE else "NOT exact (unexpected: please report it)"
        lines.append(f"  whole model: {_share(rel)} of the output scale (max |difference| {diff:.3g}, outputs up to {scale:.3g})")
        what = (f"all {len(exact)} converted layers compute what the original layers computed" if len(exact) > 1
                else "the 1 converted layer computes what the original layer computed")
        same = ", so the converted model is the same function up to float32 rounding" if verdict == "exact" else ""
        lines.append(f"result: {verdict}: {what}{same}")
        return lines
    if exact_only is not None:
        d, s, r = _relative_difference(ref, run(exact_only))
        state = "exact" if r <= EXACT_TOLERANCE else "NOT exact (unexpected: please report it)"
        lines.append(f"  the {_layers(len(exact), 'exact layer')} alone (approximate ones left unconverted): "
                     f"{_share(r)} of the output scale (max |difference| {d:.3g}): {state}")
    lines.append(f"  whole model: {_share(rel)} of the output scale (max |difference| {diff:.3g}, outputs up to {scale:.3g})")
    reasons = []
    maxpools = [e.name for e in approx if e.kind == "maxpool" and e.action == "converted"]
    dropped = [e.name for e in approx if e.action == "dropped"]
    others = [e.name for e in approx if e.name not in maxpools + dropped]
    if maxpools:
        reasons.append(f"{_layers(len(maxpools), 'max-pool')} ({', '.join(maxpools)}): a maximum is not linear, "
                       "so no convolution equals it; the new convolution starts as the average of the window")
    if dropped:
        reasons.append(f"{_layers(len(dropped), 'dropped pool')} ({', '.join(dropped)}): removed, the spatial size changes")
    if others:
        reasons.append(f"{', '.join(others)}: no exact equivalent")
    lines.append(f"result: approximate: {len(exact)} of {_layers(len(converted_layers), 'converted layer')} exact; "
                 f"approximate: " + "; ".join(reasons) + ".")
    save = "" if output else "save it (--output OUT.pt) and "
    lines.append(f"  next: {save}fine-tune the converted model (nostride train --weights {output or 'OUT.pt'} ...), or "
                 "keep max-pools (--max-pool keep) for an exact conversion")
    return lines


def build_model(spec: str, num_classes: int | None, weights: str | None = None):
    """``(model, source, name, note)``: the named model (torchvision first for a bare name), with
    ``weights`` loaded when given; ``note`` says in words which weights it has."""
    from nostride.models.external import build_named_model

    if not weights:
        model, source, name = build_named_model(spec, num_classes, prefer="torchvision")
        return model, source, name, ("weights: random initialisation (pass --weights FILE to convert and check "
                                     "trained weights)")
    from nostride.weights import head_mismatch, load_pretrained, read_weights

    file = read_weights(weights)
    model, source, name = build_named_model(spec, num_classes, prefer="torchvision")
    head, classes = head_mismatch(model, file.state)
    inferred = ""
    if head and classes is not None and num_classes is None:
        # the file's own class count: conversion keeps the function, so the head is kept too
        model, source, name = build_named_model(spec, classes[0], prefer="torchvision")
        inferred = f", {classes[0]} classes as in the file"
    load_pretrained(model, file, reinit_head=False)
    return model, source, name, f"weights: {weights} ({file.kind}, {len(file.state)} tensors{inferred})"


def _in_channels(model) -> int:
    from torch import nn

    # a timm model declares its input (TResNet's first conv reads its space-to-depth stem's 48 channels)
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None)
    input_size = cfg.get("input_size") if isinstance(cfg, dict) else None
    if isinstance(input_size, (tuple, list)) and len(input_size) == 3:
        return int(input_size[0])
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return conv.in_channels if conv is not None else 3


def _change(before: int, after: int) -> str:
    return f"{(after - before) / before:+.1%}" if before else "n/a"


def _policy_text(pool: dict[str, str]) -> str:
    return pool["avg"] if pool["avg"] == pool["max"] else f"max:{pool['max']},avg:{pool['avg']}"


def _save(converted, args: argparse.Namespace, source: str, name: str, options: dict):
    """Write a nostride checkpoint holding the converted weights and how to rebuild the model."""
    from nostride.checkpoint import CHECKPOINT_VERSION, save_checkpoint

    ckpt = {
        "format": "nostride",
        "version": CHECKPOINT_VERSION,
        # nostride.model_from_checkpoint rebuilds `source_model` (or `model_name`) and re-applies spdify
        "model_name": name if source == "nostride" else None,
        "model_kwargs": dict(getattr(converted, "model_kwargs", None) or {}),  # num_classes included when chosen
        "source": source,
        "source_model": name,
        "spdify": list(getattr(converted, "spdify_options", [])),
        "downsample": list(getattr(converted, "downsample_options", [])),
        "task": getattr(converted, "task", None) or "classify",
        "model": {k: v.detach().cpu() for k, v in converted.state_dict().items()},
        "ema": None,
        "names": None,
        "epoch": 0,
        "converted_from": str(args.weights) if args.weights else None,  # None: random initial weights
    }
    return save_checkpoint(ckpt, args.output)
