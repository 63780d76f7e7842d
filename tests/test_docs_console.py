"""The command-line sessions the docs show (``$ nostride ...`` blocks) print what the commands print.

Each checked block runs in a folder prepared as its page says (the files earlier examples wrote,
the datasets at ../datasets); times in milliseconds are left out of the comparison and ``...`` in
the docs matches anything.
"""

from __future__ import annotations

import contextlib
import doctest
import io
import re
import shutil
from pathlib import Path

import pytest
import torch

from conftest import REPO_ROOT, shared_data_shadow
from test_docs_examples import parse_markdown

_MS = re.compile(r"\(\d+(?:\.\d+)? ms\)")


def _session(doc: str, first_command: str) -> list[tuple[str, str]]:
    """(command, expected output) pairs of the block of ``doc`` whose first line is ``first_command``."""
    blocks, _ = parse_markdown((REPO_ROOT / doc).read_text(), doc)
    for block in blocks:
        lines = block.code.splitlines()
        if lines and lines[0] == f"$ {first_command}":
            break
    else:
        raise AssertionError(f"{doc}: no block starts with '$ {first_command}'")
    pairs: list[tuple[str, list[str]]] = []
    for line in lines:
        if line.startswith("$ "):
            pairs.append((line[2:], []))
        else:
            pairs[-1][1].append(line)
    return [(cmd, "\n".join(out) + "\n") for cmd, out in pairs]


def _run_session(pairs: list[tuple[str, str]], cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each command through the CLI's entry point in this process (as the console script calls it),
    its stdout and stderr in one stream, in the order written."""
    from nostride.cli import main

    monkeypatch.chdir(cwd)
    checker = doctest.OutputChecker()
    for command, expected in pairs:
        assert command.startswith("nostride ")
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            main(command.split()[1:])
        got, want = _MS.sub("(... ms)", printed.getvalue()), _MS.sub("(... ms)", expected)
        assert checker.check_output(want, got, doctest.ELLIPSIS), (
            f"`{command}` printed something else than the docs show:\n--- docs\n{expected}--- printed\n"
            f"{printed.getvalue()}")


def _workdir(tmp_path: Path) -> Path:
    shadow = shared_data_shadow()
    if shadow is None:
        pytest.skip("the examples' datasets are not here")
    (tmp_path / "datasets").symlink_to(shadow, target_is_directory=True)
    work = tmp_path / "work"
    work.mkdir()
    return work


@pytest.mark.slow
def test_import_md_command_line_session(tmp_path, monkeypatch):
    from yolov5_fixture import build_reference_model, spd_cfg, v6_cfg, write_yolov5_checkpoint

    work = _workdir(tmp_path)
    torch.manual_seed(0)  # the files the page's Python example writes
    ref = build_reference_model(spd_cfg(nc=3), v7=True, names=["cat", "dog", "bird"])
    write_yolov5_checkpoint(work / "yolov5-spd-demo.pt", ref, v7=True, hyp={"lr0": 0.01, "anchor_t": 4.0})
    write_yolov5_checkpoint(work / "yolov5-v6-demo.pt", build_reference_model(v6_cfg(nc=3), names=["cat", "dog", "bird"]))
    _run_session(_session("docs/import.md", "nostride import yolov5-spd-demo.pt yolov5-spd-nostride.pt"), work, monkeypatch)


@pytest.mark.slow
def test_detection_md_predict_session(tmp_path, monkeypatch):
    from nostride import create_model
    from nostride.checkpoint import make_checkpoint, save_checkpoint

    work = _workdir(tmp_path)
    torch.manual_seed(0)  # as the page's Python example
    model = create_model("yolov5n", num_classes=80)
    save_checkpoint(make_checkpoint(model, names=model.names), work / "yolov5n-untrained.pt")
    (work / "imgs").mkdir()
    for name in ("000000000139.jpg", "000000000285.jpg"):
        shutil.copy(tmp_path / "datasets" / "coco128" / "images" / "val2017" / name, work / "imgs" / name)
    (work / "imgs" / "bad.jpg").write_bytes(b"garbage")
    _run_session(_session("docs/detection.md", "nostride predict --weights yolov5n-untrained.pt --source imgs/ "
                          "--conf 0.00001 --max-det 6 --img-size 320 --device cpu"), work, monkeypatch)
