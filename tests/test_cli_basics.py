"""The `nostride` command itself: version, help, model listing, error handling."""

from __future__ import annotations

import subprocess
import sys

import pytest

import nostride
from nostride.cli import main


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"nostride {nostride.__version__}"


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("convert", "models", "predict"):
        assert command in out


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    assert "usage: nostride" in capsys.readouterr().out


def test_console_script_runs():
    out = subprocess.run(
        [sys.executable, "-m", "nostride", "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert nostride.__version__ in out


def test_models_lists_registry(capsys):
    names = nostride.list_models()
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in names)


def test_bad_input_is_one_clean_error_line(capsys, tmp_path):
    code = main(["predict", "--weights", str(tmp_path / "nope.pt"), "--source", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert "nope.pt" in err and "Traceback" not in err


# --- start-up, help texts, option spelling -------------------------------------------------


def test_help_and_version_start_fast_without_torch():
    """--help/--version import neither torch, torchvision nor matplotlib, and answer well under a second."""
    import time

    code = (
        "import sys\n"
        "from nostride.cli import main\n"
        "for argv in (['--help'], ['--version'], ['train', '--help'], ['convert', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = [m for m in ('torch', 'torchvision', 'matplotlib', 'numpy') if m in sys.modules]\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in proc.stderr
    best = float("inf")
    for _ in range(3):  # the machine is shared: the best of three, with a generous bound
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "nostride", "--help"], capture_output=True, check=True)
        best = min(best, time.perf_counter() - t0)
    assert best < 1.0, f"nostride --help took {best:.2f} s"


def _option_actions():

    from nostride.cli import _FLAG_ACTIONS, build_parser

    for name, sub in build_parser().subcommands.items():
        for action in sub._actions:
            if action.option_strings and not isinstance(action, _FLAG_ACTIONS) and not action.required:
                yield name, sub, action


def test_every_option_help_states_its_default():
    from nostride.cli import HelpFormatter

    missing = [
        f"{name} {action.option_strings[0]}"
        for name, _, action in _option_actions()
        if "default" not in HelpFormatter(name)._get_help_string(action).lower()
    ]
    assert not missing, f"help without a default: {missing}"


def test_train_help_defaults_match_the_config():
    """`nostride train --help` states the defaults of TrainConfig (its options default to 'not given')."""
    import re

    from nostride.engine.config import TrainConfig

    cfg = TrainConfig()
    checked = 0
    for name, _, action in _option_actions():
        if name != "train":
            continue
        if "default: classification" in action.help:
            continue  # per-task defaults: test_train_help_defaults_per_task
        m = re.search(r"default:? ([-\w./]+)", action.help)
        value = getattr(cfg, action.dest, None)
        if not m or not isinstance(value, (int, float, str)) or isinstance(value, bool) or value == "":
            continue
        stated = m.group(1)
        expected = type(value)(stated) if not isinstance(value, str) else stated
        assert expected == value, f"train {action.option_strings[0]}: help says {stated}, TrainConfig has {value!r}"
        checked += 1
    assert checked >= 10


def _said(text: str) -> object:
    return {"on": True, "off": None, "none": None}.get(text, text)


def _same(stated: object, value: object) -> bool:
    if stated is None or value is None or isinstance(value, bool) or isinstance(stated, bool):
        return stated == value or (stated is None and value is False)
    return type(value)(stated) == value if not isinstance(value, str) else stated == value


def test_train_help_defaults_per_task():
    """Options whose default depends on the task state both, and both are what a run gets: a detector
    trains 300 epochs at batch 16 (YOLOv5's train.py), a classifier 100 at 64."""
    import re

    from nostride.engine.config import build_config

    runs = {"classification": build_config(model="resnet18"), "detection": build_config(model="yolov5n")}
    checked = set()
    for name, _, action in _option_actions():
        m = re.search(r"default: classification ([-\w. ]+?); detection ([-\w. ]+?)\)", " ".join(action.help.split()))
        if name != "train" or not m:
            continue
        for task, stated in zip(runs, m.groups()):
            value = getattr(runs[task], action.dest)
            assert _same(_said(stated), value), f"{action.option_strings[0]}: help says {task} {stated}, a run gets {value!r}"
        checked.add(action.dest)
    assert {"epochs", "batch_size", "lr", "momentum", "ema", "patience"} <= checked
    assert runs["detection"].epochs == 300 and runs["detection"].batch_size == 16


def test_train_docstring_defaults_per_task():
    """nostride.train's docstring states the per-task defaults a run really gets."""
    import nostride
    from nostride.engine import train
    from nostride.engine.config import build_config

    runs = [build_config(model="resnet18"), build_config(model="yolov5n")]
    rows = 0
    for line in train.__doc__.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] in runs[0].to_dict() and parts[0] != "img_size":
            for stated, cfg in zip(parts[1:], runs):
                assert _same(None if stated == "None" else stated == "True" if stated in ("True", "False") else stated,
                             getattr(cfg, parts[0])), line
            rows += 1
    assert rows >= 12
    assert "300 epochs at batch 16" in nostride.train.__doc__


@pytest.mark.parametrize(
    "argv, wrong, right",
    [
        (["train", "--batchsize", "8"], "--batchsize", "--batch-size"),
        (["train", "--epoch", "3"], "--epoch", "--epochs"),  # an abbreviation is not silently taken
        (["val", "--weights", "w.pt", "--workrs", "2"], "--workrs", "--workers"),
        (["convert", "resnet18", "--img", "64"], "--img", "--img-size"),
    ],
)
def test_mistyped_option_gets_usage_and_suggestion(capsys, argv, wrong, right):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: nostride {argv[0]}")  # the sub-command's usage, not the top level's
    assert f"{wrong}: did you mean {right}?" in err


def test_abbreviations_are_refused():
    from nostride.cli import build_parser

    for sub in build_parser().subcommands.values():
        assert sub.allow_abbrev is False


def test_user_facing_text_does_not_speak_of_plans():
    """Messages, help texts and docs speak of the product, never of issues, milestones or what arrives later."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    banned = re.compile(r"its own issue|-issue\b|\bissue\b.*\b(arrives|lands)|next milestone|arrives with|"
                        r"not available yet|supports \w+ models for now|in your build\)|this build does not|to this session|"
                        r"other engineers", re.IGNORECASE)
    files = [*sorted((root / "nostride").rglob("*.py")), root / "README.md", *sorted((root / "docs").glob("*.md"))]
    hits = [f"{p.relative_to(root)}:{i}: {line.strip()}" for p in files
            for i, line in enumerate(p.read_text().splitlines(), 1) if banned.search(line)]
    assert not hits, hits


@pytest.mark.parametrize("argv", [["export", "--weights", "x.pt", "--img-size", "0"],
                                  ["val", "--weights", "x.pt", "--batch-size", "-1"],
                                  ["benchmark", "resnet18", "--img-size", "0"],
                                  ["predict", "--weights", "x.pt", "--source", "y", "--img-size", "abc"],
                                  ["convert", "resnet18", "--img-size", "0"]])
def test_sizes_and_batch_sizes_must_be_positive(capsys, argv):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"nostride {argv[0]}: error: argument --") and ("must be in [" in err or "whole number" in err)
