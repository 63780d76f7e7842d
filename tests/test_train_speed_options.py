"""``compile`` and ``spd_form``: the same losses as a plain run, plain checkpoints, a missing compiler in one line."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset

from nostride.checkpoint import load_checkpoint, model_from_checkpoint
from nostride.engine import CompileUnavailableError, Trainer, build_config
from nostride.tasks.base import DatasetSplits
from nostride.tasks.classify.task import ClassificationTask

pytestmark = pytest.mark.usefixtures("one_thread_module")


class Blobs(Dataset):
    """Four classes told apart by the red channel's mean (fixed tensors: no RNG in the data)."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.y = torch.randint(0, 4, (n,), generator=g)
        self.x = torch.randn(n, 3, 16, 16, generator=g) * 0.3
        self.x[:, 0] += (self.y.float() - 1.5)[:, None, None]

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i], int(self.y[i])


class RecordingTask(ClassificationTask):
    """Blobs classification that records every training loss."""

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.losses: list[float] = []

    def build_datasets(self) -> DatasetSplits:
        self.names = ["a", "b", "c", "d"]
        return DatasetSplits(Blobs(48, 1), Blobs(16, 2), None)

    def loss(self, model, batch):
        loss, items = super().loss(model, batch)
        self.losses.append(float(loss.detach()))
        return loss, items


def _train(tmp_path, name: str, **kw) -> tuple[RecordingTask, Trainer]:
    opts = dict(model="resnet18_spd", width=8, epochs=1, batch_size=16, lr=0.05, workers=0, device="cpu",
                project=str(tmp_path), name=name, quiet=True, seed=5, ema=True, ema_tau=5, augment=False)
    cfg = build_config(**{**opts, **kw})
    task = RecordingTask(cfg)
    trainer = Trainer(cfg, task)
    trainer.train()
    return task, trainer


@pytest.mark.slow
def test_compiled_training_matches_eager_and_saves_a_plain_checkpoint(tmp_path):
    eager, _ = _train(tmp_path, "eager")
    compiled, trainer = _train(tmp_path, "compiled", compile=True)
    assert trainer.train_model is not trainer.model  # the forward really ran through torch.compile
    assert len(eager.losses) == len(compiled.losses) == 3
    torch.testing.assert_close(torch.tensor(compiled.losses), torch.tensor(eager.losses), rtol=1e-4, atol=1e-5)
    ckpt = load_checkpoint(trainer.last_path)
    assert not [k for k in ckpt["model"] if "_orig_mod" in k]
    assert not [k for k in ckpt["ema"] if "_orig_mod" in k]
    torch.testing.assert_close(ckpt["model"], trainer.model.state_dict())
    model = model_from_checkpoint(ckpt)  # an uncompiled model takes the weights as they are (strict)
    assert not isinstance(model, torch._dynamo.eval_frame.OptimizedModule)
    assert model.state_dict().keys() == trainer.model.state_dict().keys()


def test_strided_spd_form_trains_like_the_spd_form(tmp_path, capsys):
    plain, _ = _train(tmp_path, "spd")
    strided, trainer = _train(tmp_path, "strided", spd_form="strided", quiet=False)
    assert "spd_form strided: 4 space-to-depth layers computed as strided convolutions" in capsys.readouterr().out
    assert sum(m.strided for m in trainer.model.modules() if hasattr(m, "strided")) == 4
    # the first step is the same function on the same weights; later ones inherit float rounding through SGD
    torch.testing.assert_close(strided.losses[0], plain.losses[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.tensor(strided.losses), torch.tensor(plain.losses), rtol=1e-3, atol=1e-5)
    ckpt = load_checkpoint(trainer.last_path)
    assert list(ckpt["model"]) == list(load_checkpoint(tmp_path / "spd" / "weights" / "last.pt")["model"])


def test_missing_compiler_is_one_clear_line(tmp_path, monkeypatch):
    from torch._inductor import config as inductor_config

    monkeypatch.setattr(inductor_config.cpp, "cxx", (None, "no-such-c++-compiler"))
    monkeypatch.setenv("CXX", "no-such-c++-compiler")
    with pytest.raises(CompileUnavailableError, match="needs a C.. compiler"):
        _train(tmp_path, "nocc", compile=True)
    assert not (tmp_path / "nocc").exists()  # refused before the run folder was made


def test_compile_and_spd_form_are_config_options(tmp_path):
    path = tmp_path / "opts.yaml"
    path.write_text("compile: true\nspd_form: strided\n")
    cfg = build_config(path, model="resnet18_spd")
    assert cfg.compile is True and cfg.spd_form == "strided"
    with pytest.raises(ValueError, match="spd_form"):
        build_config(model="resnet18_spd", spd_form="fused")
