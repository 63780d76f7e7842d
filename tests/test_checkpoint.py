"""nostride.checkpoint: atomic writes, weights_only loads, rebuilding models."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn

from nostride.checkpoint import (
    load_checkpoint,
    make_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from nostride.models import _registry


@pytest.fixture()
def tiny_model_name():
    name = "_test_tiny_classifier"

    def _plain(*, num_classes: int = 3) -> nn.Module:
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))

    _registry.register_model("classify", name)(_plain)
    yield name
    _registry._REGISTRY.pop(name)


def test_roundtrip_rebuilds_identical_model(tmp_path, tiny_model_name):
    from nostride import create_model

    model = create_model(tiny_model_name, num_classes=5).eval()
    model[1].running_mean.uniform_(-1, 1)
    path = save_checkpoint(make_checkpoint(model, names=list("abcde")), tmp_path / "w" / "m.pt")
    ckpt = load_checkpoint(path)
    assert ckpt["model_name"] == tiny_model_name and ckpt["model_kwargs"] == {"num_classes": 5}
    rebuilt = model_from_checkpoint(path)
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(rebuilt(x), model(x))
    assert rebuilt.names == list("abcde")
    assert not rebuilt.training


def test_ema_weights_are_preferred(tmp_path, tiny_model_name):
    from nostride import create_model

    model = create_model(tiny_model_name)
    ema = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    save_checkpoint(make_checkpoint(model, ema=ema), tmp_path / "m.pt")
    rebuilt = model_from_checkpoint(tmp_path / "m.pt")
    assert all(torch.count_nonzero(v) == 0 for v in rebuilt.state_dict().values())
    raw = model_from_checkpoint(tmp_path / "m.pt", use_ema=False)
    assert torch.equal(raw[0].weight, model[0].weight)


def test_failed_write_keeps_previous_file(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint({"format": "nostride", "version": 1, "epoch": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(Exception):
        save_checkpoint({"format": "nostride", "epoch": 2, "bad": Unpicklable()}, path)
    assert torch.load(path, weights_only=True)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind


def test_load_refuses_code_and_foreign_files(tmp_path):
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = tmp_path / "evil.pt"
    torch.save({"format": "nostride", "x": Payload()}, evil)
    with pytest.raises(ValueError, match="evil.pt"):
        load_checkpoint(evil)
    assert not marker.exists()

    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(ValueError, match="not a nostride checkpoint"):
        load_checkpoint(foreign)

    junk = tmp_path / "junk.pt"
    junk.write_bytes(pickle.dumps([1, 2]) + b"garbage")
    with pytest.raises(ValueError, match="junk.pt"):
        load_checkpoint(junk)

    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")


def test_newer_format_version_is_refused(tmp_path):
    torch.save({"format": "nostride", "version": 99}, tmp_path / "new.pt")
    with pytest.raises(ValueError, match="version 99"):
        load_checkpoint(tmp_path / "new.pt")


def test_model_or_checkpoint_checks_the_task(tmp_path, tiny_model_name):
    from nostride import create_model
    from nostride.checkpoint import model_or_checkpoint

    model = create_model(tiny_model_name, num_classes=2)
    assert model_or_checkpoint(model, "detect") == (model, None)  # a model is taken as given
    path = save_checkpoint(make_checkpoint(model, names=["a", "b"]), tmp_path / "m.pt")
    rebuilt, ckpt = model_or_checkpoint(path, "classify")
    assert ckpt["task"] == "classify" and rebuilt.names == ["a", "b"] and not rebuilt.training
    with pytest.raises(ValueError, match="detection predict needs a detection checkpoint, this one is 'classify'"):
        model_or_checkpoint(str(path), "detect", "detection predict")


def test_recorded_option_precedence():
    from nostride.checkpoint import recorded_option

    ckpt = {"config": {"img_size": 64, "mean": None}, "img_size": 32, "mean": [0.5] * 3, "data": {"std": [0.2] * 3}}
    assert recorded_option(ckpt, "img_size") == 64  # the training options win
    assert recorded_option(ckpt, "mean") == [0.5] * 3  # None there: the top level
    assert recorded_option(ckpt, "std") == [0.2] * 3  # then the data record
    assert recorded_option(ckpt, "seed") is None and recorded_option(None, "img_size") is None


def test_version_1_checkpoints_are_read_with_epochs_from_1(tmp_path):
    """Format version 1 counted epochs from 0 (-1: none); they load numbered from 1 like everything else."""
    path = tmp_path / "v1.pt"
    torch.save({"format": "nostride", "version": 1, "epoch": 4, "best_epoch": 3}, path)
    ckpt = load_checkpoint(path)
    assert (ckpt["version"], ckpt["epoch"], ckpt["best_epoch"]) == (2, 5, 4)
    torch.save({"format": "nostride", "version": 1, "epoch": -1}, path)
    assert load_checkpoint(path)["epoch"] == 0
