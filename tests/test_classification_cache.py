"""``cache: ram`` for classification: images decoded once, served from memory, items unchanged."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torchvision.io import encode_jpeg, write_png

from nostride.cli import main
from nostride.data.classification import build_classification_data
from nostride.engine.config import build_config

STATS = dict(mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))


@pytest.fixture
def mixed_folder(tmp_path: Path) -> Path:
    """An image folder as users have them: JPEG and PNG, landscape, portrait and square images of
    several sizes (all resized and centre-cropped to S), one broken file in train and one in test."""
    g = torch.Generator().manual_seed(3)
    root = tmp_path / "shapes"
    sizes = [(40, 52), (64, 48), (24, 24), (33, 70), (50, 50), (29, 41)]
    for split, n in (("train", 6), ("test", 3)):
        for c in range(3):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(n):
                h, w = sizes[(i + c) % len(sizes)]
                img = (torch.rand(3, h, w, generator=g) * 120 + 60 * c).to(torch.uint8)
                if i % 2:
                    (d / f"{i}.jpg").write_bytes(encode_jpeg(img, quality=90).numpy().tobytes())
                else:
                    write_png(img, str(d / f"{i}.png"))
    (root / "train" / "class1" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    (root / "test" / "class2" / "broken.png").write_bytes(b"\x89PNG not a png")
    return root


def _items(ds, seed: int) -> list[tuple[torch.Tensor, int]]:
    torch.manual_seed(seed)  # the augmentation draws from torch's global RNG
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return [ds[i] for i in range(len(ds))]


def test_cached_items_are_exactly_the_decoded_ones(mixed_folder, capsys):
    plain = build_classification_data(mixed_folder, img_size=16, val_fraction=0.25, **STATS)
    with pytest.warns(RuntimeWarning) as caught:
        cached = build_classification_data(mixed_folder, img_size=16, val_fraction=0.25, cache="ram", workers=2,
                                           verbose=True, **STATS)
    # the broken files are found (and named once each) while the cache fills, not later
    assert sorted(Path(str(w.message).split(": ")[0].split()[-1]).name for w in caught) == ["broken.jpg", "broken.png"]
    assert cached.skipped == 2
    err = capsys.readouterr().err
    assert "cache train: 18 images at 16x16 px in memory" in err and "1 unreadable skipped" in err
    assert "cache test: 9 images at 16x16 px" in err
    for split in ("train", "val", "test"):
        a, b = getattr(plain, split), getattr(cached, split)
        assert len(a) == len(b) and a.targets == b.targets
        for seed in (0, 1):  # two epochs' augmentation
            got, want = _items(b, seed), _items(a, seed)
            assert [y for _, y in got] == [y for _, y in want]
            for (x, _), (x0, _) in zip(got, want):
                assert torch.equal(x, x0)
    assert plain.skipped == 2  # found by reading, as the cache found them
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        _items(cached.train, 2)  # nothing decoded any more, nothing warned again


def test_cached_split_feeds_dataloader_workers(mixed_folder):
    data = build_classification_data(mixed_folder, img_size=8, val_fraction=0.0, cache="ram", **STATS)
    assert not data.train.images.images.is_shared()  # not in /dev/shm (often 64 MB in containers)
    plain = build_classification_data(mixed_folder, img_size=8, val_fraction=0.0, augment=False, **STATS)
    data.train.transform.augment = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        want = torch.stack([x for x, _ in (plain.train[i] for i in range(len(plain.train)))])
        for context in ("fork", "spawn"):  # Linux's default, and macOS' / Windows'
            loader = torch.utils.data.DataLoader(data.train, batch_size=5, num_workers=2, shuffle=False,
                                                 multiprocessing_context=context)
            assert torch.equal(torch.cat([x for x, _ in loader]), want), context


def test_disk_cache_is_refused_for_classification_in_one_line(mixed_folder, capsys, tmp_path):
    with pytest.raises(ValueError, match="classification keeps decoded images in memory only"):
        build_classification_data(mixed_folder, cache="disk")
    code = main(["train", "--model", "resnet18", "--width", "8", "--data", str(mixed_folder), "--img-size", "16",
                 "--epochs", "1", "--cache", "disk", "--device", "cpu", "--workers", "0",
                 "--project", str(tmp_path / "runs"), "--name", "disk"])
    err = capsys.readouterr().err
    assert code == 2 and "'disk' caches are for detection" in err and "Traceback" not in err


def test_cli_trains_from_the_cache_and_a_resumed_run_may_take_it_up(mixed_folder, tmp_path, capsys):
    from nostride.checkpoint import load_checkpoint

    runs = tmp_path / "runs"
    common = ["--model", "resnet18", "--width", "8", "--data", str(mixed_folder), "--img-size", "16",
              "--batch-size", "8", "--device", "cpu", "--workers", "0", "--project", str(runs)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert main(["train", *common, "--epochs", "1", "--name", "a"]) == 0
        assert "in memory" not in capsys.readouterr().err
        last = runs / "a" / "weights" / "last.pt"
        # a cache changes nothing the finished epochs mean: a resumed run may take it up
        assert main(["train", "--resume", str(last), "--epochs", "2", "--cache", "ram", "--workers", "0"]) == 0
    out = capsys.readouterr()
    assert "cache train: 18 images at 16x16 px in memory" in out.err and "keeping the run's own" not in out.out
    ckpt = load_checkpoint(last)
    assert ckpt["epoch"] == 2 and ckpt["config"]["cache"] == "ram"


def test_cache_from_files_of_earlier_versions_is_the_engine_option():
    """Earlier versions kept ``cache`` among detection's task options (in args.yaml, checkpoints,
    recipes); those files still load, and the option is the same for both tasks now."""
    cfg = build_config(model="yolov5n", task_options={"cache": "ram", "mosaic": 0.5})
    assert cfg.cache == "ram" and cfg.task_options["mosaic"] == 0.5 and "cache" not in cfg.task_options
    assert build_config(model="resnet18", cache="ram").cache == "ram"  # a classifier may cache too
    with pytest.raises(ValueError, match="cache must be one of"):
        build_config(model="resnet18", cache="gpu")
    assert build_config(model="resnet18", cache=False).cache == ""  # --set cache=false: none


def test_classification_studies_cache_by_default():
    """A classification study decodes each image once per run unless told otherwise; no effect on
    which study it is."""
    from nostride.comparison.tasks import study_task
    from nostride.engine.config import merge_options

    common = dict(study_task("classify").defaults)
    assert common["cache"] == "ram"
    merge_options(common, {"cache": False})
    assert common["cache"] == ""


def test_a_cache_does_not_change_the_study():
    """``--set cache=ram`` on a study made without it (or by a version that kept the cache among
    detection's task options) continues the same study: a cache never changes what a run computes."""
    from nostride.comparison.folder import same_study as _same_study

    now = {"task": "detect", "common": {"epochs": 20, "task_options": {"mosaic": 0.0}}}
    earlier = {"task": "detect", "common": {"epochs": 20, "task_options": {"mosaic": 0.0, "cache": "ram"}}}
    assert _same_study(earlier, now) and _same_study(now, now)
    assert _same_study({"task": "detect", "common": {"epochs": 20, "task_options": {"cache": "ram"}}},
                       {"task": "detect", "common": {"epochs": 20}})
    assert not _same_study(earlier, {"task": "detect", "common": {"epochs": 30, "task_options": {"mosaic": 0.0}}})
    assert not _same_study(None, now)


def test_a_cache_larger_than_half_the_free_memory_is_not_filled(mixed_folder, monkeypatch):
    """A cache that would not fit warns (sizes and the way out) and the run decodes every time,
    for classification and detection alike, instead of running the machine out of memory."""
    import numpy as np

    from nostride.data.detection.image_cache import ImageCache
    from nostride.utils import memory

    assert memory.available_memory() > 0
    monkeypatch.setattr(memory, "available_memory", lambda: 2 * 18 * 3 * 16 * 16 - 2)  # just short for train
    with pytest.warns(RuntimeWarning, match=r"cache ram needs 0\.0 MB, 0\.0 MB of memory.*decoding every time instead") as caught:
        data = build_classification_data(mixed_folder, img_size=16, cache="ram", **STATS)
    assert any("(train)" in str(w.message) for w in caught)
    assert data.train.images is None and data.test.images is not None  # the 9 test images still fit
    assert torch.equal(data.test[0][0], build_classification_data(mixed_folder, img_size=16, **STATS).test[0][0])
    shapes = np.array([[480, 640]] * 10)
    loads = []
    with pytest.warns(RuntimeWarning, match=r"10 images at 320 px: cache ram needs 2\.2 MB"):
        cache = ImageCache([Path(f"{i}.jpg") for i in range(10)], shapes, 320,
                           lambda i: loads.append(i) or (torch.zeros(3, 240, 320, dtype=torch.uint8), (480, 640), (240, 320)),
                           mode="ram", verbose=False)
    assert cache.resized_bytes() == 10 * 240 * 320 * 3 and cache.mode == "" and loads == []


def test_an_odd_sized_file_in_a_tiny_imagenet_copy_is_fitted_not_an_error(tmp_path):
    """Tiny ImageNet's images are 64 x 64; a copy with one other size (a user's addition) trains, the
    odd image resized and centre-cropped as an image folder's would be, with or without the cache."""
    root = tmp_path / "tiny-imagenet-200"
    wnids = ["n01443537", "n01629819"]
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (root / "words.txt").write_text("n01443537\tgoldfish\nn01629819\tsalamander\n")
    g = torch.Generator().manual_seed(0)
    for wnid in wnids:
        d = root / "train" / wnid / "images"
        d.mkdir(parents=True)
        for i in range(4):
            h, w = (80, 60) if (wnid, i) == (wnids[1], 2) else (64, 64)
            img = (torch.rand(3, h, w, generator=g) * 255).to(torch.uint8)
            (d / f"{wnid}_{i}.JPEG").write_bytes(encode_jpeg(img, quality=95).numpy().tobytes())
    lines = []
    for i in range(2):
        img = (torch.rand(3, 64, 64, generator=g) * 255).to(torch.uint8)
        (root / "val" / "images" / f"val_{i}.JPEG").write_bytes(encode_jpeg(img, quality=95).numpy().tobytes())
        lines.append(f"val_{i}.JPEG\t{wnids[i]}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    plain = build_classification_data(root, val_fraction=0.0)
    cached = build_classification_data(root, val_fraction=0.0, cache="ram")
    for a, b in ((plain.train, cached.train), (plain.test, cached.test)):
        got, want = _items(b, 0), _items(a, 0)
        assert all(x.shape == (3, 64, 64) for x, _ in got)
        assert all(torch.equal(x, x0) and y == y0 for (x, y), (x0, y0) in zip(got, want))
