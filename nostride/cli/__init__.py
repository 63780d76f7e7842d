"""The ``nostride`` command: a thin layer over the library.

Each sub-command lives in its own module here with ``add_parser(subparsers)`` (which sets
``func``) and imports heavy modules (torch, torchvision, matplotlib) only when it runs, so
``nostride --help`` and ``--version`` answer without importing PyTorch.

Every parser here is a :class:`Parser`: no abbreviated options (``--epoch`` is not taken for
``--epochs``), defaults shown in every help text, and a "did you mean" for a mistyped option.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import sys

from nostride.utils import bounds

__all__ = ["main", "build_parser", "Parser", "HelpFormatter", "int_arg", "float_arg", "path_arg", "output_file_arg"]

# sub-command modules, in the order `nostride --help` lists them
_COMMANDS = ["compare", "convert", "train", "val", "predict", "export", "import_yolov5", "models", "data", "benchmark"]

_FLAG_ACTIONS = (
    argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._StoreConstAction,
    argparse._HelpAction, argparse._VersionAction, argparse._CountAction,
)


def key_value(text: str) -> tuple[str, object]:
    """argparse type for ``KEY=VALUE`` options: ``(key with - as _, value parsed as a YAML scalar)``."""
    import yaml

    key, eq, value = text.partition("=")
    if not eq or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.replace("-", "_"), yaml.safe_load(value)


def int_arg(low: int | None = None, high: int | None = None, what: str = ""):
    """argparse type: a whole number in ``[low, high]`` (``None``: unbounded); the error states the bound."""
    def parse(text: str) -> int:
        try:
            return bounds.check_int("", text, low, high, what=what)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = "whole number"  # argparse names the type in some messages
    return parse


def float_arg(low: float | None = None, high: float | None = None, *, low_open: bool = False,
              high_open: bool = False, what: str = ""):
    """argparse type: a finite number within ``low .. high`` (open ends as asked); the error states the bound."""
    def parse(text: str) -> float:
        try:
            return bounds.check_float("", text, low, high, low_open=low_open, high_open=high_open, what=what)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = "number"
    return parse


def name_arg(text: str) -> str:
    """argparse type for names (operators, models): any non-empty string (``''`` would mean the default)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a name, got an empty string")
    return text


def path_arg(text: str) -> str:
    """argparse type for file and folder names: any non-empty string (``''`` would mean the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a file or folder name, got an empty string")
    return text


def output_file_arg(text: str) -> str:
    """argparse type for a file to write: not empty, and not an existing folder, device, FIFO or socket
    (writing there would block, fail late, or replace a device node)."""
    import os
    import stat

    path_arg(text)
    try:
        mode = os.stat(text).st_mode
    except OSError:
        return text  # absent (or unreachable: the write will say why)
    if stat.S_ISDIR(mode):
        raise argparse.ArgumentTypeError(f"{text} is a folder; expected the name of a file to write")
    if not stat.S_ISREG(mode):
        raise argparse.ArgumentTypeError(f"{text} exists and is not a regular file (a device, FIFO or socket); "
                                         "expected the name of a file to write")
    return text


positive_int = int_arg(1)  # counts with no upper bound of their own
img_size_arg = int_arg(bounds.MIN_IMG_SIZE, bounds.MAX_IMG_SIZE)
batch_size_arg = int_arg(1, bounds.MAX_BATCH_SIZE)
workers_arg = int_arg(0, bounds.MAX_WORKERS)
probability_arg = float_arg(0.0, 1.0)  # thresholds: confidence, IoU
max_det_arg = int_arg(1, bounds.MAX_DETECTIONS)


class HelpFormatter(argparse.HelpFormatter):
    """Adds ``(default: X)`` to an option's help unless the text already states its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            action.option_strings
            and not isinstance(action, _FLAG_ACTIONS)
            and "default" not in text.lower()
            and action.default not in (None, argparse.SUPPRESS, False, [], ())
        ):
            text += " (default: %(default)s)"
        return text


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with ``allow_abbrev=False`` and :class:`HelpFormatter` by default."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def option_names(self) -> list[str]:
        return [s for a in self._actions for s in a.option_strings if s.startswith("--")]


def build_parser() -> Parser:
    """The full argument parser (all sub-commands registered)."""
    from nostride import __version__

    parser = Parser(
        prog="nostride",
        description="SPD-Conv for PyTorch: convert CNNs; train, evaluate, compare, benchmark and export ResNet-SPD, "
        "YOLOv5-SPD and their strided baselines.",
    )
    parser.add_argument("--version", action="version", version=f"nostride {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name in _COMMANDS:
        try:
            module = importlib.import_module(f"nostride.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"nostride.cli.{name}":
                continue  # command not part of this build
            raise
        module.add_parser(sub)
    parser.subcommands = sub.choices  # name -> sub-command parser
    return parser


def suggest_option(unknown: str, known: list[str]) -> str | None:
    """The known option closest to a mistyped one (``--batchsize`` -> ``--batch-size``), or ``None``."""
    name = unknown.split("=", 1)[0]
    if not name.startswith("-"):
        return None
    squash = {k.replace("-", "").replace("_", ""): k for k in known}
    if name.replace("-", "").replace("_", "") in squash:
        return squash[name.replace("-", "").replace("_", "")]
    prefixed = [k for k in known if k.startswith(name)]  # an abbreviation: --epoch for --epochs
    if len(prefixed) == 1:
        return prefixed[0]
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return close[0] if close else None


def _reject_unknown(parser: Parser, args: argparse.Namespace, extras: list[str]) -> None:
    """Exit with the sub-command's usage, naming the unknown arguments and the closest known options."""
    command = getattr(args, "command", None)
    target = parser.subcommands[command] if command else parser
    known = target.option_names()
    hints = []
    for arg in extras:
        guess = suggest_option(arg, known)
        if guess:
            hints.append(f"{arg.split('=', 1)[0]}: did you mean {guess}?")
    text = f"unrecognized arguments: {' '.join(extras)}"
    if hints:
        text += " (" + "; ".join(hints) + ")"
    target.error(text)


_INVOKED: list[str] = []


def invoked_argv() -> list[str]:
    """The arguments of the running ``nostride`` command, as typed (after the program name)."""
    return list(_INVOKED)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``nostride`` console script; returns the exit status."""
    for stream in (sys.stdout, sys.stderr):
        # file names that are not UTF-8 (held by Python as surrogates) print as their own bytes
        # instead of failing the command with a UnicodeEncodeError
        try:
            stream.reconfigure(errors="surrogateescape")
        except (AttributeError, ValueError, OSError):
            pass
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    _INVOKED[:] = list(sys.argv[1:] if argv is None else argv)  # the exact command (a study's report records it)
    if extras:
        _reject_unknown(parser, args, extras)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from nostride.utils.paths import removing_empty_run_folders
    from nostride.utils.signals import route_termination_to_sigint

    route_termination_to_sigint()  # kill -TERM / a closed terminal: stop workers as Ctrl-C does
    try:
        with removing_empty_run_folders():
            return int(args.func(args) or 0)
    except (OSError, ValueError, KeyError) as e:
        # bad input or a failed write (disk full, permissions): one clear line, no traceback
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"nostride {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C, kill -TERM, kill -HUP
        hint = getattr(args, "interrupted", "")
        print(f"nostride {args.command}: interrupted{'; ' + hint if hint else ''}", file=sys.stderr)
        from nostride.utils.signals import end_as_launcher_expects

        end_as_launcher_expects()  # a torchrun worker stopped by SIGTERM dies by it
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
