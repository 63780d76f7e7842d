"""``nostride models``: list the registered models."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the models nostride can build", description="List registered models.")
    p.add_argument("pattern", nargs="?", default=None, help="glob pattern, e.g. 'resnet*'")
    p.add_argument("--task", choices=["classify", "detect"], default=None, help="only models of this task (default: all)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nostride.models import list_models, model_info

    names = list_models(args.pattern, task=args.task)
    if not names:
        print("no model matches")
        return 1
    width = max(len(n) for n in names)
    for name in names:
        info = model_info(name)
        print(f"{name:<{width}}  {info.task:<8}  {info.description}")
    return 0
