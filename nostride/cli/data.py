"""``nostride data make NAME DIR``: write a built-in dataset to a folder."""

from __future__ import annotations

import argparse

from . import key_value, path_arg


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="built-in datasets: write one to a folder",
                       description="Built-in datasets are generated (seeded, no download) in the standard layouts: "
                       "lowres (32 px fine-detail classification, image-folder layout) and small-objects (small-object "
                       "detection, YOLO layout with data.yaml plus COCO json). `--data builtin:NAME` makes them "
                       "into the cache folder on first use; this command writes them where you want them.")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")
    m = dsub.add_parser("make", help="generate a built-in dataset into DIR",
                        description="Generate built-in dataset NAME into the empty (or new) folder DIR. "
                        "Options (KEY=VALUE) change its size, image size, difficulty or seed; "
                        "`nostride data list` shows each dataset's options and defaults.")
    m.add_argument("name", metavar="NAME", help="lowres or small-objects")
    m.add_argument("dir", metavar="DIR", type=path_arg, help="output folder (must be empty or absent)")
    m.add_argument("options", nargs="*", type=key_value, metavar="KEY=VALUE",
                   help="generator options, e.g. train=500 seed=1 (see `nostride data list`)")
    m.set_defaults(func=run_make)
    ls = dsub.add_parser("list", help="the built-in datasets, their options and defaults")
    ls.set_defaults(func=run_list)
    p.set_defaults(func=lambda args: p.print_help() or 0)


def run_make(args: argparse.Namespace) -> int:
    from nostride.data.builtin import make_builtin

    root = make_builtin(args.name, args.dir, **dict(args.options))
    print(f"{args.name}: written to {root} (see {root / 'builtin.json'})")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from nostride.data.builtin import BUILTINS

    for ds in BUILTINS.values():
        opts = ", ".join(f"{k}={v}" for k, v in ds.defaults.items())
        print(f"{ds.name} ({ds.task}): {ds.description}\n  options: {opts}")
    return 0
