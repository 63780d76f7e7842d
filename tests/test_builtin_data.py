"""Built-in generated datasets: deterministic per seed, standard layouts, ``builtin:`` sources."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from nostride.data.builtin import builtin_options, make_builtin, resolve_builtin
from nostride.data.builtin.lowres import LOWRES_CLASSES, lowres_image, sample_generator
from nostride.data.classification import build_classification_data
from nostride.data.io import read_image_rgb


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.png")):
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NOSTRIDE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_lowres_is_deterministic_per_seed_and_laid_out_as_an_image_folder(tmp_path):
    a = make_builtin("lowres", tmp_path / "a", quiet=True, train=2, val=1, test=1, seed=3)
    b = make_builtin("lowres", tmp_path / "b", quiet=True, train=2, val=1, test=1, seed=3)
    c = make_builtin("lowres", tmp_path / "c", quiet=True, train=2, val=1, test=1, seed=4)
    assert _digest(a) == _digest(b) != _digest(c)
    for split, n in (("train", 2), ("val", 1), ("test", 1)):
        assert sorted(p.name for p in (a / split).iterdir()) == list(LOWRES_CLASSES)
        assert all(len(list((a / split / k).glob("*.png"))) == n for k in LOWRES_CLASSES)
    img = read_image_rgb(a / "train" / "checker-1" / "00001.png")
    assert img.shape == (3, 32, 32) and img.dtype == torch.uint8
    card = json.loads((a / "builtin.json").read_text())
    assert card["name"] == "lowres" and card["options"]["seed"] == 3 and card["task"] == "classify"
    # an image does not depend on how many others were made
    d = make_builtin("lowres", tmp_path / "d", quiet=True, train=3, val=1, test=1, seed=3)
    same = "test/dots-3/00000.png"
    assert (d / same).read_bytes() == (a / same).read_bytes()


def test_lowres_texture_is_drawn_pixel_exact():
    from nostride.data.builtin.lowres import pattern

    for label in range(len(LOWRES_CLASSES)):
        img, (x, y, w, h) = lowres_image(label, sample_generator(0, "t", label), difficulty=0.0, return_box=True)
        patch = img[:, y:y + h, x:x + w].int()
        colours = torch.unique(patch.flatten(1), dim=1)
        assert colours.shape[1] == 2, "the patch is the texture's two colours, nothing else"
        ink = (patch == colours[:, :1, None]).all(0)
        assert any(torch.equal(ink, pattern(label, h, w, 1, dx, dy)) or torch.equal(~ink, pattern(label, h, w, 1, dx, dy))
                   for dx in range(12) for dy in range(12)), LOWRES_CLASSES[label]


def test_lowres_classes_differ_in_fine_detail():
    import torch.nn.functional as F

    from nostride.data.builtin.lowres import pattern

    halved = {name: F.avg_pool2d(pattern(i, 24, 24).float()[None, None], 2)[0, 0]
              for i, name in enumerate(LOWRES_CLASSES)}
    # at half resolution the three 1-pixel textures are the same flat grey: only full resolution separates them
    for name in ("hstripes-2", "vstripes-2", "checker-1"):
        assert torch.equal(halved[name], torch.full((12, 12), 0.5)), name
    # the coarser ones survive halving, and all ten differ at full resolution
    assert all(halved[n].std() > 0.1 for n in ("hstripes-4", "vstripes-4", "checker-2"))
    full = {tuple(pattern(i, 12, 12).flatten().tolist()) for i in range(len(LOWRES_CLASSES))}
    assert len(full) == len(LOWRES_CLASSES)


def test_builtin_source_is_generated_once_into_the_cache(cache, capsys):
    src = "builtin:lowres@train=3,val=2,test=1"
    data = build_classification_data(src)
    assert data.classes == list(LOWRES_CLASSES) and data.img_size == 32
    assert len(data.train) == 30 and len(data.val) == 20 and len(data.test) == 10  # val/ is used as is
    first = resolve_builtin(src)
    assert first.parent == cache / "builtin" and "generating" in capsys.readouterr().out
    mtime = (first / "builtin.json").stat().st_mtime_ns
    assert resolve_builtin(src) == first and (first / "builtin.json").stat().st_mtime_ns == mtime
    assert "generating" not in capsys.readouterr().out
    assert resolve_builtin("builtin:lowres@train=3,val=2,test=1,seed=1") != first


def test_bad_builtin_names_and_options_get_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown built-in dataset 'nope'; available: lowres"):
        builtin_options("nope")
    with pytest.raises(ValueError, match="has no option 'colour'.*options: img_size"):
        builtin_options("lowres", colour=1)
    with pytest.raises(ValueError, match="option train must be int"):
        builtin_options("lowres", train="many")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "f").write_text("")
    with pytest.raises(ValueError, match="not empty"):
        make_builtin("lowres", tmp_path / "x")


@pytest.mark.slow
def test_spdify_option_trains_a_converted_model(cache, tmp_path):
    import nostride
    from nostride.checkpoint import load_checkpoint, model_from_checkpoint
    from nostride.layers import SPDConv  # noqa: F401

    out = nostride.train("resnet18", "builtin:lowres@train=4,val=2,test=2", spdify=True, width=8, epochs=1,
                         batch_size=16, workers=0, project=str(tmp_path), name="r", quiet=True)
    ckpt = load_checkpoint(tmp_path / "r" / "weights" / "best.pt")
    assert ckpt["model_name"] == "resnet18" and ckpt["spdify"] and ckpt["config"]["spdify"] is True
    model = model_from_checkpoint(ckpt)
    strided = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d) and m.stride != (1, 1)]
    assert strided == [] and "test" in out


# ------------------------------------------------------------------------------- small objects
@pytest.mark.slow
def test_small_object_boxes_lie_on_the_drawn_objects():
    from nostride.data.builtin.small_objects import small_objects_image

    sizes = []
    for i in range(6):
        img, objects, instances = small_objects_image(sample_generator(5, "t", i), img_size=128, max_size=30)
        assert img.shape == (3, 128, 128) and objects
        for k, (cls, x, y, w, h) in enumerate(objects, start=1):
            ys, xs = torch.nonzero(instances == k, as_tuple=True)
            assert len(xs), f"object {k} has no pixels"
            # the drawn pixels fill the box: tight on every side (anti-aliased edges within 1 px)
            assert x <= xs.min() <= x + 1 and x + w - 2 <= xs.max() <= x + w - 1
            assert y <= ys.min() <= y + 1 and y + h - 2 <= ys.max() <= y + h - 1
            sizes.append(w * h)
    assert sum(a < 32 * 32 for a in sizes) > 0.7 * len(sizes)  # mostly COCO-small


def test_small_objects_layout_yolo_labels_and_coco_json_agree(tmp_path):
    import yaml

    root = make_builtin("small-objects", tmp_path / "so", quiet=True, img_size=96, train=3, val=2, test=2,
                        max_size=24, seed=1)
    again = make_builtin("small-objects", tmp_path / "so2", quiet=True, img_size=96, train=3, val=2, test=2,
                         max_size=24, seed=1)
    assert _digest(root) == _digest(again)
    data = yaml.safe_load((root / "data.yaml").read_text())
    assert data["train"] == "images/train" and data["test"] == "images/test" and data["nc"] == len(data["names"]) == 8
    for split, n in (("train", 3), ("val", 2), ("test", 2)):
        images = sorted((root / "images" / split).glob("*.png"))
        coco = json.loads((root / "annotations" / f"instances_{split}.json").read_text())
        assert len(images) == len(coco["images"]) == n
        by_image = {}
        for a in coco["annotations"]:
            by_image.setdefault(a["image_id"], []).append(a)
        for entry in coco["images"]:
            rows = (root / "labels" / split / entry["file_name"].replace(".png", ".txt")).read_text().split("\n")
            rows = [list(map(float, r.split())) for r in rows if r]
            anns = by_image.get(entry["id"], [])
            assert len(rows) == len(anns)
            for r, a in zip(rows, anns):
                x, y, w, h = a["bbox"]
                assert int(r[0]) == a["category_id"] - 1
                assert r[1:] == pytest.approx([(x + w / 2) / 96, (y + h / 2) / 96, w / 96, h / 96], abs=1e-6)


def test_small_objects_read_by_the_detection_dataset_core(tmp_path):
    pytest.importorskip("nostride.data.detection.dataset_yaml")
    from nostride.data.detection.dataset_yaml import load_data_yaml

    root = make_builtin("small-objects", tmp_path / "so", quiet=True, img_size=64, train=2, val=1, test=1,
                        max_size=16)
    cfg = load_data_yaml(root / "data.yaml")
    assert cfg.names[:3] == ["disc", "ring", "target"] and cfg.test == [root / "images" / "test"]
