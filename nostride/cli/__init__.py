"""The ``nostride`` command: a thin layer over the library.

Each sub-command lives in its own module here with ``add_parser(subparsers)`` (which sets
``func``) and imports heavy modules only when it runs, so ``nostride --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["main", "build_parser"]

# sub-command modules, in the order `nostride --help` lists them
_COMMANDS = ["convert", "train", "val", "predict", "export", "import_yolov5", "models"]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (all sub-commands registered)."""
    from nostride import __version__

    parser = argparse.ArgumentParser(
        prog="nostride",
        description="SPD-Conv for PyTorch: convert CNNs, train and evaluate ResNet-SPD and YOLOv5-SPD.",
    )
    parser.add_argument("--version", action="version", version=f"nostride {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMANDS:
        try:
            module = importlib.import_module(f"nostride.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"nostride.cli.{name}":
                continue  # command not part of this build
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``nostride`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError, KeyError) as e:
        # bad input: one clear line, no traceback
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"nostride {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nostride {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
