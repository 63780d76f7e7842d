"""The training loop on a tiny synthetic task: resume exactness, Ctrl-C, NaN stop, outputs, accumulation."""

from __future__ import annotations

import csv
import json
import re
import math

import pytest
import torch
from torch.utils.data import Dataset

from nostride.checkpoint import load_checkpoint, model_from_checkpoint
from nostride.engine import Hook, NonFiniteLossError, Trainer, build_config, resolve_config
from nostride.tasks.base import DatasetSplits
from nostride.tasks.classify.task import ClassificationTask

pytestmark = pytest.mark.usefixtures("one_thread_module")


class NoisyBlobs(Dataset):
    """4 classes told apart by the red channel's mean; items get fresh random noise on every access
    (global torch RNG), so an exact resume needs the RNG state restored."""

    def __init__(self, n: int, seed: int, size: int = 8) -> None:
        g = torch.Generator().manual_seed(seed)
        self.y = torch.randint(0, 4, (n,), generator=g)
        self.x = torch.randn(n, 3, size, size, generator=g) * 0.3
        self.x[:, 0] += (self.y.float() - 1.5)[:, None, None]

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i] + 0.1 * torch.randn_like(self.x[i]), int(self.y[i])


class SynthTask(ClassificationTask):
    """Classification on NoisyBlobs (odd sizes: partial last batches)."""

    def build_datasets(self) -> DatasetSplits:
        self.names = ["a", "b", "c", "d"]
        return DatasetSplits(NoisyBlobs(70, 1), NoisyBlobs(21, 2), NoisyBlobs(13, 3))


class NaNTask(SynthTask):
    """Returns a NaN loss at epoch 2, second batch."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.calls = 0

    def loss(self, model, batch):
        loss, items = super().loss(model, batch)
        self.calls += 1
        if self.calls == 5 + 2:  # 5 batches per epoch (70 / 16)
            loss = loss * float("nan")
        return loss, items


class InterruptAt(Hook):
    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def before_step(self, trainer) -> None:
        if trainer.epoch == self.epoch and trainer.batch_index == self.batch:
            raise KeyboardInterrupt


def _cfg(tmp_path, name, **kw):
    opts = dict(model="resnet18_cifar", width=8, epochs=2, batch_size=16, lr=0.05, workers=0, device="cpu",
                project=str(tmp_path), name=name, quiet=True, deterministic=True, seed=3, ema=True, ema_tau=5,
                schedule="step", milestones=[1], warmup_epochs=0.5, warmup_momentum=0.5, warmup_bias_lr=0.1)
    opts.update(kw)
    return build_config(**opts)


def _assert_same_state(a: dict, b: dict) -> None:
    assert a["epoch"] == b["epoch"]
    for key in ("model", "ema"):
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), f"{key}.{k} differs"
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k]["momentum_buffer"], sb[k]["momentum_buffer"])
    assert a["ema_updates"] == b["ema_updates"]
    assert a["best_fitness"] == b["best_fitness"]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted 2-epoch run (shared by the resume tests)."""
    tmp = tmp_path_factory.mktemp("straight")
    cfg = _cfg(tmp, "straight")
    result = Trainer(cfg, task=SynthTask(cfg)).train()
    return tmp / "straight", result


def test_outputs_of_a_run(straight):
    run, result = straight
    for f in ("weights/last.pt", "weights/best.pt", "results.csv", "results.png", "args.yaml", "final_metrics.json"):
        assert (run / f).is_file(), f
    rows = list(csv.DictReader(open(run / "results.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]  # epochs are numbered from 1 everywhere
    assert {"lr", "train/loss", "val/top1", "val/count", "fitness", "time"} <= set(rows[0])
    assert rows[0]["val/count"] == "21"
    final = json.loads((run / "final_metrics.json").read_text())
    from nostride.utils.numbers import round_floats

    assert final["test"]["count"] == 13 and final == json.loads(json.dumps(round_floats(result)))
    text = (run / "final_metrics.json").read_text()  # rounded: 28.62, never 28.619999999999997
    assert not re.search(r"\d\.\d{8,}", text), text
    ckpt = load_checkpoint(run / "weights" / "last.pt")
    assert ckpt["format"] == "nostride" and ckpt["task"] == "classify" and ckpt["names"] == ["a", "b", "c", "d"]
    assert ckpt["model_kwargs"] == {"num_classes": 4, "width": 8}
    assert ckpt["config"]["epochs"] == 2 and isinstance(ckpt["rng"]["python"][1], list)
    best = load_checkpoint(run / "weights" / "best.pt")
    assert "optimizer" not in best and best["epoch"] == result["best_epoch"] in (1, 2)
    assert load_checkpoint(run / "weights" / "last.pt")["epoch"] == 2  # epochs finished
    # validation/best selection use the EMA: best.pt's fitness is the EMA model's top-1
    model = model_from_checkpoint(best)
    assert all(torch.equal(v, best["ema"][k]) for k, v in model.state_dict().items())


def test_resume_is_exact(straight, tmp_path):
    run, _ = straight
    cfg = _cfg(tmp_path, "split", epochs=1)
    Trainer(cfg, task=SynthTask(cfg)).train()
    first = load_checkpoint(tmp_path / "split" / "weights" / "last.pt")
    assert first["epoch"] == 1
    cfg2 = resolve_config(resume=str(tmp_path / "split"), epochs=2)
    assert cfg2.resume.endswith("last.pt") and cfg2.epochs == 2 and cfg2.ema_tau == 5
    Trainer(cfg2, task=SynthTask(cfg2)).train()
    _assert_same_state(load_checkpoint(run / "weights" / "last.pt"),
                       load_checkpoint(tmp_path / "split" / "weights" / "last.pt"))
    rows = list(csv.DictReader(open(tmp_path / "split" / "results.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]  # appended, not restarted
    straight_rows = list(csv.DictReader(open(run / "results.csv")))
    assert rows[1]["train/loss"] == straight_rows[1]["train/loss"]


@pytest.mark.slow
def test_ctrl_c_leaves_resumable_checkpoint(straight, tmp_path, capsys):
    run, _ = straight
    cfg = _cfg(tmp_path, "intr")
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, task=SynthTask(cfg), hooks=[InterruptAt(epoch=1, batch=2)]).train()
    assert "nostride train --resume" in capsys.readouterr().out
    last = tmp_path / "intr" / "weights" / "last.pt"
    assert load_checkpoint(last)["epoch"] == 1  # state after the last completed epoch
    cfg2 = resolve_config(resume=str(last))
    Trainer(cfg2, task=SynthTask(cfg2)).train()
    _assert_same_state(load_checkpoint(run / "weights" / "last.pt"), load_checkpoint(last))


def test_ctrl_c_in_first_epoch_leaves_initial_state(tmp_path):
    cfg = _cfg(tmp_path, "intr0", epochs=1, ema=False)
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, task=SynthTask(cfg), hooks=[InterruptAt(epoch=0, batch=1)]).train()
    ckpt = load_checkpoint(tmp_path / "intr0" / "weights" / "last.pt")
    assert ckpt["epoch"] == 0 and ckpt["optimizer"]["state"] == {}


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = _cfg(tmp_path, "nan", epochs=3, ema=False)
    with pytest.raises(NonFiniteLossError, match=r"epoch 2/3, iteration 2/5"):
        Trainer(cfg, task=NaNTask(cfg)).train()
    last = load_checkpoint(tmp_path / "nan" / "weights" / "last.pt")
    assert last["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
    rows = list(csv.DictReader(open(tmp_path / "nan" / "results.csv")))
    assert [r["epoch"] for r in rows] == ["1"]


class _GradLog(Hook):
    """Records the lr of each optimizer step and the number of steps."""

    def __init__(self):
        self.steps = 0

    def after_step(self, trainer):
        self.steps += trainer.stepped


def test_gradient_accumulation_steps(tmp_path):
    cfg = _cfg(tmp_path, "acc", epochs=1, accumulate=2, ema=False, batch_size=16)
    log = _GradLog()
    Trainer(cfg, task=SynthTask(cfg), hooks=[log]).train()
    assert log.steps == 3  # 5 batches: steps after batches 2, 4 and at the epoch's end


def test_accumulated_step_equals_big_batch(tmp_path):
    """Two accumulated batches of 8 give the same update as one batch of 16 (mean loss / accumulate)."""
    from torch import nn

    class Linear(ClassificationTask):
        def build_datasets(self):
            self.names = ["a", "b"]
            g = torch.Generator().manual_seed(0)
            x, y = torch.randn(16, 3, 2, 2, generator=g), torch.randint(0, 2, (16,), generator=g)
            return DatasetSplits(torch.utils.data.TensorDataset(x, y))

    states = []
    for bs, acc in ((16, 1), (8, 2)):
        cfg = _cfg(tmp_path, f"lin{bs}", epochs=1, batch_size=bs, accumulate=acc, ema=False, warmup_epochs=0,
                   warmup_momentum=None, warmup_bias_lr=None, schedule="step", model="resnet18_cifar")
        task = Linear(cfg)
        trainer = Trainer(cfg, task=task)
        trainer.setup()
        # remove BN effects: a model without batch statistics makes the two runs comparable
        torch.manual_seed(0)
        trainer.model = trainer.train_model = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
        from nostride.engine.optim import build_optimizer

        trainer.optimizer = build_optimizer(trainer.model, lr=0.1, momentum=0.9, weight_decay=0.0)
        trainer.scheduler.optimizer = trainer.optimizer
        trainer.epoch = 0
        # unshuffled order for both
        batches = [(task.build_datasets().train.tensors[0][i:i + bs], task.build_datasets().train.tensors[1][i:i + bs])
                   for i in range(0, 16, bs)]
        trainer._since_step = 0
        for i, b in enumerate(batches):
            trainer.iter, trainer.batch_index = i, i
            trainer.scheduler.step(i)
            trainer.run_step(b, last=i == len(batches) - 1)
        states.append([p.detach().clone() for p in trainer.model.parameters()])
    for a, b in zip(*states):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_dataloader_workers_are_seeded_reproducibly(tmp_path):
    """With worker processes (random noise drawn inside them), two runs with one seed are identical."""
    states = []
    for i in range(2):
        cfg = _cfg(tmp_path, f"w{i}", epochs=1, workers=2, ema=False)
        Trainer(cfg, task=SynthTask(cfg)).train()
        states.append(load_checkpoint(tmp_path / f"w{i}" / "weights" / "last.pt")["model"])
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


@pytest.mark.parametrize("opts", [
    dict(optimizer="adamw", lr=1e-3, schedule="linear", lrf=0.1, clip_grad=1.0, channels_last=True, amp=True),
    dict(optimizer="sgd", nesterov=True, schedule="cosine", schedule_unit="epoch", nominal_batch_size=64,
         warmup_iters=3, label_smoothing=0.1, decay_norm_bias=True),
], ids=["adamw-linear-clip-channels_last", "sgd-nesterov-cosine-nbs"])
def test_option_combinations_train(tmp_path, capsys, opts):
    cfg = _cfg(tmp_path, "combo", epochs=1, deterministic=False, **opts)
    trainer = Trainer(cfg, task=SynthTask(cfg))
    result = trainer.train()
    assert result["test"]["count"] == 13 and all(math.isfinite(v) for v in trainer.train_items.values())
    if opts.get("amp"):
        assert trainer.amp and trainer.amp_dtype == (torch.bfloat16 if trainer.device.type == "cpu" else torch.float16)
    if opts.get("nominal_batch_size"):
        # YOLOv5 rule: accumulate = round(64 / 16) = 4, weight decay scaled by 16 * 4 / 64 = 1
        assert trainer.accumulate == 4 and trainer.accumulate_at(0) == 1
        assert [g["weight_decay"] for g in trainer.optimizer.param_groups] == [cfg.weight_decay] * 3


class DtypeRecorder(Hook):
    """Records the dtype of the model's logits in every training step (through a forward hook)."""

    def __init__(self) -> None:
        self.dtypes: set[torch.dtype] = set()

    def before_train(self, trainer) -> None:
        trainer.model.fc.register_forward_hook(lambda m, i, out: self.dtypes.add(out.dtype) if m.training else None)


@pytest.mark.parametrize("amp", [None, True])
def test_cpu_amp_trains_in_bfloat16_and_keeps_float32_weights(tmp_path, amp):
    """On CPU, --amp means bfloat16 autocast without loss scaling; the default stays float32. Either way
    the weights, the optimizer state and the checkpoint stay float32, and the run resumes."""
    cfg = _cfg(tmp_path, f"amp{amp}", epochs=1, device="cpu", amp=amp)
    recorder = DtypeRecorder()
    trainer = Trainer(cfg, task=SynthTask(cfg), hooks=[recorder])
    result = trainer.train()
    assert recorder.dtypes == ({torch.bfloat16} if amp else {torch.float32})
    assert not trainer.scaler.is_enabled()
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    ckpt = load_checkpoint(tmp_path / f"amp{amp}" / "weights" / "last.pt")
    assert all(v.dtype in (torch.float32, torch.int64) for v in ckpt["model"].values())
    assert math.isfinite(result["test"]["loss"]) and result["test"]["count"] == 13


class NoValTask(SynthTask):
    def build_datasets(self) -> DatasetSplits:
        splits = super().build_datasets()
        return DatasetSplits(splits.train, None, splits.test)


def test_without_validation_split_best_is_last(tmp_path):
    cfg = _cfg(tmp_path, "noval", epochs=2, ema=False)
    result = Trainer(cfg, task=NoValTask(cfg)).train()
    assert result["best_epoch"] == 2 and result["best_fitness"] is None and result["test"]["count"] == 13
    rows = list(csv.DictReader(open(tmp_path / "noval" / "results.csv")))
    assert len(rows) == 2 and not any(k.startswith("val/") for k in rows[0])


def test_a_finished_run_resumed_says_so_and_more_epochs_extend_it(tmp_path, capsys, monkeypatch):
    """Resuming a finished run returns its final metrics without building data or evaluating again;
    with more --epochs it trains on (the cosine schedule re-planned, with a note saying so and what a
    new run from its weights would do instead)."""
    from nostride.engine import api

    cfg = _cfg(tmp_path, "cos", epochs=1, ema=False, schedule="cosine", milestones=[])
    first = Trainer(cfg, task=SynthTask(cfg)).train()
    last = tmp_path / "cos" / "weights" / "last.pt"
    capsys.readouterr()
    monkeypatch.setattr(Trainer, "setup", lambda self: pytest.fail("a finished run was set up again"))
    again = api.train(resume=str(last), task=SynthTask(cfg))
    assert again["best_epoch"] == first["best_epoch"] and again["test"]["count"] == first["test"]["count"]
    out = capsys.readouterr().out
    assert f"{last} already finished its 1 epoch and was evaluated" in out and "--epochs N" in out
    monkeypatch.undo()
    cfg2 = resolve_config(resume=str(last), epochs=2)
    out = capsys.readouterr().out
    assert cfg2.epochs == 2 and "extending the finished run from 1 to 2 epochs" in out
    assert "cosine learning-rate schedule ended at lr 0" in out and "nostride train --weights" in out
    Trainer(cfg2, task=SynthTask(cfg2)).train()
    assert load_checkpoint(last)["epoch"] == 2
    assert len(list(csv.DictReader(open(tmp_path / "cos" / "results.csv")))) == 2
    # explicit step milestones do not depend on the epoch count: extending is the same schedule, silently
    cfg = _cfg(tmp_path, "step", epochs=1, ema=False)
    Trainer(cfg, task=SynthTask(cfg)).train()
    assert "step milestone 1 at or after the last epoch (1), so the lr never decays there" in capsys.readouterr().out
    assert resolve_config(resume=str(tmp_path / "step" / "weights" / "last.pt"), epochs=2).epochs == 2
    assert "re-plans" not in capsys.readouterr().out


def test_resume_with_other_epochs_mid_run_warns(tmp_path, capsys):
    cfg = _cfg(tmp_path, "mid", epochs=2, ema=False, schedule="cosine", milestones=[])
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, task=SynthTask(cfg), hooks=[InterruptAt(epoch=1, batch=1)]).train()
    capsys.readouterr()
    cfg2 = resolve_config(resume=str(tmp_path / "mid"), epochs=4)
    assert cfg2.epochs == 4
    out = capsys.readouterr().out
    assert "resume: --epochs 4 instead of 2 re-plans the cosine learning-rate schedule: lr in epoch 2 becomes" in out
