"""Adversarial weights files: every malformed file is a one-line error naming the file (never a
traceback, never code run, never a hint to load with fewer checks), declared architectures are
checked before anything is allocated, checkpoint writes are atomic, umask-respecting and checksummed."""

from __future__ import annotations

import errno
import io
import os
import signal
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from helpers import run_under_memory_cap
from nostride import create_model
from nostride.checkpoint import load_checkpoint, make_checkpoint, model_from_checkpoint, save_checkpoint
from nostride.safe_load import WeightsFileError, check_tree, describe_file, read_weights_file
from nostride.utils.atomic import AtomicWriteError, atomic_write, remove_stale_temp_files

MODEL = "resnet18_cifar"


def _model(num_classes: int = 3, width: int = 8) -> nn.Module:
    torch.manual_seed(0)
    return create_model(MODEL, num_classes=num_classes, width=width)


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("good") / "good.pt"
    save_checkpoint(make_checkpoint(_model(), ["a", "b", "c"], config={"img_size": 32}), path)
    return path


def _variant(tmp_path: Path, good: Path, name: str, **changes) -> Path:
    ckpt = dict(torch.load(good, weights_only=True))
    ckpt.pop("checksums", None)
    for k, v in changes.items():
        if v is _DROP:
            ckpt.pop(k, None)
        else:
            ckpt[k] = v
    path = tmp_path / name
    torch.save(ckpt, path)
    return path


_DROP = object()


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _malformed(tmp_path: Path, good: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, a phrase its error must contain)."""
    files: dict[str, tuple[Path, str]] = {}

    def put(name: str, data: bytes, phrase: str) -> None:
        (tmp_path / name).write_bytes(data)
        files[name] = (tmp_path / name, phrase)

    put("empty.pt", b"", "an empty file")
    put("text.pt", b"epoch,loss\n1,0.5\n", "a text file")
    put("page.pt", b"<!DOCTYPE html><html><body>Not Found</body></html>", "an HTML page")
    put("lfs.pt", b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n", "Git LFS pointer")
    put("model.onnx", b"\x08\x08\x12\x07pytorch\x1a\x052.4.0:\x8a\x01\n", "an ONNX model")
    put("image.pt", b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "an image")
    put("random.pt", bytes(range(7, 250)) * 3, "unknown format")
    raw = good.read_bytes()
    put("truncated.pt", raw[: len(raw) // 2], "truncated or damaged")
    put("zip_no_torch.pt", _zip({"readme.txt": b"hi"}), "not a torch.save file")
    ts = torch.jit.script(nn.Linear(2, 2))
    ts.save(str(tmp_path / "script.pt"))
    files["script.pt"] = (tmp_path / "script.pt", "TorchScript")
    marker = tmp_path / "EXECUTED"
    torch.save({"format": "nostride", "model": _Payload(marker)}, tmp_path / "evil.pt")
    files["evil.pt"] = (tmp_path / "evil.pt", "pickled Python objects")
    cyclic: dict = {"format": "nostride"}
    cyclic["model"] = {"self": cyclic}
    torch.save(cyclic, tmp_path / "cyclic.pt")
    files["cyclic.pt"] = (tmp_path / "cyclic.pt", "contains itself")
    deep: list = []
    node = deep
    for _ in range(200):
        node.append([])
        node = node[0]
    torch.save({"format": "nostride", "model": {}, "metrics": {"x": deep}}, tmp_path / "deep.pt")
    files["deep.pt"] = (tmp_path / "deep.pt", "nests")
    files["state_dict.pt"] = (tmp_path / "state_dict.pt", "not a nostride checkpoint")
    torch.save(_model().state_dict(), tmp_path / "state_dict.pt")
    return files


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for k, v in members.items():
            zf.writestr(k, v)
    return buf.getvalue()


def _assert_one_line(e: BaseException, path: Path, phrase: str = "") -> None:
    text = str(e)
    assert str(path) in text, text
    assert "\n" not in text, text
    assert "weights_only=False" not in text and "weights_only=false" not in text.lower(), text
    assert phrase.lower() in text.lower(), (phrase, text)


def test_malformed_files_are_one_line_errors_for_every_loader(tmp_path, good):
    from nostride.models.yolo.import_yolov5 import read_yolov5_checkpoint
    from nostride.weights import read_weights

    for name, (path, phrase) in _malformed(tmp_path, good).items():
        with pytest.raises(ValueError) as e:
            load_checkpoint(path)
        _assert_one_line(e.value, path, phrase)
        if name != "state_dict.pt":  # a bare state dict is a fine starting point for --weights
            with pytest.raises(ValueError) as e:
                read_weights(path)
            _assert_one_line(e.value, path)
        with pytest.raises(ValueError) as e:
            read_yolov5_checkpoint(path)
        _assert_one_line(e.value, path)
    assert not (tmp_path / "EXECUTED").exists()  # nothing in any file ran


def test_describe_file_names_what_a_file_is(tmp_path, good):
    assert describe_file(good) == "a torch.save archive"
    assert describe_file(tmp_path) == "a folder"
    with pytest.raises(WeightsFileError, match="is a folder"):
        read_weights_file(tmp_path)
    (tmp_path / "x.safetensors").write_bytes((10).to_bytes(8, "little") + b'{"a":1}   ' + b"\0" * 8)
    assert describe_file(tmp_path / "x.safetensors") == "a safetensors file"


def test_check_tree_accepts_shared_but_refuses_cyclic():
    shared = [1, 2]
    check_tree({"a": shared, "b": shared, "c": (shared, {"d": shared})})
    loop: list = []
    loop.append(loop)
    with pytest.raises(WeightsFileError, match="contains itself"):
        check_tree({"x": loop})


def test_wrong_entry_types_are_one_line_errors(tmp_path, good):
    cases = {
        "kwargs.pt": (dict(model_kwargs=[1, 2]), "model_kwargs"),
        "names.pt": (dict(names=7), "'names' must be a list of class names"),
        "model.pt": (dict(model=[1, 2, 3]), "'model' must be a state dict"),
        "epoch.pt": (dict(epoch="three"), "'epoch' must be an int"),
        "cfg_path.pt": (dict(model_kwargs={"cfg": "/etc/passwd"}), "never read from a path"),
        "spdify.pt": (dict(spdify=5), "'spdify'"),
        "source.pt": (dict(source="evil.module"), "'source'"),
    }
    for name, (changes, phrase) in cases.items():
        path = _variant(tmp_path, good, name, **changes)
        with pytest.raises(ValueError) as e:
            load_checkpoint(path)
        _assert_one_line(e.value, path, phrase)


def test_another_model_width_class_count_or_missing_key(tmp_path, good):
    state = torch.load(good, weights_only=True)["model"]
    missing = dict(state)
    missing.pop(next(iter(missing)))
    cases = {
        "width.pt": dict(model_kwargs={"num_classes": 3, "width": 16}),
        "classes.pt": dict(model_kwargs={"num_classes": 10, "width": 8}),
        "other_model.pt": dict(model_name="resnet18_spd"),
        "missing_key.pt": dict(model=missing),
        "extra_key.pt": dict(model={**state, "extra.weight": torch.zeros(1)}),
    }
    for name, changes in cases.items():
        path = _variant(tmp_path, good, name, **changes)
        with pytest.raises(ValueError) as e:
            model_from_checkpoint(path)
        _assert_one_line(e.value, path, "do not fit the model it declares")
    unknown = _variant(tmp_path, good, "unknown.pt", model_name="no_such_model")
    with pytest.raises(ValueError) as e:
        model_from_checkpoint(unknown)
    _assert_one_line(e.value, unknown, "cannot build the model it declares")


def test_cli_commands_give_one_line_errors(tmp_path, good, capsys):
    from nostride.cli import main
    from nostride.data import write_image

    write_image(torch.zeros(3, 32, 32, dtype=torch.uint8), tmp_path / "imgs" / "a.png")
    bad = {
        "trunc": _malformed(tmp_path, good)["truncated.pt"][0],
        "width": _variant(tmp_path, good, "w.pt", model_kwargs={"num_classes": 3, "width": 64}),
        "names": _variant(tmp_path, good, "n.pt", names=3),
        "cfg": _variant(tmp_path, good, "c.pt", model_kwargs={"cfg": "/etc/passwd"}),
    }
    for path in bad.values():
        for argv in (["export", "--weights", str(path), "--output", str(tmp_path / "o.onnx"), "--no-check"],
                     ["predict", "--weights", str(path), "--source", str(tmp_path / "imgs"), "--device", "cpu"]):
            rc = main(argv)
            err = capsys.readouterr().err
            assert rc == 2 and str(path) in err and err.count("\n") == 1 and "Traceback" not in err, (argv, err)


@pytest.mark.slow
def test_declared_huge_model_is_refused_before_allocating(tmp_path, good):
    """A checkpoint of a width-8 ResNet relabelled width 2048 (~2 GB of parameters) is refused
    under a 400 MB memory cap, quickly; so is a YOLOv5 file whose definition says width_multiple 60."""
    bomb = _variant(tmp_path, good, "bomb.pt", model_kwargs={"num_classes": 3, "width": 2048})
    yolo = _yolov5_bomb(tmp_path)
    imports = ("from nostride.checkpoint import model_from_checkpoint\n"
               "from nostride.models.yolo.import_yolov5 import load_yolov5\n")
    r = run_under_memory_cap(imports, f"""
        for fn, path in ((model_from_checkpoint, {str(bomb)!r}), (load_yolov5, {str(yolo)!r})):
            try:
                fn(path)
            except MemoryError:
                print("MEMORY")
            except ValueError as e:
                print("REFUSED", e)
            else:
                print("BUILT")
    """, extra_mb=400)
    lines = [line for line in r.stdout.splitlines() if line]
    assert len(lines) == 2 and all(line.startswith("REFUSED") for line in lines), (r.stdout, r.stderr[-2000:])
    assert "bomb.pt" in lines[0] and "yolo_bomb.pt" in lines[1]


def _yolov5_bomb(tmp_path: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).parent))
    from yolov5_fixture import build_reference_model, v6_cfg, write_yolov5_checkpoint

    ref = build_reference_model(v6_cfg(nc=2, width_multiple=0.125))
    ref.yaml["width_multiple"] = 60  # the definition lies about the (small) weights
    path = tmp_path / "yolo_bomb.pt"
    write_yolov5_checkpoint(path, ref)
    return path


@pytest.mark.slow
def test_cyclic_yolov5_files_are_one_line(tmp_path, monkeypatch):
    sys.path.insert(0, str(Path(__file__).parent))
    from nostride.models.yolo.import_yolov5 import load_yolov5
    from yolov5_fixture import build_reference_model, v6_cfg, write_yolov5_checkpoint

    ref = build_reference_model(v6_cfg(nc=2))
    ref.yaml["backbone"].append(ref.yaml["backbone"])  # a definition list that contains itself
    write_yolov5_checkpoint(tmp_path / "cyclic_yaml.pt", ref)

    ref = build_reference_model(v6_cfg(nc=2))
    ref.model[0]._modules["loop"] = ref.model  # a module that contains its own parent
    monkeypatch.setattr(nn.Module, "half", lambda self: self)  # the writer's .half() would recurse
    write_yolov5_checkpoint(tmp_path / "cyclic_modules.pt", ref)
    for name in ("cyclic_yaml.pt", "cyclic_modules.pt"):
        with pytest.raises(ValueError) as e:
            load_yolov5(tmp_path / name)
        _assert_one_line(e.value, tmp_path / name)


# ----------------------------------------------------------------------------- writes
def test_flipped_tensor_bytes_are_detected(tmp_path, good):
    data = bytearray(good.read_bytes())
    with zipfile.ZipFile(good) as zf:
        info = max((i for i in zf.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    # the member's data starts after its local header (30 bytes + name + extra field)
    start = info.header_offset + 30 + int.from_bytes(data[info.header_offset + 26:info.header_offset + 28], "little") \
        + int.from_bytes(data[info.header_offset + 28:info.header_offset + 30], "little")
    data[start + info.file_size // 2] ^= 0xFF
    flipped = tmp_path / "flipped.pt"
    flipped.write_bytes(bytes(data))
    with pytest.raises(ValueError) as e:
        load_checkpoint(flipped)
    _assert_one_line(e.value, flipped, "checksum mismatch in")
    assert load_checkpoint(good)["checksums"]  # written by save_checkpoint


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_checkpoint_mode_follows_the_umask(tmp_path):
    for umask, mode in ((0o022, 0o644), (0o077, 0o600), (0o002, 0o664)):
        old = os.umask(umask)
        try:
            path = save_checkpoint({"format": "nostride", "model": {}, "epoch": 0}, tmp_path / f"m{umask:o}.pt")
        finally:
            os.umask(old)
        assert path.stat().st_mode & 0o777 == mode


class _FullDisk(io.RawIOBase):
    """A file that takes ``room`` bytes, then fails as a full disk does."""

    def __init__(self, real, room: int) -> None:
        self.real, self.room = real, room

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        if self.room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = min(len(b), self.room)
        self.real.write(bytes(b[:n]))
        self.room -= n
        return n

    def flush(self) -> None:
        if not self.real.closed:
            self.real.flush()

    def fileno(self) -> int:
        return self.real.fileno()

    def close(self) -> None:
        super().close()
        self.real.close()


def test_full_disk_keeps_the_previous_file_and_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    import nostride.utils.atomic as atomic

    path = save_checkpoint(make_checkpoint(_model(), ["a", "b", "c"], epoch=1), tmp_path / "last.pt")
    real_open = atomic._open_new
    monkeypatch.setattr(atomic, "_open_new", lambda p: _FullDisk(real_open(p), 5000))
    with pytest.raises(AtomicWriteError) as e:
        save_checkpoint(make_checkpoint(_model(), ["a", "b", "c"], epoch=2), path)
    assert "\n" not in str(e.value) and "last.pt" in str(e.value) and "previous file is kept" in str(e.value)
    assert load_checkpoint(path)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_ctrl_c_during_a_write_completes_it_then_interrupts(tmp_path):
    path = tmp_path / "last.pt"

    def write(f):
        f.write(b"first half ")
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C arrives mid-write
        f.write(b"second half")

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, write)
    assert path.read_bytes() == b"first half second half"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_stale_temp_files_are_removed(tmp_path):
    (tmp_path / ".last.pt.1a2b3c4d.tmp").write_bytes(b"")
    (tmp_path / ".best.pt.9f9f9f9f.tmp").write_bytes(b"x")
    (tmp_path / "last.pt").write_bytes(b"keep")
    removed = remove_stale_temp_files(tmp_path, "last.pt")
    assert [p.name for p in removed] == [".last.pt.1a2b3c4d.tmp"]
    assert len(remove_stale_temp_files(tmp_path)) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_a_loaded_checkpoint_saved_again_stays_a_weights_only_file(tmp_path, good):
    ck = load_checkpoint(good)
    assert ck["_path"] == str(good)  # errors about it name the file
    torch.save(ck, tmp_path / "plain_copy.pt")  # even saved by hand, only plain data
    assert torch.load(tmp_path / "plain_copy.pt", weights_only=True)["model_name"] == MODEL
    resaved = save_checkpoint(ck, tmp_path / "resaved.pt")
    assert "_path" not in torch.load(resaved, weights_only=True)
