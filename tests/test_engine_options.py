"""Engine options detection training needs: task defaults (hyp files), warm-up minimum, early stop."""

from __future__ import annotations

import pytest

from nostride.engine import Trainer, build_config

from test_engine_loop import SynthTask

pytestmark = pytest.mark.usefixtures("one_thread_module")


def test_detection_defaults_come_from_the_hyp_file_and_yield_to_the_user(tmp_path):
    cfg = build_config(model="yolov5n", data="d.yaml")
    # YOLOv5 v6.0: scratch hyp, SGD Nesterov 0.937, cosine per epoch to lrf 0.1, nbs 64, EMA, warm-up >= 1000
    assert (cfg.hyp, cfg.lr, cfg.lrf, cfg.momentum, cfg.nesterov) == ("scratch", 0.01, 0.1, 0.937, True)
    assert (cfg.schedule, cfg.schedule_unit, cfg.nominal_batch_size, cfg.warmup_min_iters) == ("cosine", "epoch", 64, 1000)
    assert cfg.ema and cfg.ema_tau == 2000 and cfg.warmup_bias_lr == 0.1 and cfg.warmup_momentum == 0.8
    assert cfg.task_options["mosaic"] == 1.0 and cfg.task_options["scale"] == 0.5
    cfg = build_config(model="yolov5n", data="d.yaml", hyp="scratch-high", lr=0.02, mosaic=0.25)
    assert (cfg.lr, cfg.lrf) == (0.02, 0.2)  # --lr beats the file; the file's lrf beats the default
    assert cfg.task_options["mosaic"] == 0.25 and cfg.task_options["mixup"] == 0.1
    user = tmp_path / "my_hyp.yaml"
    user.write_text("lr0: 0.005\nmixup: 0.3\n")
    cfg = build_config(model="yolov5n_spd", data="d.yaml", hyp=str(user))
    assert cfg.lr == 0.005 and cfg.task_options["mixup"] == 0.3 and cfg.task_options["hsv_h"] == 0.015
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model: yolov5s\ndata: d.yaml\nhyp: scratch-low\nfliplr: 0.0\nepochs: 7\n")
    cfg = build_config(recipe, mosaic=0.0)
    assert (cfg.epochs, cfg.lrf, cfg.task_options["fliplr"], cfg.task_options["mosaic"]) == (7, 0.01, 0.0, 0.0)
    # classification keeps the engine's own defaults
    assert build_config(model="resnet18_cifar", data="x").task_options == {}


def test_bad_hyp_values_are_named():
    with pytest.raises(FileNotFoundError, match="hyp file not found: nope.yaml"):
        build_config(model="yolov5n", data="d", hyp="nope.yaml")
    with pytest.raises(ValueError, match="did you mean mosaic"):
        build_config(model="yolov5n", data="d", mosiac=0.5)


def test_warmup_minimum_and_patience(tmp_path):
    cfg = build_config(model="resnet18_cifar", width=8, epochs=6, batch_size=16, lr=0.05, workers=0, device="cpu",
                       project=str(tmp_path), name="p", quiet=True, seed=0, warmup_epochs=0.5,
                       warmup_min_iters=7, patience=2)
    t = Trainer(cfg, task=_Flat(cfg))
    t.setup()
    assert t.scheduler.warmup_iters == 7  # max(round(0.5 * 5 batches), 7)
    t = Trainer(cfg, task=_Flat(cfg))
    out = t.train()
    assert out["best_epoch"] == 1 and t.epoch + 1 == 3  # stopped after epochs 2 and 3 brought nothing better


class _Flat(SynthTask):
    """Fitness falls every epoch: the best stays at epoch 1."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.n = 0

    def fitness(self, metrics):
        self.n += 1
        return -float(self.n)


def test_cli_flags_cover_every_detection_hyperparameter():
    from nostride.cli.train import _scratch_hyp
    from nostride.tasks.detect.hyp import HYP_KEYS, load_hyp

    assert set(_scratch_hyp()) == set(HYP_KEYS)
    assert all(_scratch_hyp()[k] == load_hyp("scratch")[k] for k in HYP_KEYS)
