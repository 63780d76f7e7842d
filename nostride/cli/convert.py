"""``nostride convert``: turn a torchvision (or nostride) model into SPD-Conv and compare the two."""

from __future__ import annotations

import argparse

_POLICIES = ["convert", "keep", "drop"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a torchvision or nostride model to SPD-Conv; compare parameters and FLOPs",
        description="Replace every strided convolution and pooling layer of a model by space-to-depth "
        "and a stride-1 convolution (nostride.spdify), print what changed, parameters and FLOPs "
        "before/after and, with --init preserve, check that the outputs are unchanged.",
    )
    p.add_argument(
        "model",
        help="torchvision model name (torchvision.models.list_models()) or nostride model name "
        "(`nostride models`); prefix 'torchvision:' or 'nostride:' to choose when both have it",
    )
    p.add_argument("--img-size", type=int, default=224, help="square input size for FLOPs and the check (default 224)")
    p.add_argument("--kernel-size", type=int, default=None, help="odd kernel of the new convs (default: per layer)")
    p.add_argument("--pool", choices=_POLICIES, default="convert", help="what to do with strided pooling")
    p.add_argument("--max-pool", choices=_POLICIES, default=None, help="policy for max-pooling only (default: --pool)")
    p.add_argument(
        "--pool-conv", choices=["full", "depthwise"], default="full", help="conv replacing a pool: all channels or per channel"
    )
    p.add_argument("--init", choices=["preserve", "random"], default="preserve", help="weights of the new convs")
    p.add_argument("--exclude", nargs="+", default=[], metavar="PATTERN", help="module names to leave alone (fnmatch; default: none)")
    p.add_argument("--num-classes", type=int, default=None, help="build the model with this many classes (default: the model's own)")
    p.add_argument("--output", default=None, metavar="FILE.pt", help="save the converted weights as a nostride checkpoint (default: not saved)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from nostride.convert import spdify
    from nostride.utils import count_flops, count_parameters, output_tensors

    model, source, name = build_model(args.model, args.num_classes)
    model.eval()
    shape = (1, _in_channels(model), args.img_size, args.img_size)
    pool = {"avg": args.pool, "max": args.max_pool or args.pool}
    options = dict(
        kernel_size=args.kernel_size, pool=pool, init=args.init, exclude=list(args.exclude), pool_conv=args.pool_conv
    )
    converted, report = spdify(model, example_input=shape, **options)
    converted.eval()

    print(f"{source} model {name!r} -> SPD-Conv (init={args.init}, pool={_policy_text(pool)}, pool_conv={args.pool_conv})")
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

    if args.init == "preserve":
        x = torch.randn(shape)
        with torch.no_grad():
            ref, out = output_tensors(model(x), strict=False), output_tensors(converted(x), strict=False)
        diff = max((a - b).abs().max().item() for a, b in zip(ref, out))
        scale = max(a.abs().max().item() for a in ref)
        inexact = [e.name for e in report if e.action in ("converted", "dropped") and not e.exact]
        print()
        print(f"check: max |SPD-Conv - original| = {diff:.3g} on a random {'x'.join(map(str, shape))} input (outputs up to {scale:.3g})")
        if inexact:
            print(
                f"  not an exact conversion: {len(inexact)} layer(s) have no exact equivalent "
                "(max-pools start as window averages, dropped pools are gone); "
                "--max-pool keep converts the rest exactly"
            )
    if args.output:
        path = _save(converted, args, source, name, options)
        print(f"\nsaved the converted weights to {path}")
    return 0


def build_model(spec: str, num_classes: int | None):
    """``(model, source, name)`` for a torchvision or nostride model name (optionally prefixed)."""
    import torchvision

    from nostride.models import create_model, list_models

    source, _, name = spec.rpartition(":")
    if source not in ("", "torchvision", "nostride"):
        raise ValueError(f"unknown model source {source!r} in {spec!r}: use 'torchvision:NAME' or 'nostride:NAME'")
    kwargs = {"num_classes": num_classes} if num_classes is not None else {}
    tv_names = torchvision.models.list_models()
    try:
        if source in ("", "torchvision") and name in tv_names:
            return torchvision.models.get_model(name, weights=None, **kwargs), "torchvision", name
        if source in ("", "nostride") and name in list_models():
            return create_model(name, **kwargs), "nostride", name
    except TypeError as e:  # e.g. --num-classes for a builder without that argument
        raise ValueError(f"cannot build {spec!r} with {kwargs}: {e}") from None
    import difflib

    close = difflib.get_close_matches(name, sorted(set(tv_names) | set(list_models())), n=5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ValueError(
        f"unknown model {spec!r}: not a torchvision model (list them with "
        f"python -c \"import torchvision; print(torchvision.models.list_models())\") nor a nostride model "
        f"(`nostride models`).{hint}"
    )


def _in_channels(model) -> int:
    from torch import nn

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
        "model_kwargs": {"num_classes": args.num_classes} if args.num_classes is not None else {},
        "source": source,
        "source_model": name,
        "spdify": list(converted.spdify_options),
        "task": getattr(converted, "task", None) or "classify",
        "model": {k: v.detach().cpu() for k, v in converted.state_dict().items()},
        "ema": None,
        "names": None,
        "epoch": 0,
    }
    return save_checkpoint(ckpt, args.output)
