"""Starting a new run from weights: `nostride train --weights`, `--spdify`, torchvision:/timm: model names."""

from __future__ import annotations

import pytest
import torch

from nostride.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint
from nostride.cli import main
from nostride.models.external import build_named_model
from nostride.weights import initialise_model, load_pretrained, read_weights

torchvision = pytest.importorskip("torchvision")


def test_torchvision_weights_then_spdify_keep_the_function(tmp_path, capsys):
    """A 1000-class torchvision state dict into a 10-class model: body loaded, head re-initialised, then
    converted with preserve-init (max-pool kept: the body computes what the file's weights compute)."""
    torch.manual_seed(0)
    source = torchvision.models.resnet18().eval()
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    model, _, _ = build_named_model("torchvision:resnet18", num_classes=10)
    model, message = initialise_model(model, path, spdify=False)
    assert "classifier head (fc.weight, fc.bias) re-initialised: the weights have 1000 classes, the model 10" in message
    assert torch.equal(model.layer1[0].conv1.weight, source.layer1[0].conv1.weight)
    from nostride.convert import spdify

    converted, _ = spdify(model.eval(), pool={"max": "keep"}, example_input=(1, 3, 32, 32))
    body = torch.nn.Sequential(*list(source.children())[:-1])
    body_converted = torch.nn.Sequential(*list(converted.children())[:-1])
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(body_converted.eval()(x), body(x), atol=1e-5)
    # --spdify inside initialise_model says what happened, layer by layer in words
    model, _, _ = build_named_model("torchvision:resnet18", num_classes=10)
    model, message = initialise_model(model, path, spdify=True, example_input=(1, 3, 32, 32))
    assert "then converted to SPD-Conv (8 layers; approximate: maxpool)" in message
    assert hasattr(model.conv1, "spd") or "SPD" in type(model.conv1).__name__ or model.spdify_options


def test_weights_file_kinds(tmp_path):
    model = torchvision.models.resnet18(num_classes=3)
    state = model.state_dict()
    for name, obj, kind in [
        ("plain.pth", state, "state dict"),
        ("ddp.pth", {f"module.{k}": v for k, v in state.items()}, "state dict"),
        ("timm.pth", {"state_dict": state, "epoch": 4, "arch": "resnet18"}, "checkpoint (its 'state_dict' weights)"),
        ("ema.pth", {"model": state, "model_ema": state}, "checkpoint (its 'model_ema' weights)"),
    ]:
        torch.save(obj, tmp_path / name)
        file = read_weights(tmp_path / name)
        assert file.kind == kind and set(file.state) == set(state), name
    torch.save({"epoch": 1, "opt": {"lr": 0.1}}, tmp_path / "none.pth")
    with pytest.raises(ValueError, match=r"none.pth: no weights found .*keys epoch, opt"):
        read_weights(tmp_path / "none.pth")
    # another architecture: a short error with a few key names
    other = torchvision.models.mobilenet_v3_small().state_dict()
    with pytest.raises(ValueError, match=r"weights do not fit ResNet: 122 model tensors missing") as e:
        load_pretrained(model, other)
    assert len(str(e.value)) < 600


@pytest.mark.slow
def test_train_weights_from_converted_checkpoint_without_model(tmp_path, capsys):
    """`convert --output` gives a checkpoint that `train --weights` starts from; the model comes from the file."""
    from nostride.data.builtin.lowres import make_lowres

    data = make_lowres(tmp_path / "data", img_size=32, train=1, val=1, test=1)
    converted = tmp_path / "sq_spd.pt"
    assert main(["convert", "squeezenet1_1", "--img-size", "32", "--num-classes", "10", "--output", str(converted)]) == 0
    capsys.readouterr()
    args = ["train", "--weights", str(converted), "--data", str(data), "--epochs", "1", "--batch-size", "10",
            "--device", "cpu", "--workers", "0", "--project", str(tmp_path / "runs"), "--name", "ft", "--lr", "0.001"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"initialised from {converted} (nostride checkpoint (model weights)): 55 tensors" in out
    assert "converted to SPD-Conv as the file records" in out and "re-initialised" not in out
    ckpt = load_checkpoint(tmp_path / "runs" / "ft" / "weights" / "last.pt")
    assert (ckpt["source"], ckpt["source_model"], ckpt["epoch"]) == ("torchvision", "squeezenet1_1", 1)
    assert ckpt["config"]["model"] == "torchvision:squeezenet1_1" and ckpt["spdify"]
    # val reads it and names the model
    assert main(["val", "--weights", str(tmp_path / "runs" / "ft" / "weights" / "best.pt"), "--project",
                 str(tmp_path / "val"), "--workers", "0"]) == 0
    assert "\ntorchvision:squeezenet1_1 (" in capsys.readouterr().out


def test_state_dict_without_model_asks_for_one(tmp_path, capsys):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r.pth")
    assert main(["train", "--weights", str(tmp_path / "r.pth"), "--data", str(tmp_path)]) == 2
    assert "does not say which model it is for: pass --model NAME" in capsys.readouterr().err


def test_timm_model_name(tmp_path):
    pytest.importorskip("timm")
    model, source, name = build_named_model("timm:resnet18", num_classes=4)
    assert (source, name, model.num_classes) == ("timm", "resnet18", 4)
    ckpt = make_checkpoint(model, names=list("abcd"))
    assert (ckpt["source"], ckpt["source_model"], ckpt["model_kwargs"]) == ("timm", "resnet18", {"num_classes": 4})
    save_checkpoint(ckpt, tmp_path / "t.pt")
    from nostride import model_from_checkpoint

    rebuilt = model_from_checkpoint(tmp_path / "t.pt")
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in rebuilt.state_dict().items())


def test_unreadable_weights_files_are_one_line_without_unsafe_advice(tmp_path):
    import collections

    text = tmp_path / "notes.pt"
    text.write_text("hello, these are not weights\n")
    good = tmp_path / "good.pt"
    torch.save(torchvision.models.resnet18().state_dict(), good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:5000])
    pickled = tmp_path / "pickled.pt"
    torch.save({"model": collections.OrderedDict(a=1), "cls": collections.Counter}, pickled)
    for path in (text, truncated, pickled):
        with pytest.raises(ValueError) as e:
            read_weights(path)
        message = str(e.value)
        assert str(path) in message and "\n" not in message and "weights_only=False" not in message, message
