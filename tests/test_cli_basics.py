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
