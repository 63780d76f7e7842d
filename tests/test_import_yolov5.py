"""nostride.load_yolov5 / `nostride import`: YOLOv5 v6.x/v7.0 and YOLOv5-SPD checkpoints.

The files are written by tests/yolov5_fixture.py: stand-ins for the YOLOv5 classes with the
reference's class paths, attributes and forward (written from the reference notes, independently of
nostride), pickled exactly as YOLOv5's train.py does (float16 whole modules).
"""

from __future__ import annotations

import copy
import math
import os
import struct
import subprocess
import sys
import zipfile

import pytest
import torch
from torch import nn

import nostride
from nostride.checkpoint import load_checkpoint, make_checkpoint, model_from_checkpoint, save_checkpoint
from nostride.cli import main as cli_main
from nostride.models.yolo._unpickle import UnsafePickleError, read_torch_pickle
from nostride.models.yolo.import_yolov5 import read_yolov5_checkpoint

sys.path.insert(0, os.path.dirname(__file__))
from yolov5_fixture import (  # noqa: E402
    Conv,
    build_reference_model,
    reference_modules,
    spd_cfg,
    v5_cfg,
    v6_cfg,
    write_yolov5_checkpoint,
)

pytestmark = pytest.mark.usefixtures("one_thread_module")

HYP = {"lr0": 0.01, "box": 0.05, "cls": 0.5, "obj": 1.0, "anchor_t": 4.0}


def _outputs(model: nn.Module, x: torch.Tensor):
    with torch.no_grad():
        decoded, raw = model(x.clone())
    return decoded, raw


def _assert_same_outputs(ref: nn.Module, model: nn.Module, x: torch.Tensor, atol: float = 1e-4) -> None:
    ref_dec, ref_raw = _outputs(ref, x)
    dec, raw = _outputs(model, x)
    assert dec.shape == ref_dec.shape
    torch.testing.assert_close(dec.float(), ref_dec, atol=atol, rtol=1e-5)
    for a, b in zip(raw, ref_raw):
        torch.testing.assert_close(a.float(), b, atol=atol, rtol=1e-5)


# ------------------------------------------------------------------ fixture files (built once)
@pytest.fixture(scope="module")
def v6_file(tmp_path_factory):
    """v6.0 layout (yolov5s rows, width 0.125), released-file style, anchors changed by 'autoanchor'."""
    ref = build_reference_model(v6_cfg(nc=3), names=["cat", "dog", "bird"], seed=1)
    det = ref.model[-1]
    with torch.no_grad():  # autoanchor rewrites the buffer, not the yaml: the buffer must win
        det.anchors.mul_(1.3)
        det.anchors.copy_(det.anchors.half().float())
    path = write_yolov5_checkpoint(tmp_path_factory.mktemp("v6") / "best.pt", ref, hyp=HYP)
    return path, ref


@pytest.fixture(scope="module")
def spd_file(tmp_path_factory):
    """YOLOv5-SPD fork layout written v7-style mid-training: 'model' and a different 'ema'."""
    names = ["a", "b", "c", "d"]
    model = build_reference_model(spd_cfg(nc=4), v7=True, names=names, seed=2)
    ema = build_reference_model(spd_cfg(nc=4), v7=True, names=names, seed=3)
    path = write_yolov5_checkpoint(tmp_path_factory.mktemp("spd") / "last.pt", model, ema=ema, v7=True, hyp=HYP)
    return path, model, ema


@pytest.fixture(scope="module")
def v6_model(v6_file):
    return nostride.load_yolov5(v6_file[0])


# ------------------------------------------------------------------ outputs and metadata
def test_v6_import_matches_reference_outputs(v6_file, v6_model):
    path, ref = v6_file
    model = v6_model
    assert not model.training and next(model.parameters()).dtype == torch.float32
    for shape in [(2, 3, 64, 64), (1, 3, 64, 96)]:
        _assert_same_outputs(ref, model, torch.randn(shape))
    # metadata carried over
    assert model.names == ["cat", "dog", "bird"]
    assert model.stride.tolist() == [8.0, 16.0, 32.0]
    assert model.hyp == HYP
    assert model.model_name == "yolov5" and model.model_kwargs["cfg"]["nc"] == 3
    # the anchors buffer is the file's (autoanchor-changed), not the yaml's pixels / stride
    assert torch.equal(model.model[-1].anchors, ref.model[-1].anchors)
    yaml_anchors = torch.tensor(v6_cfg()["anchors"], dtype=torch.float32).view(3, 3, 2) / torch.tensor([8.0, 16, 32]).view(3, 1, 1)
    assert not torch.allclose(model.model[-1].anchors, yaml_anchors)


def test_spd_fork_v7_file_takes_ema_by_default(spd_file):
    path, model_ref, ema_ref = spd_file
    info = read_yolov5_checkpoint(path)
    assert info.weights == "ema" and info.info["layout"] == "v7" and info.info["spd"]
    assert info.info["epoch"] == 7 and info.info["best_fitness"] == pytest.approx(0.4242)
    assert info.dtype == torch.float16
    x = torch.randn(2, 3, 64, 64)
    ema = nostride.load_yolov5(path)
    _assert_same_outputs(ema_ref, ema, x)
    assert ema.names == ["a", "b", "c", "d"]  # v7 stores {0: "a", ...}
    raw = nostride.load_yolov5(path, use_ema=False)
    _assert_same_outputs(model_ref, raw, x)
    # control: the comparison tells the two weight sets apart
    assert (_outputs(raw, x)[0] - _outputs(ema_ref, x)[0]).abs().max() > 1e-2
    assert "model.0.conv.conv.weight" in raw.state_dict() and "model.30.anchors" in raw.state_dict()


def test_v5_focus_era_file_with_anchor_grid_buffer(tmp_path):
    """v5.x layout (Focus stem, SPP) whose Detect registered anchor_grid as a buffer."""
    ref = build_reference_model(v5_cfg(nc=2), anchor_grid_buffer=True, seed=4)
    assert "model.24.anchor_grid" in ref.state_dict()
    ref.model[-1].inplace = False  # carried over (through the definition, so checkpoints keep it)
    model = nostride.load_yolov5(write_yolov5_checkpoint(tmp_path / "v5.pt", ref))
    _assert_same_outputs(ref, model, torch.randn(1, 3, 64, 64))
    assert "model.24.anchor_grid" not in model.state_dict()  # derived from anchors * stride
    assert model.model[-1].inplace is False and model.model_kwargs["cfg"]["inplace"] is False
    with torch.no_grad():
        ref.model[-1].anchor_grid.mul_(2)  # inconsistent with anchors: outputs would differ
    with pytest.raises(ValueError, match=r"bad\.pt: Detect's anchor_grid buffer .* disagrees"):
        nostride.load_yolov5(write_yolov5_checkpoint(tmp_path / "bad.pt", ref))


@pytest.mark.slow
def test_anchor_count_definition_with_autoanchor_buffer(tmp_path):
    """yaml `anchors: 3` (placeholders; autoanchor fills the buffer): import and checkpoint round trip."""
    cfg = v6_cfg(nc=2)
    cfg["anchors"] = 3
    ref = build_reference_model(cfg, seed=5)
    det = ref.model[-1]
    with torch.no_grad():  # what check_anchors writes: pixel anchors / stride
        px = torch.tensor([[12, 15, 20, 33, 35, 28], [40, 60, 70, 50, 64, 120], [120, 95, 160, 200, 380, 330]])
        det.anchors.copy_((px.float().view(3, 3, 2) / det.stride.view(-1, 1, 1)).half().float())
    model = nostride.load_yolov5(write_yolov5_checkpoint(tmp_path / "a3.pt", ref))
    x = torch.randn(1, 3, 64, 64)
    _assert_same_outputs(ref, model, x)
    assert model.model_kwargs["cfg"]["anchors"] == 3
    out = tmp_path / "a3-nostride.pt"
    assert cli_main(["import", str(tmp_path / "a3.pt"), str(out), "--fp32"]) == 0
    _assert_same_outputs(ref, model_from_checkpoint(out), x)


def test_use_ema_true_requires_ema(v6_file):
    with pytest.raises(ValueError, match="no EMA weights"):
        nostride.load_yolov5(v6_file[0], use_ema=True)


def test_fp16_import_keeps_the_file_weights_bit_exact(v6_file):
    path, ref = v6_file
    model = nostride.load_yolov5(path, fp32=False)
    ref_half = ref.half().state_dict()
    ref.float()
    sd = model.state_dict()
    assert sd["model.0.conv.weight"].dtype == torch.float16
    for k, v in ref_half.items():
        assert torch.equal(sd[k], v), k


# ------------------------------------------------------------------ safety
class _OsSystem:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Eval:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w')",))


class _Popen:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (subprocess.Popen, (["touch", str(self.marker)],))


@pytest.mark.parametrize(
    "payload, refused_name",
    [(_OsSystem, "posix.system"), (_Eval, "builtins.eval"), (_Popen, "subprocess.Popen")],
)
def test_code_in_the_file_is_refused_not_run(tmp_path, v6_file, payload, refused_name):
    marker = tmp_path / "executed"
    plain = tmp_path / "plain.pt"
    torch.save({"model": payload(marker)}, plain)
    # the same payload hidden in an otherwise genuine YOLOv5 file
    hidden = write_yolov5_checkpoint(tmp_path / "hidden.pt", v6_file[1], extra={"wandb_id": payload(marker)})
    for path in (plain, hidden):
        with pytest.raises(UnsafePickleError) as err:
            nostride.load_yolov5(path)
        assert refused_name in str(err.value) and str(path) in str(err.value)
        assert "Nothing from the file was run" in str(err.value)
    assert not marker.exists()


def _crafted_file(tmp_path, name: str, pickle_bytes: bytes):
    """A torch.save zip archive whose data.pkl is ``pickle_bytes`` (hand-written opcodes)."""
    base = tmp_path / f"{name}.base"
    torch.save({}, base)
    out = tmp_path / name
    with zipfile.ZipFile(base) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zout:
        for entry in zin.namelist():
            zout.writestr(entry, pickle_bytes if entry.endswith("data.pkl") else zin.read(entry))
    return out


def _unicode(text: str) -> bytes:
    return b"X" + struct.pack("<I", len(text)) + text.encode()


def test_a_file_cannot_alter_allowed_functions_or_classes_for_later_loads(tmp_path, v6_file):
    """pickle BUILD can set attributes on objects it names (a function's __defaults__, a class
    attribute): each load gets its own wrappers and record classes, so this stays inside the load."""
    # BUILD(torch._utils._rebuild_tensor_v2, (None, {"__defaults__": ({"evil": 1},)}))
    defaults = b"}" + _unicode("evil") + b"K\x01s\x85"
    func = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\nN}" + _unicode("__defaults__") + defaults + b"s\x86b0}."
    # BUILD(models.common.Conv record class, (None, {"qualname": "models.yolo.Model"}))
    cls = b"\x80\x02cmodels.common\nConv\nN}" + _unicode("qualname") + _unicode("models.yolo.Model") + b"s\x86b0}."
    before = torch._utils._rebuild_tensor_v2.__defaults__
    assert read_torch_pickle(_crafted_file(tmp_path, "func.pt", func)) == {}  # only its own wrapper changed
    assert torch._utils._rebuild_tensor_v2.__defaults__ == before
    with pytest.raises(ValueError, match=r"cls\.pt: could not read"):  # records' __setstate__ rejects it
        read_torch_pickle(_crafted_file(tmp_path, "cls.pt", cls))
    ckpt = read_torch_pickle(v6_file[0])
    layer0 = ckpt["model"].state["_modules"]["model"].state["_modules"]["0"]
    assert layer0.qualname == "models.common.Conv"
    assert torch.equal(nostride.load_yolov5(v6_file[0]).model[0].conv.weight, v6_file[1].model[0].conv.weight)


def test_unknown_yolov5_layer_is_refused_by_name(tmp_path):
    class C3TR(nn.Module):
        __module__ = "models.common"
        __qualname__ = "C3TR"

    with reference_modules():
        sys.modules["models.common"].C3TR = C3TR
        torch.save({"model": C3TR()}, tmp_path / "c3tr.pt")
    with pytest.raises(UnsafePickleError, match=r"models\.common\.C3TR.*not one nostride's YOLOv5 implements"):
        nostride.load_yolov5(tmp_path / "c3tr.pt")


def test_bad_files_give_clear_errors(tmp_path, v6_file):
    with pytest.raises(FileNotFoundError):
        nostride.load_yolov5(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match=r"junk\.pt: not a torch.save zip archive"):
        nostride.load_yolov5(junk)
    torch.save({"epoch": 3}, tmp_path / "nomodel.pt")
    with pytest.raises(ValueError, match=r"nomodel\.pt: no 'model' entry"):
        nostride.load_yolov5(tmp_path / "nomodel.pt")
    torch.save({"model": {"model.0.conv.weight": torch.zeros(1)}}, tmp_path / "sd.pt")
    with pytest.raises(ValueError, match="bare state dict"):
        nostride.load_yolov5(tmp_path / "sd.pt")
    # files often given by mistake: a nostride checkpoint, a torchvision state dict (never all its keys)
    save_checkpoint(make_checkpoint(nostride.create_model("resnet18_cifar", num_classes=3)), tmp_path / "ns.pt")
    with pytest.raises(ValueError, match=r"ns\.pt is already a nostride checkpoint \(resnet18_cifar, task classify\): "
                       "nothing to import"):
        nostride.load_yolov5(tmp_path / "ns.pt")
    torch.save({f"layer{i}.weight": torch.zeros(1) for i in range(120)}, tmp_path / "tv.pth")
    with pytest.raises(ValueError, match=r"tv\.pth is a state dict \(120 tensors: layer0\.weight, layer1\.weight, "
                       r"layer10\.weight, \.\.\.\), not a YOLOv5 checkpoint") as e:
        nostride.load_yolov5(tmp_path / "tv.pth")
    assert len(str(e.value)) < 400
    with pytest.warns(FutureWarning):  # torch.jit is deprecated, but such archives still exist
        torch.jit.save(torch.jit.script(nn.Identity()), tmp_path / "ts.pt")
    with pytest.raises(ValueError, match="TorchScript archive"):
        read_torch_pickle(tmp_path / "ts.pt")


def test_missing_definition_and_mismatched_weights(tmp_path, v6_file):
    ref = v6_file[1]
    no_yaml = copy.deepcopy(ref)
    del no_yaml.yaml
    write_yolov5_checkpoint(tmp_path / "noyaml.pt", no_yaml)
    with pytest.raises(ValueError, match=r"noyaml\.pt: the model has no definition dict"):
        nostride.load_yolov5(tmp_path / "noyaml.pt")
    wrong = copy.deepcopy(ref)
    wrong.yaml["width_multiple"] = 0.25  # the definition no longer fits the weights
    write_yolov5_checkpoint(tmp_path / "wrong.pt", wrong)
    with pytest.raises(ValueError, match=r"wrong\.pt: weights do not match .*shape mismatch: model\.0\.conv\.weight"):
        nostride.load_yolov5(tmp_path / "wrong.pt")


def test_non_silu_activation_is_refused(tmp_path):
    ref = build_reference_model(v6_cfg(nc=2, depth_multiple=0.33, width_multiple=0.0625), act=nn.LeakyReLU(0.1), v7=True)
    assert isinstance(ref.model[0].act, nn.LeakyReLU)
    path = write_yolov5_checkpoint(tmp_path / "leaky.pt", ref, v7=True)
    with pytest.raises(ValueError, match=r"leaky\.pt: .*LeakyReLU\(negative_slope=0\.1\)"):
        nostride.load_yolov5(path)
    assert Conv.default_act is None  # the fixture restored its default


# ------------------------------------------------------------------ using the imported model
def test_imported_model_fine_tunes(v6_model):
    from nostride.tasks.detect.loss import YOLOv5Loss

    model = copy.deepcopy(v6_model).train()
    loss_fn = YOLOv5Loss(model, hyp=model.hyp, img_size=64)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.3, 0.4], [1, 0, 0.25, 0.7, 0.2, 0.2]])
    loss, items = loss_fn(model(torch.randn(2, 3, 64, 64)), targets)
    loss.sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(int(g.abs().sum() > 0) for g in grads) > 0.9 * len(grads)
    before = model.model[0].conv.weight.detach().clone()
    opt.step()
    assert not torch.equal(before, model.model[0].conv.weight)
    assert math.isfinite(float(loss.detach().sum()))


def test_imported_model_spdifies_exactly(v6_model):
    model = v6_model
    converted, report = nostride.spdify(model, example_input=torch.zeros(1, 3, 64, 64))
    strided = [n for n, m in converted.named_modules() if isinstance(m, nn.Conv2d) and max(m.stride) > 1]
    assert not strided and len(report) > 0
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(_outputs(converted.eval(), x)[0], _outputs(model, x)[0], atol=1e-3, rtol=1e-4)


@pytest.mark.slow
def test_cli_import_writes_a_rebuildable_nostride_checkpoint(tmp_path, spd_file, capsys):
    path, _, ema_ref = spd_file
    out = tmp_path / "imported.pt"
    assert cli_main(["import", str(path), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "SPD fork" in printed and "'ema' weights" in printed and str(out) in printed
    ckpt = load_checkpoint(out)  # weights_only=True
    assert ckpt["model_name"] == "yolov5" and ckpt["task"] == "detect"
    assert ckpt["names"] == ["a", "b", "c", "d"] and ckpt["hyp"] == HYP
    assert ckpt["imported_from"]["weights"] == "ema" and ckpt["imported_from"]["layout"] == "v7"
    assert ckpt["model"]["model.0.conv.conv.weight"].dtype == torch.float16  # file dtype by default
    rebuilt = model_from_checkpoint(out)
    x = torch.randn(1, 3, 64, 64)
    _assert_same_outputs(ema_ref, rebuilt, x)
    assert rebuilt.names == ["a", "b", "c", "d"]

    assert cli_main(["import", str(path), str(tmp_path / "fp32.pt"), "--fp32", "--weights", "model"]) == 0
    ckpt32 = load_checkpoint(tmp_path / "fp32.pt")
    assert ckpt32["model"]["model.0.conv.conv.weight"].dtype == torch.float32
    assert ckpt32["imported_from"]["weights"] == "model"


def test_cli_import_reports_refusal_in_one_line(tmp_path, capsys):
    marker = tmp_path / "executed"
    torch.save({"model": _OsSystem(marker)}, tmp_path / "evil.pt")
    assert cli_main(["import", str(tmp_path / "evil.pt"), str(tmp_path / "out.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nostride import: error:") and "posix.system" in err and err.count("\n") == 1
    assert not marker.exists() and not (tmp_path / "out.pt").exists()
