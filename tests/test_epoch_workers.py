"""Persistent training-loader workers: each epoch draws exactly what workers started for it would
(so a run resumed at epoch e repeats the uninterrupted run), settings changed between epochs reach
the workers, and the workers stop with the run."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from nostride.data.epoch_workers import close_loader
from nostride.engine.distributed import DistInfo, worker_init_fn
from nostride.engine.loaders import set_loader_epoch, train_loader

from detect_fixtures import make_square_dataset
from helpers import image_folder

pytestmark = pytest.mark.usefixtures("one_thread_module")

SEED = 3


class Draws(Dataset):
    """Items are draws of every RNG an augmentation may use (torch, NumPy, ``random``) and the
    dataset's ``setting`` as the worker holds it."""

    epoch_settings = ("setting",)

    def __init__(self, n: int = 10) -> None:
        self.n, self.setting = n, 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return torch.tensor([i, torch.rand(()).item(), np.random.rand(), random.random(), self.setting],
                            dtype=torch.float64)


def _epochs(loader, epochs, rank=0, before=None) -> list[list]:
    """The batches of each epoch in ``epochs`` (``before(epoch)`` runs before its iteration)."""
    out = []
    for e in epochs:
        set_loader_epoch(loader, e, SEED, rank)
        if before is not None:
            before(e)
        out.append([b if isinstance(b, torch.Tensor) else b[0] for b in loader])
    return out


def _restarted_loader(dataset, batch_size, workers=2, persistent=False):
    """The loader as it was before workers persisted: new workers every epoch, seeded from the
    epoch's generator (``persistent``: workers kept alive, seeded only at their start)."""
    from torch.utils.data import DistributedSampler

    sampler = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=SEED, drop_last=False)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      worker_init_fn=worker_init_fn, generator=torch.Generator(), persistent_workers=persistent,
                      collate_fn=getattr(dataset, "collate", None))


def _same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def test_persistent_workers_draw_each_epoch_as_workers_started_for_it():
    ds = Draws()
    live = train_loader(ds, 4, 2, DistInfo(), SEED)
    try:
        assert live.persistent_workers
        run = _epochs(live, range(3))
        workers = list(live._iterator._workers)
        again = _epochs(live, [3])
        assert live._iterator._workers == workers  # the same processes serve later epochs
    finally:
        close_loader(live)
    assert not any(w.is_alive() for w in workers)  # until they are closed
    resumed = train_loader(Draws(), 4, 2, DistInfo(), SEED)  # a run resumed at epoch 2: new workers
    try:
        assert _same(_epochs(resumed, [2])[0], run[2])
    finally:
        close_loader(resumed)
    # the same draws as workers started every epoch (the loader before workers persisted) ...
    assert all(_same(x, y) for x, y in zip(_epochs(_restarted_loader(Draws(), 4), range(4)), run + again))
    # ... and not what workers kept alive without reseeding draw: the test sees the difference
    naive = _restarted_loader(Draws(), 4, persistent=True)
    naive_epochs = _epochs(naive, range(3))
    close_loader(naive)
    assert _same(naive_epochs[0], run[0]) and not _same(naive_epochs[2], run[2])
    # epochs and ranks draw differently
    assert not torch.equal(run[1][0][:, 1:4], run[2][0][:, 1:4])
    other_rank = train_loader(Draws(), 4, 2, DistInfo(rank=1, world_size=2), SEED)
    assert not torch.equal(_epochs(other_rank, [0], rank=1)[0][0][:, 1:4], run[0][0][:, 1:4])
    close_loader(other_rank)


def test_settings_changed_between_epochs_reach_the_workers_and_no_worker_is_reseeded_in_process():
    ds = Draws()
    live = train_loader(ds, 4, 2, DistInfo(), SEED)
    run = _epochs(live, range(3), before=lambda e: setattr(ds, "setting", 10 * e))
    close_loader(live)
    assert [sorted({float(v) for b in epoch for v in b[:, 4]}) for epoch in run] == [[0.0], [10.0], [20.0]]
    # without workers the run's own random state goes on from epoch to epoch (checkpoints save it)
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    inline = _epochs(train_loader(Draws(), 4, 0, DistInfo(), SEED), range(2))
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    expected = [torch.rand(()).item() for _ in range(20)]
    assert [float(v) for epoch in inline for b in epoch for v in b[:, 1]] == expected


def test_classification_images_augment_alike_in_a_resumed_run(tmp_path):
    from nostride.data.classification.datasets import ImageFileDataset
    from nostride.data.classification.transforms import train_transform

    root = image_folder(tmp_path / "data", train_counts=(5, 5), test_counts=(1, 1), size=8)
    paths = sorted(str(p) for p in (root / "train").rglob("*.png"))
    labels = [int("class1" in p) for p in paths]

    def make():
        return ImageFileDataset(paths, labels, train_transform(8, (0.5,) * 3, (0.25,) * 3))

    live = train_loader(make(), 4, 2, DistInfo(), SEED)
    run = _epochs(live, range(2))
    close_loader(live)
    resumed = train_loader(make(), 4, 2, DistInfo(), SEED)
    assert _same(_epochs(resumed, [1])[0], run[1])
    close_loader(resumed)
    assert all(_same(x, y) for x, y in zip(_epochs(_restarted_loader(make(), 4), range(2)), run))
    assert not _same(run[0], run[1])  # the augmentation draws something


@pytest.fixture(scope="module")
def squares(tmp_path_factory):
    return make_square_dataset(tmp_path_factory.mktemp("squares"), n=6)


def _detection_set(squares, **kw):
    from nostride.data.detection import DetectionDataset, load_data_yaml
    from nostride.data.detection.train_dataset import DetectionTrainDataset

    index = DetectionDataset(load_data_yaml(squares).split("train"), verbose=False)
    return DetectionTrainDataset(index, 64, hyp={"mixup": 0.5}, batch_size=3, verbose=False, **kw)


@pytest.mark.parametrize("rect", [False, True], ids=["mosaic", "rect"])
def test_detection_batches_repeat_in_a_resumed_run_and_close_mosaic_reaches_the_workers(squares, rect):
    from nostride.data.detection.val_loader import collate_detection
    from nostride.data.epoch_workers import epoch_loader
    from nostride.data.detection.train_dataset import RectTrainBatchSampler

    def make():
        ds = _detection_set(squares, rect=rect)
        if rect:
            return ds, epoch_loader(ds, RectTrainBatchSampler(len(ds), 3, seed=SEED), 2, SEED,
                                    collate_fn=collate_detection)
        return ds, train_loader(ds, 3, 2, DistInfo(), SEED, collate_fn=collate_detection)

    def close_mosaic(ds):
        return lambda e: setattr(ds, "mosaic_enabled", ds.mosaic_enabled and e < 2)  # as close_mosaic=1 of 3

    def epochs(loader, ds, which):
        out = []
        for e in which:
            set_loader_epoch(loader, e, SEED, 0)
            close_mosaic(ds)(e)
            out.append(list(loader))
        return out

    ds, live = make()
    run = epochs(live, ds, range(3))
    close_loader(live)
    ds2, resumed = make()
    again = epochs(resumed, ds2, [1, 2])
    close_loader(resumed)
    for a, b in zip(run[1:], again):
        assert len(a) == len(b) == 2
        for (im_a, t_a, p_a, s_a), (im_b, t_b, p_b, s_b) in zip(a, b):
            assert torch.equal(im_a, im_b) and torch.equal(t_a, t_b) and p_a == p_b and s_a == s_b
    mosaics = [[s is None for batch in epoch for s in batch[3]] for epoch in run]
    if rect:
        assert not any(map(any, mosaics))
    else:  # shapes None: a mosaic; the last epoch has none, though workers were started with mosaics on
        assert all(mosaics[0]) and all(mosaics[1]) and not any(mosaics[2])


@pytest.mark.slow
def test_a_run_stops_its_loader_workers(tmp_path):
    from nostride.engine import Hook, Trainer, build_config
    from nostride.tasks.classify.task import ClassificationTask

    seen, seen_val = [], []

    class Watch(Hook):
        def after_epoch(self, trainer):
            seen.append(list(trainer.train_loader._iterator._workers))
            seen_val.append(list(trainer.val_loader._iterator._workers))  # validated before this hook

    cfg = build_config(model="resnet18_cifar", data="builtin:lowres@train=8,val=4,test=4", width=4, epochs=2,
                       batch_size=4, workers=2, device="cpu", quiet=True, project=str(tmp_path), name="run")
    Trainer(cfg, task=ClassificationTask(cfg), hooks=[Watch()]).train()
    for workers in (seen, seen_val):  # training and validation workers kept across epochs ...
        assert len(workers) == 2 and len(workers[0]) == 2 and [w.pid for w in workers[0]] == [w.pid for w in workers[1]]
    assert not {w.pid for w in seen[0]} & {w.pid for w in seen_val[0]}
    for w in seen[1] + seen_val[1]:
        w.join(timeout=10)
    assert not any(w.is_alive() for w in seen[1] + seen_val[1])  # ... and stopped at the end


def test_detection_validation_loader_keeps_its_workers_and_its_batches(squares):
    from nostride.data.detection import build_val_loader

    def batches(loader):
        out = [(b[0].clone(), b[1].clone()) for b in loader]
        return out, [w.pid for w in loader._iterator._workers] if loader._iterator is not None else None

    from nostride.data.detection import DetectionDataset, load_data_yaml

    index = DetectionDataset(load_data_yaml(squares).split("val"), verbose=False)
    persistent = build_val_loader(index, img_size=64, batch_size=2, workers=2, persistent_workers=True)
    first, pids1 = batches(persistent)
    second, pids2 = batches(persistent)
    fresh, _ = batches(build_val_loader(index, img_size=64, batch_size=2, workers=0))
    assert pids1 and pids1 == pids2
    for a, b, c in zip(first, second, fresh, strict=True):
        assert torch.equal(a[0], b[0]) and torch.equal(a[0], c[0]) and torch.equal(a[1], c[1])
    close_loader(persistent)
    assert persistent._iterator is None
