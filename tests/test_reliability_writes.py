"""Outputs under kills, full disks and special files: every file a command writes is the old one or
the new one (a real SIGKILL inside an export's write), a full disk (a real 1 MB tmpfs) is one line
and a non-zero exit with nothing half-written, an output path that is a device, FIFO or folder is
refused, and temporary files of killed writers are removed."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import subprocess
from pathlib import Path

import pytest
import torch

from nostride import create_model
from nostride.checkpoint import make_checkpoint, save_checkpoint
from nostride.cli import main
from nostride.data import write_image
from nostride.utils.atomic import AtomicWriteError, atomic_output, atomic_write_text, check_output_path
from strace_kill import DEAD_PID, fixed_temp_name, run_killed_at, was_killed

pytestmark = pytest.mark.usefixtures("one_thread_module")


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """A resnet18_cifar checkpoint of width 16 (2.8 MB: more than the small disk holds)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "model.pt"
    save_checkpoint(make_checkpoint(create_model("resnet18_cifar", num_classes=2, width=16), ["a", "b"],
                                    config={"img_size": 32}), path)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("img")
    g = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        for c in ("a", "b"):
            for i in range(2):
                write_image((torch.rand(3, 32, 32, generator=g) * 255).to(torch.uint8), root / split / c / f"{i}.png")
    return root


def _one_line_error(capsys, rc: int, *phrases: str) -> str:
    err = capsys.readouterr().err
    assert rc not in (0, None) and err.count("\n") == 1 and "Traceback" not in err, (rc, err)
    for phrase in phrases:
        assert phrase in err, (phrase, err)
    return err


# ----------------------------------------------------------------------------- kills
def test_sigkill_during_an_export_keeps_the_previous_export(weights, tmp_path):
    """`nostride export --format torchscript` onto a good export, killed (SIGKILL from strace) at
    its first write of the file: the previous export still loads, byte for byte."""
    out = (tmp_path / "model.torchscript").resolve()
    argv = ["export", "--weights", str(weights), "--format", "torchscript", "--output", str(out),
            "--img-size", "32", "--no-check"]
    assert main(argv) == 0
    before = out.read_bytes()
    proc = run_killed_at([out, fixed_temp_name(out)], "write", f"""
        from nostride.cli import main
        main({argv!r})
    """)
    assert was_killed(proc), (proc.returncode, proc.stderr[-2000:])
    assert out.read_bytes() == before
    torch.jit.load(str(out))
    assert main(argv) == 0  # the next export removes what the killed one left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.torchscript"]


def test_a_failed_export_check_leaves_the_previous_file(weights, tmp_path, monkeypatch):
    """The exported file is checked before it replaces the old one."""
    import nostride.export as export_module
    from nostride.export import ExportCheckError

    out = tmp_path / "m.torchscript"
    out.write_bytes(b"previous")

    def fail(*args, **kwargs):
        raise ExportCheckError("TorchScript output 0 differs from PyTorch")

    monkeypatch.setattr(export_module, "_compare", fail)
    from nostride.checkpoint import model_from_checkpoint

    with pytest.raises(ExportCheckError):
        export_module.export_torchscript(model_from_checkpoint(weights), out, input_shape=(1, 3, 32, 32))
    assert out.read_bytes() == b"previous" and [p.name for p in tmp_path.iterdir()] == ["m.torchscript"]


# ----------------------------------------------------------------------------- full disk
@pytest.fixture
def small_disk(tmp_path) -> Path:
    """A real 1 MB tmpfs (needs root and permission to mount; skipped otherwise)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode(errors='replace').strip()[:80]})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _fill(folder: Path, leave: int = 0) -> None:
    """Fill the disk of ``folder`` up to ``leave`` bytes."""
    with open(folder / "filler", "wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 4096)
    if leave:
        os.truncate(folder / "filler", max(0, (folder / "filler").stat().st_size - leave))


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.name != "filler")


def test_full_disk_is_one_line_and_no_partial_file_for_export_predict_val(weights, images, small_disk, capsys):
    # export: a 2.8 MB TorchScript file onto a 1 MB disk (libtorch's writer used to abort the process)
    out = small_disk / "m.torchscript"
    rc = main(["export", "--weights", str(weights), "--format", "torchscript", "--output", str(out),
               "--img-size", "32", "--no-check"])
    _one_line_error(capsys, rc, str(out), "no space left on device")
    assert _listing(small_disk) == []
    _fill(small_disk, leave=2048)
    # predict and val: outputs larger than what is left (they used to say "results saved", exit 0)
    rc = main(["predict", "--weights", str(weights), "--source", str(images / "val"), "--project", str(small_disk),
               "--name", "p", "--device", "cpu"])
    _one_line_error(capsys, rc, "no space left on device")
    rc = main(["val", "--weights", str(weights), "--data", str(images), "--split", "val", "--project", str(small_disk),
               "--name", "v", "--device", "cpu", "--workers", "0"])
    _one_line_error(capsys, rc, "no space left on device")
    for f in (p for p in small_disk.rglob("*") if p.is_file() and p.name != "filler"):
        assert not f.name.startswith(".") and f.stat().st_size > 0, f  # no temporary or empty file left
        if f.suffix == ".json":
            import json

            json.loads(f.read_text())  # whole, if written at all


def test_atomic_output_reports_a_full_disk_and_removes_its_temp(tmp_path, monkeypatch):
    def full(tmp: Path) -> None:
        tmp.write_bytes(b"x")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    (tmp_path / "out.bin").write_bytes(b"old")
    with pytest.raises(AtomicWriteError, match="out.bin: not written: no space left on device"):
        with atomic_output(tmp_path / "out.bin") as tmp:
            full(tmp)
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"] and (tmp_path / "out.bin").read_bytes() == b"old"


# ----------------------------------------------------------------------------- special files, stale temps
def _refused(capsys, argv: list[str], target: Path) -> None:
    """The command stops with status 2 and an error line naming ``target`` as no regular file
    (from the argument parser, with its usage line, or from the command)."""
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err and "Traceback" not in "\n".join(err), (argv, err)
    assert str(target) in err[-1] and ("not a regular file" in err[-1] or "folder" in err[-1]), (argv, err)


def test_outputs_onto_devices_fifos_and_folders_are_refused(weights, tmp_path, capsys):
    fifo = tmp_path / "pipe.pt"
    os.mkfifo(fifo)
    for target in (Path("/dev/full"), fifo, tmp_path):
        if not target.exists():
            continue
        _refused(capsys, ["export", "--weights", str(weights), "--format", "torchscript", "--output", str(target)], target)
        _refused(capsys, ["convert", "resnet18_cifar", "--img-size", "32", "--output", str(target)], target)
        _refused(capsys, ["import", str(weights), str(target)], target)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    if Path("/dev/full").exists():
        assert stat.S_ISCHR(os.stat("/dev/full").st_mode)
    with pytest.raises(AtomicWriteError, match="exists and is a FIFO"):
        atomic_write_text(fifo, "x")  # the library's writer refuses too
    with pytest.raises(AtomicWriteError, match="exists and is a device"):
        atomic_write_text("/dev/full", "x")
    assert check_output_path(tmp_path / "new.pt") == tmp_path / "new.pt"


def test_temp_files_of_killed_writers_are_removed_on_the_next_write(tmp_path, capsys):
    """`nostride convert --output` (as every atomic write): temporary files of the same output left
    by a writer that no longer runs are removed; one of a living writer is left alone."""
    out = tmp_path / "conv.pt"
    dead, old_style = fixed_temp_name(out), tmp_path / ".conv.pt.1a2b3c4d.tmp"
    living = tmp_path / f".conv.pt.{os.getppid()}-cafe0000.tmp"
    for p in (dead, old_style, living):
        p.write_bytes(b"\0" * 1000)
    assert main(["convert", "resnet18_cifar", "--img-size", "32", "--output", str(out)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, living.name])
    assert str(DEAD_PID) in dead.name
