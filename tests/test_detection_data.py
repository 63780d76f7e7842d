"""Detection datasets: YAML, label verification, cache, image loading, rectangular validation batches."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from nostride.data.detection import (
    DetectionDataset,
    build_val_loader,
    img2label_path,
    load_data_yaml,
    parse_label_file,
    rect_batch_shapes,
    resize_long_side,
    scale_boxes,
)
from nostride.data.io import write_image

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "coco128"


def _image(path: Path, h: int, w: int, seed: int = 0) -> Path:
    g = torch.Generator().manual_seed(seed)
    write_image(torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g), path.with_suffix(".png"))
    return path.with_suffix(".png")


def _dataset(root: Path, labels: dict[str, str], sizes: dict[str, tuple[int, int]] | None = None) -> Path:
    """root/images/val/<name>.png + root/labels/val/<name>.txt; returns the data.yaml path."""
    (root / "images" / "val").mkdir(parents=True)
    (root / "labels" / "val").mkdir(parents=True)
    for i, (name, text) in enumerate(labels.items()):
        h, w = (sizes or {}).get(name, (24, 32))
        _image(root / "images" / "val" / name, h, w, seed=i)
        if text is not None:
            (root / "labels" / "val" / f"{name}.txt").write_text(text)
    y = root / "data.yaml"
    y.write_text("path: .\ntrain: images/val\nval: images/val\nnames:\n  0: cat\n  1: dog\n")
    return y


# ---- YAML -------------------------------------------------------------------------------------

def test_yaml_names_list_mapping_nc_and_paths(tmp_path, capsys):
    (tmp_path / "ds" / "imgs").mkdir(parents=True)
    (tmp_path / "ds" / "list.txt").write_text("")
    y = tmp_path / "d.yaml"
    y.write_text("path: ds\ntrain: [imgs, list.txt]\nval: imgs\nnc: 2\nnames: [a, b]\ndownload: https://x\n")
    cfg = load_data_yaml(y)
    assert cfg.names == ["a", "b"] and cfg.nc == 2 and cfg.root == (tmp_path / "ds").resolve()
    assert cfg.train == [(tmp_path / "ds" / "imgs").resolve(), (tmp_path / "ds" / "list.txt").resolve()]
    assert cfg.test is None
    assert "'download' key is ignored" in capsys.readouterr().err
    y.write_text("path: ds\nval: imgs\nnames: {0: a, 1: b, 2: c}\n")
    assert load_data_yaml(y).names == ["a", "b", "c"]
    y.write_text("path: ds\nval: imgs\nnc: 3\nnames: [a, b]\n")
    with pytest.raises(ValueError, match="nc is 3 but 'names' lists 2"):
        load_data_yaml(y)
    y.write_text("path: ds\nval: missing\nnames: [a]\n")
    with pytest.raises(FileNotFoundError, match="'val' path not found: .*missing"):
        load_data_yaml(y)
    with pytest.raises(ValueError, match="no 'test' split"):
        load_data_yaml({"path": str(tmp_path / "ds"), "val": "imgs", "names": ["a"]}).split("test")


# ---- labels -----------------------------------------------------------------------------------

def test_label_path_rule():
    assert img2label_path("/d/images/a/images/x.jpg") == Path("/d/images/a/labels/x.txt")
    assert img2label_path("/d/pics/x.png") == Path("/d/pics/x.txt")


def test_label_verification_names_each_bad_line(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text(
        "0 0.5 0.5 0.2 0.2\n"       # 1 good
        "1 0.5 0.5 0.2\n"           # 2 wrong column count
        "1 0.5 x 0.2 0.2\n"         # 3 non-numeric
        "1 0.5 1.5 0.2 0.2\n"       # 4 outside [0, 1]
        "1 0.5 0.5 0 0.2\n"         # 5 zero size
        "0 0.5 0.5 0.2 0.2\n"       # 6 duplicate of 1
        "1 0.1 0.1 0.3 0.1 0.3 0.4\n"  # 7 polygon (triangle) -> its box
        "1.5 0.5 0.5 0.2 0.2\n"     # 8 non-integer class
        "\n"
        "1 1.004 0.5 0.2 0.2\n"     # 10 within tolerance: clipped
    )
    r = parse_label_file(f)
    assert [p.split(":")[0] for p in r.problems] == ["line 2", "line 3", "line 4", "line 5", "line 8"]
    assert "columns" in r.problems[0] and "non-numeric" in r.problems[1] and "outside [0, 1]" in r.problems[2]
    assert "zero-size" in r.problems[3] and "class id" in r.problems[4]
    assert r.duplicates == 1 and r.lines == [1, 7, 10]
    np.testing.assert_allclose(r.labels, [[0, 0.5, 0.5, 0.2, 0.2], [1, 0.2, 0.25, 0.2, 0.3], [1, 1, 0.5, 0.2, 0.2]],
                               atol=1e-6)
    assert r.labels.dtype == np.float32
    missing = parse_label_file(tmp_path / "none.txt")
    assert missing.labels.shape == (0, 5) and not missing.problems


# ---- dataset ----------------------------------------------------------------------------------

def test_dataset_index_skip_warn_and_cache(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NOSTRIDE_CACHE", str(tmp_path / "usercache"))
    y = _dataset(tmp_path / "ds", {"a": "0 0.5 0.5 0.5 0.5\n1 0.25 0.25 0.1 0.1\n", "b": "", "c": None,
                                   "d": "0 0.5 0.5 0.5 0.5\n0 0.5 0.5 0.5 0.5\n1 2 2 2 2\n"},
                 sizes={"b": (40, 20)})
    (tmp_path / "ds" / "images" / "val" / "broken.jpg").write_bytes(b"not a jpeg")
    _image(tmp_path / "ds" / "images" / "val" / "e", 24, 32)
    (tmp_path / "ds" / "labels" / "val" / "e.txt").write_bytes(b"\xff\xfe\x00 binary")  # unreadable labels
    ds = DetectionDataset.from_yaml(y, "val")
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "d.txt: line 3" in err and "1 duplicate row removed" in err
    assert "e.txt: cannot read label file" in err
    assert "6 images found, 4 kept (2 backgrounds), 3 labels, 2 skipped, 1 duplicate rows removed, 1 bad rows" in err
    assert [p.name for p in ds.im_files] == ["a.png", "b.png", "c.png", "d.png"]
    assert ds.shapes.tolist() == [[24, 32], [40, 20], [24, 32], [24, 32]]
    assert ds.stats.cache == tmp_path / "ds" / "labels" / "val.nostride-cache.npz" and not ds.stats.from_cache
    img, labels, path, shape0 = ds[0]
    assert img.dtype == torch.uint8 and img.shape == (3, 24, 32) and shape0 == (24, 32) and labels.shape == (2, 5)
    again = DetectionDataset.from_yaml(y, "val")
    assert again.stats.from_cache and again.stats.skipped == 2 and again.warnings == ds.warnings
    assert all(np.array_equal(a, b) for a, b in zip(ds.labels, again.labels))
    # editing a label file invalidates the cache
    (tmp_path / "ds" / "labels" / "val" / "c.txt").write_text("1 0.5 0.5 0.5 0.5\n")
    edited = DetectionDataset.from_yaml(y, "val", verbose=False)
    assert not edited.stats.from_cache and edited.labels[2].tolist() == [[1, 0.5, 0.5, 0.5, 0.5]]
    # a class id the names do not cover is an error naming file and line
    with pytest.raises(ValueError, match=r"a\.txt:2: class id 1 but the dataset has nc=1"):
        DetectionDataset.from_yaml(y, "val", names=["cat"], verbose=False)


def test_read_only_dataset_caches_in_user_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("NOSTRIDE_CACHE", str(tmp_path / "usercache"))
    y = _dataset(tmp_path / "ds", {"a": "0 0.5 0.5 0.5 0.5\n"})
    labels_dir = tmp_path / "ds" / "labels"
    os.chmod(labels_dir, 0o555)
    try:
        ds = DetectionDataset.from_yaml(y, "val", verbose=False)
        assert ds.stats.cache is not None and ds.stats.cache.parent == tmp_path / "usercache" / "labels"
        assert DetectionDataset.from_yaml(y, "val", verbose=False).stats.from_cache
        assert not list(labels_dir.glob("*.npz"))
    finally:
        os.chmod(labels_dir, 0o755)


def test_coco_json_source(tmp_path):
    (tmp_path / "images" / "val2017").mkdir(parents=True)
    (tmp_path / "annotations").mkdir()
    _image(tmp_path / "images" / "val2017" / "000000000007", 20, 40)
    ann = {"images": [{"id": 7, "file_name": "000000000007.png", "height": 20, "width": 40}],
           "categories": [{"id": 3, "name": "car"}, {"id": 1, "name": "person"}],
           "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "bbox": [10, 5, 20, 10], "iscrowd": 0},
                           {"id": 2, "image_id": 7, "category_id": 1, "bbox": [0, 0, 4, 4], "iscrowd": 1}]}
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps(ann))
    ds = DetectionDataset(tmp_path / "annotations" / "instances_val2017.json", verbose=False, cache=False)
    assert ds.names == ["person", "car"] and ds.image_ids == [7]
    np.testing.assert_allclose(ds.labels[0], [[1, 0.5, 0.5, 0.5, 0.5]])


# ---- image loading and validation batches ------------------------------------------------------

def test_resize_long_side():
    img = torch.arange(4 * 6, dtype=torch.uint8).reshape(1, 4, 6).repeat(3, 1, 1) * 10
    half = resize_long_side(img, 3)  # exact factor 2: the box average (OpenCV INTER_AREA)
    ref = torch.nn.functional.avg_pool2d(img[None].float(), 2)[0].round().to(torch.uint8)
    assert torch.equal(half, ref)
    assert resize_long_side(img, 12).shape == (3, 8, 12)
    assert resize_long_side(img, 5).shape == (3, 3, 5)  # int(4 * 5 / 6) = 3, truncated as the reference
    assert resize_long_side(img, 6) is img


def test_rect_batch_shapes_reference_example():
    # a 640x480 (w x h) image at 640 gets a 672 x 512 canvas; portrait and mixed batches as the reference
    order, shapes = rect_batch_shapes(np.array([[480, 640]]), 1, 640)
    assert shapes.tolist() == [[512, 672]]
    order, shapes = rect_batch_shapes(np.array([[640, 480], [480, 640], [100, 100], [300, 200]]), 2, 320)
    assert order.tolist() == [1, 2, 0, 3] and shapes.tolist() == [[352, 352], [352, 256]]


def test_val_loader_targets_map_back_to_original_pixels(tmp_path):
    y = _dataset(tmp_path / "ds", {"a": "0 0.5 0.5 0.5 0.5\n1 0.2 0.3 0.1 0.2\n", "b": "1 0.6 0.4 0.3 0.2\n"},
                 sizes={"a": (24, 48), "b": (48, 24)})  # exact factor 2 to 96 (no truncation)
    ds = DetectionDataset.from_yaml(y, "val", verbose=False, cache=False)
    batches = list(build_val_loader(ds, img_size=96, batch_size=2, stride=32, workers=0))
    assert len(batches) == 1
    images, targets, paths, shapes = batches[0]
    assert images.shape == (2, 3, 128, 128) and images.dtype == torch.uint8  # mixed: ceil(96/32 + .5) * 32
    assert targets[:, 0].tolist() == [0, 0, 1] or targets[:, 0].tolist() == [0, 1, 1]
    for i, path in enumerate(paths):
        t = targets[targets[:, 0] == i]
        xyxy = torch.cat([t[:, 2:4] - t[:, 4:6] / 2, t[:, 2:4] + t[:, 4:6] / 2], 1) * 128
        (h0, w0), ratio_pad = shapes[i]
        back = scale_boxes((128, 128), xyxy, (h0, w0), ratio_pad)
        j = ds.im_files.index(Path(path))
        lab = torch.from_numpy(ds.labels[j])
        ref = torch.stack([(lab[:, 1] - lab[:, 3] / 2) * w0, (lab[:, 2] - lab[:, 4] / 2) * h0,
                           (lab[:, 1] + lab[:, 3] / 2) * w0, (lab[:, 2] + lab[:, 4] / 2) * h0], 1)
        torch.testing.assert_close(back, ref, atol=1e-3, rtol=0)
    shards = [list(build_val_loader(ds, 96, 1, workers=0, rank=r, world_size=2)) for r in (0, 1)]
    assert sorted(b[2][0] for s in shards for b in s) == sorted(str(p) for p in ds.im_files)


def test_two_image_lists_of_one_folder_keep_a_label_cache_each(tmp_path, monkeypatch):
    monkeypatch.setenv("NOSTRIDE_CACHE", str(tmp_path / "usercache"))
    _dataset(tmp_path / "ds", {"a": "0 0.5 0.5 0.5 0.5\n", "b": "1 0.5 0.5 0.2 0.2\n", "c": ""})
    (tmp_path / "ds" / "first.txt").write_text("images/val/a.png\nimages/val/b.png\n")
    (tmp_path / "ds" / "second.txt").write_text("images/val/b.png\nimages/val/c.png\n")
    first = DetectionDataset(tmp_path / "ds" / "first.txt", verbose=False)
    second = DetectionDataset(tmp_path / "ds" / "second.txt", verbose=False)
    folder = DetectionDataset(tmp_path / "ds" / "images" / "val", verbose=False)
    paths = {first.stats.cache, second.stats.cache, folder.stats.cache}
    assert len(paths) == 3 and all(p.parent == tmp_path / "ds" / "labels" for p in paths)
    assert folder.stats.cache.name == "val.nostride-cache.npz"
    # switching back and forth reads each list's own cache: nothing is rewritten
    mtimes = {p: p.stat().st_mtime_ns for p in paths}
    assert DetectionDataset(tmp_path / "ds" / "first.txt", verbose=False).stats.from_cache
    assert DetectionDataset(tmp_path / "ds" / "second.txt", verbose=False).stats.from_cache
    assert {p: p.stat().st_mtime_ns for p in paths} == mtimes


def test_one_cache_variable_xdg_and_home(tmp_path, monkeypatch):
    from nostride.data.builtin import cache_dir
    from nostride.data.detection import user_cache_dir

    monkeypatch.setenv("NOSTRIDE_CACHE", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert user_cache_dir() == tmp_path / "mine" and cache_dir() == tmp_path / "mine" / "builtin"
    monkeypatch.delenv("NOSTRIDE_CACHE")
    assert user_cache_dir() == tmp_path / "xdg" / "nostride" and cache_dir() == tmp_path / "xdg" / "nostride" / "builtin"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert user_cache_dir() == tmp_path / "home" / ".cache" / "nostride"


@pytest.mark.data
@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/coco128 not present")
def test_coco128_index(tmp_path, monkeypatch):
    monkeypatch.setenv("NOSTRIDE_CACHE", str(tmp_path))
    cfg = load_data_yaml(SHARED / "data.yaml")
    assert cfg.nc == 80 and cfg.names[0] == "person"
    ds = DetectionDataset.from_yaml(cfg, "train", verbose=False)
    assert len(ds) == 128 and ds.stats.backgrounds == 2 and ds.stats.skipped == 0
    assert ds.stats.cache is not None
    if not os.access(SHARED / "labels", os.W_OK) or not (SHARED / "labels").stat().st_mode & 0o222:
        assert ds.stats.cache.parent == tmp_path / "labels"  # read-only dataset: the user cache folder


def test_a_folder_given_as_the_dataset_yaml_is_named_as_a_folder(tmp_path):
    from nostride.data.detection import load_data_yaml

    with pytest.raises(ValueError, match=r"is a folder; detection data is a dataset YAML file"):
        load_data_yaml(tmp_path)
    with pytest.raises(FileNotFoundError, match="dataset YAML not found"):
        load_data_yaml(tmp_path / "missing.yaml")
