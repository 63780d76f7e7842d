"""Engine units: schedules, parameter groups, EMA, options precedence, checkpoints, RNG states, samplers."""

from __future__ import annotations

import io
import math
import random

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from nostride.checkpoint import load_checkpoint, save_checkpoint
from nostride.engine import LRSchedule, ModelEMA, TrainConfig, build_config, lr_factor, param_groups
from nostride.engine.checkpointer import capture_rng_state, restore_rng_state
from nostride.engine.distributed import ShardSampler
from nostride.engine.optim import build_optimizer
from nostride.engine.rundir import increment_path


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1), nn.Flatten(),
                         nn.Linear(2, 3), nn.LayerNorm(3))


# ---------------------------------------------------------------- schedules
def test_lr_factor_formulas():
    assert lr_factor("step", 0, 200, milestones=[100, 150]) == 1.0
    assert lr_factor("step", 99.9, 200, milestones=[100, 150]) == 1.0
    assert lr_factor("step", 100, 200, milestones=[100, 150]) == pytest.approx(0.1)
    assert lr_factor("step", 150, 200, milestones=[100, 150], gamma=0.2) == pytest.approx(0.04)
    # YOLOv5 one_cycle: ((1 - cos(pi x / E)) / 2) * (lrf - 1) + 1
    for x in (0, 7, 50, 100):
        yolo = ((1 - math.cos(x * math.pi / 100)) / 2) * (0.01 - 1) + 1
        assert lr_factor("cosine", x, 100, lrf=0.01) == pytest.approx(yolo)
        assert lr_factor("linear", x, 100, lrf=0.01) == pytest.approx((1 - x / 100) * (1 - 0.01) + 0.01)
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_factor("poly", 0, 10)


def _sched(**kw):
    model = _net()
    opt = build_optimizer(model, "sgd", lr=0.1, momentum=0.9, weight_decay=1e-4)
    args = dict(lr=0.1, momentum=0.9, iters_per_epoch=10, epochs=4)
    args.update(kw)
    return opt, LRSchedule(opt, **args)


def test_schedule_values_with_warmup():
    opt, s = _sched(kind="step", milestones=[2, 3], warmup_iters=5, warmup_momentum=0.8, warmup_bias_lr=0.1)
    names = [g["group"] for g in opt.param_groups]
    assert names == ["norm", "decay", "bias"]
    # iteration 0: weights start at 0, bias at warmup_bias_lr, momentum at warmup_momentum
    vals = dict(zip(names, s.values(0)))
    assert vals["decay"] == (0.0, 0.8) and vals["norm"] == (0.0, 0.8) and vals["bias"] == (0.1, 0.8)
    # iteration 2 of 5: 40 % of the way
    vals = dict(zip(names, s.values(2)))
    assert vals["decay"][0] == pytest.approx(0.04) and vals["bias"][0] == pytest.approx(0.1 + (0.1 - 0.1) * 0.4)
    assert vals["decay"][1] == pytest.approx(0.8 + 0.1 * 0.4)
    # after warm-up: the plain schedule; milestone 2 -> x0.1 from iteration 20, 3 -> x0.01 from 30
    assert s.values(5)[1] == (pytest.approx(0.1), 0.9)
    assert s.values(19)[1][0] == pytest.approx(0.1)
    assert s.values(20)[1][0] == pytest.approx(0.01)
    assert s.values(35)[1][0] == pytest.approx(0.001)
    s.step(20)
    assert all(g["lr"] == pytest.approx(0.01) and g["momentum"] == 0.9 for g in opt.param_groups)


def test_schedule_bias_warmup_from_high_lr():
    opt, s = _sched(kind="cosine", warmup_iters=10, warmup_bias_lr=0.5)
    bias = [g["group"] for g in opt.param_groups].index("bias")
    target = 0.1 * lr_factor("cosine", 0.5, 4)  # iteration 5 = epoch 0.5 (per-iteration unit)
    assert s.values(5)[bias][0] == pytest.approx(0.5 + (target - 0.5) * 0.5)


def test_schedule_per_epoch_vs_per_iteration():
    _, per_iter = _sched(kind="cosine", unit="iter")
    _, per_epoch = _sched(kind="cosine", unit="epoch")
    assert per_epoch.values(15)[0][0] == pytest.approx(0.1 * lr_factor("cosine", 1, 4))
    assert per_iter.values(15)[0][0] == pytest.approx(0.1 * lr_factor("cosine", 1.5, 4))
    assert per_epoch.values(10)[0][0] == per_epoch.values(19)[0][0]


def test_schedule_default_milestones_and_adamw_beta_warmup():
    model = _net()
    opt = build_optimizer(model, "adamw", lr=1e-3, momentum=0.9, weight_decay=0.05)
    s = LRSchedule(opt, lr=1e-3, momentum=0.9, iters_per_epoch=1, epochs=8, kind="step", warmup_iters=2,
                   warmup_momentum=0.5)
    assert s.milestones == [4.0, 6.0]
    s.step(1)
    assert opt.param_groups[0]["betas"] == (pytest.approx(0.7), 0.999)
    s.step(6)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-5)


# ---------------------------------------------------------------- optimizer
def test_param_groups_decay_assignment():
    model = _net()
    groups = {g["group"]: g for g in param_groups(model, 5e-4)}
    conv1, bn, conv2, lin, ln = model[0], model[1], model[2], model[4], model[5]
    ids = lambda g: {id(p) for p in groups[g]["params"]}  # noqa: E731
    assert ids("norm") == {id(bn.weight), id(ln.weight)}
    assert ids("decay") == {id(conv1.weight), id(conv2.weight), id(lin.weight)}
    assert ids("bias") == {id(bn.bias), id(conv2.bias), id(lin.bias), id(ln.bias)}
    assert groups["decay"]["weight_decay"] == 5e-4
    assert groups["norm"]["weight_decay"] == 0.0 and groups["bias"]["weight_decay"] == 0.0
    every = param_groups(model, 5e-4, decay_norm_bias=True)
    assert all(g["weight_decay"] == 5e-4 for g in every)
    assert sum(len(g["params"]) for g in every) == len(list(model.parameters()))


def test_optimizer_options():
    model = _net()
    sgd = build_optimizer(model, "sgd", lr=0.1, momentum=0.95, weight_decay=0.0, nesterov=True)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.95
    adamw = build_optimizer(model, "adamw", lr=1e-3, momentum=0.8, weight_decay=0.05)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["betas"] == (0.8, 0.999)
    assert [g["weight_decay"] for g in adamw.param_groups] == [0.0, 0.05, 0.0]


# ---------------------------------------------------------------------- EMA
def test_ema_formula_over_weights_and_buffers():
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
    ema = ModelEMA(model, decay=0.9, tau=3.0)
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        model[1].running_mean.fill_(4.0)
        model[1].num_batches_tracked.fill_(7)
    ema.update(model)
    d = 0.9 * (1 - math.exp(-1 / 3.0))
    assert ema.decay_at(1) == pytest.approx(d)
    msd = model.state_dict()
    for k, v in ema.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(v, d * before[k] + (1 - d) * msd[k])
        else:
            assert torch.equal(v, msd[k])
    assert ema.updates == 1 and not any(p.requires_grad for p in ema.module.parameters())
    # resuming continues the ramp
    ema2 = ModelEMA(model, decay=0.9, tau=3.0)
    ema2.load_state_dict(ema.state_dict(), updates=ema.updates)
    assert ema2.decay_at(ema2.updates + 1) == pytest.approx(0.9 * (1 - math.exp(-2 / 3.0)))


# -------------------------------------------------------------------- config
def test_config_precedence_defaults_yaml_cli(tmp_path):
    f = tmp_path / "recipe.yaml"
    f.write_text("lr: 0.02\nepochs: 7\nbatch-size: 32\nmilestones: [3, 5]\nema: true\n")
    cfg = build_config(f, epochs=9)
    assert cfg.lr == 0.02 and cfg.batch_size == 32 and cfg.milestones == [3.0, 5.0] and cfg.ema is True
    assert cfg.epochs == 9  # command line beats the file
    assert cfg.momentum == TrainConfig().momentum  # default where neither says
    # the CLI passes only flags given on the command line: the file's values survive
    from nostride.cli import build_parser

    args = vars(build_parser().parse_args(["train", "--config", str(f), "--lr", "0.5"]))
    opts = {k: v for k, v in args.items() if k not in ("func", "command", "config")}
    assert opts == {"lr": 0.5}
    cfg = build_config(args["config"], **opts)
    assert cfg.lr == 0.5 and cfg.epochs == 7


def test_config_rejects_bad_keys_and_values(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("learning_rate: 0.1\n")
    with pytest.raises(ValueError, match=r"bad.yaml: unknown option 'learning_rate'"):
        build_config(f)
    f.write_text("epochs: ten\n")
    with pytest.raises(ValueError, match=r"bad.yaml: option 'epochs' must be int"):
        build_config(f)
    f.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="expected a mapping"):
        build_config(f)
    with pytest.raises(ValueError, match="did you mean weight_decay"):
        build_config(weight_decy=0.1)
    with pytest.raises(ValueError, match="schedule must be one of"):
        build_config(schedule="poly")
    with pytest.raises(FileNotFoundError):
        build_config(tmp_path / "missing.yaml")


def test_args_yaml_round_trip(tmp_path):
    from nostride.engine import save_config

    cfg = build_config(model="resnet18_cifar", lr=0.3, milestones=[10, 20], amp=False, task_options={"a": 1})
    path = save_config(cfg, tmp_path / "args.yaml")
    assert yaml.safe_load(path.read_text())["lr"] == 0.3
    assert build_config(path) == cfg


# --------------------------------------------------------------- checkpoints
def test_atomic_checkpoint_failure_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "weights" / "last.pt"
    save_checkpoint({"format": "nostride", "epoch": 1, "w": torch.ones(3)}, path)

    def broken_save(obj, f, *a, **k):
        f.write(b"partial")
        raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of writing

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"format": "nostride", "epoch": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    ckpt = load_checkpoint(path)
    assert ckpt["epoch"] == 1 and torch.equal(ckpt["w"], torch.ones(3))
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]  # no temp file left


def test_rng_state_round_trip_is_weights_only_safe():
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    random.gauss(0, 1)  # makes python's cached gauss non-None
    state = capture_rng_state()
    buf = io.BytesIO()
    torch.save({"rng": state}, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)["rng"]
    expected = (random.random(), float(np.random.rand()), torch.rand(2), random.gauss(0, 1), np.random.randn())
    random.seed(99), np.random.seed(99), torch.manual_seed(99)
    restore_rng_state(loaded)
    got = (random.random(), float(np.random.rand()), torch.rand(2), random.gauss(0, 1), np.random.randn())
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])
    assert got[3] == expected[3] and got[4] == expected[4]


# ------------------------------------------------------------ samplers, dirs
@pytest.mark.parametrize("n,world", [(7, 2), (10, 3), (2, 4)])
def test_shard_sampler_counts_every_sample_once(n, world):
    shards = [list(ShardSampler(n, r, world)) for r in range(world)]
    assert sorted(i for s in shards for i in s) == list(range(n))
    assert [len(ShardSampler(n, r, world)) for r in range(world)] == [len(s) for s in shards]


def test_run_dir_increments(tmp_path):
    assert increment_path(tmp_path / "exp") == tmp_path / "exp"
    assert increment_path(tmp_path / "exp") == tmp_path / "exp2"
    assert increment_path(tmp_path / "exp") == tmp_path / "exp3"
    assert increment_path(tmp_path / "exp", exist_ok=True) == tmp_path / "exp"


# ------------------------------------------------------- resume paths, devices, tensorboard
def test_resume_path_forms(tmp_path):
    import os
    import time

    from nostride.engine.checkpointer import resolve_resume_path

    for name in ("a", "b"):
        save_checkpoint({"format": "nostride"}, tmp_path / name / "weights" / "last.pt")
        time.sleep(0.01)
    os.utime(tmp_path / "a" / "weights" / "last.pt")  # newest
    assert resolve_resume_path(str(tmp_path / "b"), str(tmp_path), "x") == tmp_path / "b" / "weights" / "last.pt"
    assert resolve_resume_path(True, str(tmp_path), "b") == tmp_path / "b" / "weights" / "last.pt"  # own run
    assert resolve_resume_path(True, str(tmp_path), "exp") == tmp_path / "a" / "weights" / "last.pt"  # newest
    assert resolve_resume_path(True, str(tmp_path)) == tmp_path / "a" / "weights" / "last.pt"
    # the most recent run, at any depth, even when an older PROJECT/exp exists (as YOLOv5's --resume)
    save_checkpoint({"format": "nostride"}, tmp_path / "exp" / "weights" / "last.pt")
    time.sleep(0.01)
    save_checkpoint({"format": "nostride"}, tmp_path / "study" / "runs" / "seed0" / "weights" / "last.pt")
    assert resolve_resume_path(True, str(tmp_path)) == tmp_path / "study" / "runs" / "seed0" / "weights" / "last.pt"
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        resolve_resume_path(str(tmp_path / "nope.pt"), str(tmp_path), "x")


def test_device_selection_errors():
    from nostride.engine.distributed import select_device

    assert select_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert select_device("") == torch.device("cpu") or select_device("").type == "mps"
        with pytest.raises(ValueError, match="CUDA is not available"):
            select_device("cuda:0")
    with pytest.raises(ValueError, match="unknown device"):
        select_device("tpu")


def test_results_writer_csv_resume_truncation_and_missing_tensorboard(tmp_path, capsys, monkeypatch):
    import builtins
    import csv as _csv

    from nostride.engine.results import ResultsWriter

    real_import = builtins.__import__

    def no_tensorboard(name, *a, **k):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    w = ResultsWriter(tmp_path, tensorboard=True)
    assert "tensorboard: not installed" in capsys.readouterr().out
    monkeypatch.undo()
    for e in range(3):
        w.write({"epoch": e + 1, "lr": 0.1 / (e + 1), "train/loss": 2.0 - e})
    w.close()
    assert (tmp_path / "results.png").stat().st_size > 0
    # resuming from epoch 2's checkpoint drops the later row, then appends
    w = ResultsWriter(tmp_path, resume_epoch=2, plot_interval=1e9)
    w.write({"epoch": 3, "lr": 0.01, "train/loss": 0.5})
    rows = list(_csv.DictReader(open(tmp_path / "results.csv")))
    assert [(r["epoch"], r["train/loss"]) for r in rows] == [("1", "2"), ("2", "1"), ("3", "0.5")]


def test_lost_peer_recognises_a_collective_whose_peer_ended():
    from nostride.engine.distributed import lost_peer

    gloo = RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:561] Connection closed by peer "
                        "[127.0.0.1]:23766. This is typically caused by a remote worker crashing.")
    assert lost_peer(gloo)
    assert not lost_peer(RuntimeError("CUDA out of memory"))
    assert not lost_peer(ValueError("connection closed by peer"))  # not a collective's error type
