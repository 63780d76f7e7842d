"""Shared utilities: select_device (one set of rules for --device: train, val, predict), output_tensors."""

import pytest
import torch

from nostride.utils import select_device


def test_cpu_names_and_errors():
    assert select_device("cpu") == torch.device("cpu")
    assert select_device(" CPU ") == torch.device("cpu")
    assert select_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        select_device("tpu")
    with pytest.raises(ValueError, match="unknown device 'meta'"):
        select_device("meta")  # a torch device type, but not one to run on


def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch):
    import nostride.utils.device as D

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(D, "_mps_available", lambda: False)
    assert select_device(None) == select_device("") == select_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="CUDA is not available"):
        select_device("0")
    with pytest.raises(ValueError, match="MPS is not available"):
        select_device("mps")
    monkeypatch.setattr(D, "_mps_available", lambda: True)
    assert select_device("") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert select_device("") == torch.device("cuda")
    assert select_device("", local_rank=1) == torch.device("cuda", 1)  # torchrun: this rank's GPU
    assert select_device("cuda", local_rank=1) == torch.device("cuda", 1)
    assert select_device("cuda:0", local_rank=1) == torch.device("cuda", 0)  # an explicit index wins
    assert select_device("1") == torch.device("cuda", 1)  # YOLOv5-style index
    with pytest.raises(ValueError, match="cuda:2 requested but only 2 CUDA device"):
        select_device("2")
    with pytest.raises(ValueError, match="cuda:2 requested but only 2"):
        select_device(torch.device("cuda", 2))


def test_callers_share_it():
    import importlib

    from nostride.engine import distributed
    from nostride.tasks.classify import evaluate

    assert evaluate.resolve_device is select_device
    assert importlib.import_module("nostride.tasks.detect.predict").select_device is select_device
    with pytest.raises(ValueError, match="unknown device"):
        distributed.select_device("tpu")


def test_output_tensors_flattens_in_order():
    from nostride.utils import output_tensors

    a, b, c = torch.zeros(1), torch.ones(2), torch.full((3,), 2.0)
    got = output_tensors((a, {"x": b, "y": [c]}))
    assert [t.shape for t in got] == [(1,), (2,), (3,)] and got[0] is a and got[2] is c
    assert output_tensors([a, None], strict=False) == [a]
    with pytest.raises(TypeError, match="NoneType"):
        output_tensors([a, None])


def test_write_image_round_trips_and_picks_the_format(tmp_path):
    import warnings

    from nostride.data import read_image_rgb, write_image

    img = torch.randint(0, 256, (3, 9, 7), dtype=torch.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # the codec deprecation is silenced
        png = write_image(img, tmp_path / "sub" / "a.png")
        jpg = write_image(img, tmp_path / "b.bmp")
        assert torch.equal(read_image_rgb(png), img)  # PNG is lossless
        assert jpg.name == "b.jpg" and read_image_rgb(jpg).shape == (3, 9, 7)


def test_default_workers_follow_the_cpus(monkeypatch):
    """The default worker count never exceeds what the DataLoader itself suggests (no 'suggested max' warning)."""
    import os
    import warnings

    from torch.utils.data import DataLoader

    from nostride.engine.config import TrainConfig
    from nostride.engine.distributed import DistInfo
    from nostride.engine.loaders import eval_loader
    from nostride.utils.workers import default_workers

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert default_workers() == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert default_workers() == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert default_workers() == 8  # capped
    assert TrainConfig().workers is None  # "not given": the loaders use default_workers()
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    loader = eval_loader(list(range(10)), 4, None, DistInfo())
    assert isinstance(loader, DataLoader)
    assert loader.num_workers == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loader.check_worker_number_rationality()


def test_metrics_are_rounded_and_plurals_right():
    import json
    import re
    from pathlib import Path

    from nostride.utils.numbers import plural, round_floats

    record = {"top1": 28.619999999999997, "loss": 0.12345678912, "count": 1000, "ok": True,
              "per_class": [{"acc": 1 / 3}], "none": None, "nan": float("nan")}
    text = json.dumps(round_floats(record))
    assert '"top1": 28.62' in text and '"loss": 0.123457' in text and '"acc": 0.333333' in text
    assert '"count": 1000' in text and '"ok": true' in text
    assert (plural(1, "layer"), plural(6, "layer"), plural(2, "class", "classes")) == ("1 layer", "6 layers", "2 classes")
    # no "image(s)"-style plurals left in messages
    root = Path(__file__).resolve().parents[1] / "nostride"
    hits = [f"{p.name}:{i}" for p in root.rglob("*.py") for i, line in enumerate(p.read_text().splitlines(), 1)
            if re.search(r"\bf[\"'].*\b(?!(?:float|int|str|len|round)\()[A-Za-z]+\(s\)", line)]
    assert not hits, hits


def test_progress_is_a_bar_on_a_terminal_and_log_lines_when_redirected(monkeypatch, capsys):
    import io
    import sys

    from nostride.utils.progress import LogProgress, progress

    monkeypatch.setenv("NOSTRIDE_LOG_INTERVAL", "0")
    bar = progress(range(4), desc="val (test)", unit="batch")  # pytest's stderr is not a terminal
    assert isinstance(bar, LogProgress) and list(bar) == [0, 1, 2, 3]
    err = capsys.readouterr().err
    assert "\r" not in err and "val (test): 2/4 batches (50%)" in err and "val (test): 4/4 batches (100%)" in err
    assert len(err.strip().splitlines()) == 4  # one per update (the last one is the closing line)
    monkeypatch.setenv("NOSTRIDE_LOG_INTERVAL", "3600")
    assert list(progress(range(3), desc="quiet")) == [0, 1, 2] and capsys.readouterr().err == ""  # short jobs: silent
    assert list(progress(range(2), desc="x", disable=True)) == [0, 1]

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    from tqdm import tqdm

    assert isinstance(progress(range(2), desc="bar"), tqdm)
