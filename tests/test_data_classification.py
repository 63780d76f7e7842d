"""Classification datasets: fixtures in the real on-disk formats (CIFAR-10 python, Tiny ImageNet, image folder)."""

from __future__ import annotations

import os
import pickle
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.io import encode_jpeg, write_png

from nostride.data import read_image_rgb
from nostride.data.classification import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_classification_data,
    detect_format,
    eval_transform,
    extract_subset,
    stratified_split,
    train_transform,
)

pytestmark = pytest.mark.usefixtures("one_thread")

CIFAR_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]


# ---------------------------------------------------------------- fixtures in the real formats

def _cifar_batch(path: Path, labels: list[int], first_pixel: int, name: bytes) -> np.ndarray:
    data = np.random.default_rng(len(labels) + first_pixel).integers(0, 256, (len(labels), 3072), dtype=np.uint8)
    data[0, 0] = first_pixel  # red channel, row 0, column 0 of the first image
    data[0, 1024 + 32 * 2 + 5] = 77  # green channel, row 2, column 5
    batch = {b"batch_label": name, b"labels": labels, b"data": data,
             b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))]}
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)  # the official files are protocol-2 pickles
    return data


@pytest.fixture
def cifar_root(tmp_path: Path) -> Path:
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for b in range(1, 6):  # 4 images of each of 10 classes per batch -> 20 per class
        _cifar_batch(root / f"data_batch_{b}", [i % 10 for i in range(40)], 10 * b, f"training batch {b} of 5".encode())
    _cifar_batch(root / "test_batch", [(i * 3) % 10 for i in range(30)], 200, b"testing batch 1 of 1")
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": CIFAR_NAMES, b"num_cases_per_batch": 40, b"num_vis": 3072}, f, protocol=2)
    return root


def _jpeg(path: Path, value: int, size: int = 64) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = torch.full((3, size, size), value, dtype=torch.uint8)
    img[1] = 255 - value
    path.write_bytes(encode_jpeg(img, quality=95).numpy().tobytes())


WNIDS = ["n02124075", "n01443537", "n04067472"]  # deliberately not sorted: label order = file order


@pytest.fixture
def tiny_root(tmp_path: Path) -> Path:
    root = tmp_path / "tiny-imagenet-200"
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    (root / "words.txt").write_text("n01443537\tgoldfish, Carassius auratus\nn02124075\tEgyptian cat\n"
                                    "n04067472\treel\nn09999999\tunused\n")
    for label, wnid in enumerate(WNIDS):
        for i in range(5):
            _jpeg(root / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", 40 * label + i)
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
    lines = []
    for i in range(6):
        _jpeg(root / "val" / "images" / f"val_{i}.JPEG", 10 * i)
        lines.append(f"val_{i}.JPEG\t{WNIDS[i % 3]}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def folder_root(tmp_path: Path) -> Path:
    root = tmp_path / "pets"
    for split, n in (("train", 6), ("test", 2)):
        for c, cls in enumerate(["dog", "cat"]):  # classes sort to cat=0, dog=1
            for i in range(n):
                img = torch.zeros(3, 32, 32, dtype=torch.uint8)
                img[0, 3, 4], img[2] = 200, 17 * c + i  # a known pixel that PNG keeps exactly
                d = root / split / cls / ("nested" if i == 0 else "")
                d.mkdir(parents=True, exist_ok=True)
                if i % 2:
                    (d / f"{i}.jpg").write_bytes(encode_jpeg(img, quality=95).numpy().tobytes())
                else:
                    write_png(img, str(d / f"{i}.png"))
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    return root


def _unnormalise(x: torch.Tensor, mean, std) -> torch.Tensor:
    return (x * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)) * 255


# ---------------------------------------------------------------- detection and path errors

def test_detect_format(cifar_root, tiny_root, folder_root):
    assert detect_format(cifar_root) == "cifar10-python"
    assert detect_format(cifar_root.parent / "cifar-10-batches-py") == "cifar10-python"
    assert detect_format(tiny_root) == "tiny-imagenet"
    assert detect_format(folder_root) == "image-folder"


def test_parent_folder_accepted_when_unambiguous(tmp_path, tiny_root):
    assert detect_format(tmp_path) == "tiny-imagenet"
    (tmp_path / "other" / "train" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match="several datasets"):
        detect_format(tmp_path)


def test_missing_path_and_unrecognised_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        build_classification_data(tmp_path / "nope")
    (tmp_path / "stuff" / "images").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"stuff.*cifar-10-batches-py.*wnids\.txt.*train/<class>"):
        detect_format(tmp_path / "stuff")
    archive = tmp_path / "data.tar.gz"
    archive.write_bytes(b"x")
    with pytest.raises(ValueError, match="extract it first"):
        detect_format(archive)


# ---------------------------------------------------------------- CIFAR-10 python batches

def test_cifar_python(cifar_root):
    data = build_classification_data(cifar_root, val_fraction=0.2, augment=False)
    assert data.format == "cifar10-python" and data.img_size == 32
    assert data.classes == [n.decode() for n in CIFAR_NAMES]
    assert (data.mean, data.std) == (CIFAR10_MEAN, CIFAR10_STD)
    assert len(data.train) == 160 and len(data.val) == 40 and len(data.test) == 30
    assert Counter(data.val.targets) == {c: 4 for c in range(10)}
    x, y = data.test[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and isinstance(y, int) and y == 0
    pixels = _unnormalise(x, data.mean, data.std)
    assert round(pixels[0, 0, 0].item()) == 200 and round(pixels[1, 2, 5].item()) == 77
    assert data.test[1][1] == 3 and data.skipped == 0


def test_cifar_python_subset_resize_and_augment(cifar_root):
    data = build_classification_data(cifar_root, img_size=16, max_per_class=3, val_fraction=0.0)
    assert data.val is None and len(data.train) == 30 and len(data.test) == 30  # test has 3 per class
    x, _ = data.train[0]
    assert x.shape == (3, 16, 16)
    torch.manual_seed(0)
    views = torch.stack([data.train[0][0] for _ in range(8)])
    assert (views != views[0]).any()  # random crop / flip vary


def test_cifar_malformed_batches(cifar_root):
    with open(cifar_root / "data_batch_3", "wb") as f:
        pickle.dump({b"labels": [0], b"data": np.zeros((1, 100), np.uint8)}, f, protocol=2)
    with pytest.raises(ValueError, match=r"data_batch_3.*\(N, 3072\)"):
        build_classification_data(cifar_root)
    (cifar_root / "data_batch_3").write_bytes((cifar_root / "data_batch_2").read_bytes()[:5000])  # truncated
    with pytest.raises(ValueError, match="data_batch_3: not a readable CIFAR python batch"):
        build_classification_data(cifar_root)
    os.remove(cifar_root / "data_batch_3")
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        build_classification_data(cifar_root)


class _Evil:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_cifar_unpickler_refuses_code(cifar_root, tmp_path):
    target = tmp_path / "pwned"
    with open(cifar_root / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [_Evil(str(target))]}, f, protocol=2)
    with pytest.raises(ValueError, match=r"batches\.meta.*refusing to load global"):
        build_classification_data(cifar_root)
    assert not target.exists()


# ---------------------------------------------------------------- Tiny ImageNet

def test_tiny_imagenet(tiny_root):
    data = build_classification_data(tiny_root, val_fraction=0.2, augment=False)
    assert data.format == "tiny-imagenet" and data.img_size == 64
    assert data.class_ids == WNIDS
    assert data.classes == ["Egyptian cat", "goldfish", "reel"]
    assert (data.mean, data.std) == (IMAGENET_MEAN, IMAGENET_STD)
    assert len(data.train) == 12 and len(data.val) == 3 and len(data.test) == 6
    assert data.test.targets == [0, 1, 2, 0, 1, 2]
    x, y = data.test[4]
    assert x.shape == (3, 64, 64) and y == 1
    assert abs(_unnormalise(x, data.mean, data.std)[0].mean().item() - 40) < 3  # JPEG of value 40
    small = build_classification_data(tiny_root, img_size=32)
    assert small.img_size == 32 and small.train[0][0].shape == (3, 32, 32)


def test_tiny_imagenet_annotation_errors(tiny_root):
    ann = tiny_root / "val" / "val_annotations.txt"
    lines = ann.read_text().splitlines()
    ann.write_text("\n".join(lines[:3] + ["val_3.JPEG\tn00000000\t0\t0\t1\t1"] + lines[4:]))
    with pytest.raises(ValueError, match=r"val_annotations\.txt:4: class id 'n00000000'"):
        build_classification_data(tiny_root)
    ann.write_text("\n".join(lines[:5]))  # val_5.JPEG has no line
    with pytest.raises(ValueError, match=r"val_5\.JPEG has no line in .*val_annotations\.txt"):
        build_classification_data(tiny_root)
    ann.write_text("\n".join(lines + ["garbage"]))
    with pytest.raises(ValueError, match=r"val_annotations\.txt:7: expected"):
        build_classification_data(tiny_root)
    os.remove(ann)
    with pytest.raises(FileNotFoundError, match="val_annotations.txt"):
        build_classification_data(tiny_root)


# ---------------------------------------------------------------- image folders

def test_image_folder(folder_root):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        data = build_classification_data(folder_root, val_fraction=0.5, augment=False)
    assert data.format == "image-folder" and data.classes == ["cat", "dog"] and data.img_size == 32
    assert len(data.train) == 6 and len(data.val) == 6 and len(data.test) == 4
    assert sorted(data.test.targets) == [0, 0, 1, 1]
    # the PNG pixel survives decode + eval transform exactly
    png = [i for i, j in enumerate(data.test.indices) if data.test.paths[j].endswith(".png")][0]
    x, y = data.test[png]
    pixels = _unnormalise(x, data.mean, data.std)
    assert round(pixels[0, 3, 4].item()) == 200 and round(pixels[0, 0, 0].item()) == 0
    assert y == (0 if "/cat/" in data.test.paths[data.test.indices[png]] else 1)
    # statistics estimated from the training images (all 12 here: fewer than the 256 sampled)
    pix = torch.cat([read_image_rgb(p).flatten(1) for p in data.train.paths], 1).double() / 255
    torch.testing.assert_close(torch.tensor(data.mean).double(), pix.mean(1), atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.tensor(data.std).double(), pix.std(1, correction=0), atol=1e-4, rtol=0)


def test_image_folder_val_as_test_and_both(folder_root):
    (folder_root / "test").rename(folder_root / "val")
    data = build_classification_data(folder_root, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    assert len(data.test) == 4 and data.mean == IMAGENET_MEAN
    (folder_root / "test" / "cat").mkdir(parents=True)
    write_png(torch.zeros(3, 32, 32, dtype=torch.uint8), str(folder_root / "test" / "cat" / "a.png"))
    data = build_classification_data(folder_root, val_fraction=0.5)  # val/ validates, test/ tests
    assert len(data.test) == 1 and len(data.val) == 4
    assert len(data.train) == 12  # nothing carved from train: val_fraction is not used
    assert sorted(data.val.targets) == [0, 0, 1, 1] and all("/val/" in p for p in data.val.paths)
    (folder_root / "test" / "bird").mkdir()
    with pytest.raises(ValueError, match=r"test.*\['bird'\] do not exist"):
        build_classification_data(folder_root)


def test_corrupt_image_is_skipped_counted_and_named(folder_root):
    bad = folder_root / "train" / "dog" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    data = build_classification_data(folder_root, val_fraction=0.0, mean=(0.5,) * 3, std=(0.5,) * 3)
    assert len(data.train) == 13 and data.skipped == 0  # lazy: found when read
    with pytest.warns(RuntimeWarning, match="broken.jpg"):
        items = [data.train[i] for i in range(len(data.train))]
    assert len(items) == 13 and all(x.shape == (3, 32, 32) for x, _ in items)
    assert data.skipped == 1 and data.train.bad.bad_files() == [str(bad)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # reported once, not every epoch
        [data.train[i] for i in range(len(data.train))]
    assert data.skipped == 1


def test_corrupt_image_in_an_evaluation_split_counts_nowhere(folder_root):
    from nostride.data.classification import IGNORE_LABEL
    from nostride.tasks.classify.metrics import ClassificationEvaluator

    bad = folder_root / "test" / "cat" / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    data = build_classification_data(folder_root, val_fraction=0.0, mean=(0.5,) * 3, std=(0.5,) * 3)
    with pytest.warns(RuntimeWarning, match="broken.png"):
        items = [data.test[i] for i in range(len(data.test))]
    labels = [y for _, y in items]
    assert len(items) == 5 and labels.count(IGNORE_LABEL) == 1
    good = [data.test.labels[j] for j in data.test.indices if data.test.paths[j] != str(bad)]
    assert [y for y in labels if y != IGNORE_LABEL] == good  # the 4 readable files keep their labels
    assert all(x.shape == (3, 32, 32) for x, _ in items)  # shapes stay batchable
    evaluator = ClassificationEvaluator(len(data.classes))
    evaluator.process(torch.randn(len(items), len(data.classes)), torch.tensor(labels))
    assert evaluator.evaluate()["count"] == 4 and data.test.skipped == 1
    # training views still replace a bad file by the next readable sample, label included
    assert all(y != IGNORE_LABEL for _, y in (data.train[i] for i in range(len(data.train))))


def test_corrupt_image_counted_across_dataloader_workers(folder_root):
    (folder_root / "train" / "cat" / "empty.png").write_bytes(b"")
    data = build_classification_data(folder_root, val_fraction=0.0, mean=(0.5,) * 3, std=(0.5,) * 3)
    loader = torch.utils.data.DataLoader(data.train, batch_size=4, num_workers=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        n = sum(len(y) for _, y in loader)
    assert n == 13 and data.skipped == 1  # the workers' finding reaches the main process


# ---------------------------------------------------------------- split, transforms

def test_stratified_split():
    labels = [0] * 50 + [1] * 30 + [2] * 3 + [3]
    train, val = stratified_split(labels, 0.2, seed=1)
    assert not set(train) & set(val) and sorted(train + val) == list(range(len(labels)))
    assert Counter(labels[i] for i in val) == {0: 10, 1: 6, 2: 1}  # the single class-3 sample stays in train
    assert stratified_split(labels, 0.2, seed=1) == (train, val)
    assert stratified_split(labels, 0.2, seed=2)[1] != val
    with pytest.raises(ValueError, match="val_fraction"):
        stratified_split(labels, 1.0)


def _v2_normalise(mean, std):
    from torchvision.transforms import v2

    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])


def test_train_transform_draws_exactly_the_v2_augmentation():
    from torchvision.transforms.v2 import functional as TF

    img = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    p = 2  # crop_padding(16): v2.RandomCrop(16, padding=2) + v2.RandomHorizontalFlip()
    outcomes = {}  # uint8 result of every (top, left, flip) the v2 transforms can draw
    for top in range(2 * p + 1):
        for left in range(2 * p + 1):
            crop = TF.crop(TF.pad(img, [p]), top, left, 16, 16)
            for flip in (0, 1):
                outcomes[(TF.horizontal_flip(crop) if flip else crop).numpy().tobytes()] = (top, left, flip)
    transform = train_transform(16, mean, std)
    seen = set()
    for _ in range(600):
        out = transform(img)
        assert out.dtype == torch.float32 and out.shape == (3, 16, 16)
        pixels = _unnormalise(out, mean, std)
        assert (pixels - pixels.round()).abs().max() < 1e-3  # an exact normalised uint8 image
        key = pixels.round().to(torch.uint8).numpy().tobytes()
        assert key in outcomes, "the augmentation produced an image v2 RandomCrop + flip cannot"
        seen.add(outcomes[key])
    assert seen == set(outcomes.values())  # every crop offset and flip occurs
    torch.testing.assert_close(eval_transform(16, mean, std)(img), _v2_normalise(mean, std)(img))


def test_eval_transform_resizes_like_v2():
    from torchvision.transforms import v2

    img = torch.randint(0, 256, (3, 50, 70), dtype=torch.uint8)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    out = eval_transform(32, mean, std)(img)
    ref = v2.Compose([v2.Resize(32, antialias=True), v2.CenterCrop(32), _v2_normalise(mean, std)])(img)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    flat = eval_transform(32, mean, std)(torch.full((3, 40, 32), 128, dtype=torch.uint8))
    torch.testing.assert_close(flat, torch.full_like(flat, (128 / 255 - 0.5) / 0.25))
    with pytest.raises(ValueError, match="uint8 RGB"):
        eval_transform(32, mean, std)(img.float())
    with pytest.raises(ValueError, match="resize=False"):
        train_transform(32, mean, std, resize=False)(img)


def _add(tar, name: str, data: bytes) -> None:
    import io
    import tarfile

    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_extract_subset_image_folder_archive(tmp_path):
    import tarfile

    jpg = encode_jpeg(torch.zeros(3, 8, 8, dtype=torch.uint8)).numpy().tobytes()
    archive = tmp_path / "ds.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        _add(tar, "./README.md", b"hello")
        _add(tar, "../escape.txt", b"x")
        _add(tar, "/abs/train/a/0.jpg", jpg)
        for split, n in (("train", 5), ("test", 3)):
            for cls in ("a", "b"):
                for i in range(n):
                    _add(tar, f"./{split}/{cls}/{i}.jpg", jpg)
        _add(tar, "./train/a/notes.txt", b"skip me")
    root = extract_subset(archive, tmp_path / "out", per_class=2)
    assert root == tmp_path / "out"
    files = sorted(str(f.relative_to(root)) for f in root.rglob("*") if f.is_file())
    assert files == ["README.md", "test/a/0.jpg", "test/a/1.jpg", "test/b/0.jpg", "test/b/1.jpg",
                     "train/a/0.jpg", "train/a/1.jpg", "train/b/0.jpg", "train/b/1.jpg"]
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "abs").exists()
    only_train = extract_subset(archive, tmp_path / "out2", per_class=1, splits=("train",))
    assert sorted(d.name for d in only_train.iterdir() if d.is_dir()) == ["train"]


def test_extract_subset_tiny_imagenet_archive(tmp_path, tiny_root):
    import tarfile

    archive = tmp_path / "tiny.tar"
    with tarfile.open(archive, "w") as tar:  # annotations after the val images, as in the real archive
        for f in sorted(tiny_root.rglob("*"), key=lambda f: ("val_annotations" in f.name, str(f))):
            if f.is_file():
                _add(tar, str(f.relative_to(tiny_root.parent)), f.read_bytes())
    root = extract_subset(archive, tmp_path / "out", per_class=1)
    assert root == tmp_path / "out" / "tiny-imagenet-200"
    ann = (root / "val" / "val_annotations.txt").read_text().splitlines()
    assert [line.split("\t")[1] for line in ann] == WNIDS[:3]  # first val image of each class
    data = build_classification_data(root, val_fraction=0.0)
    assert len(data.train) == 3 and data.test.targets == [0, 1, 2] and data.class_ids == WNIDS


# ---------------------------------------------------------------- the real archives in ../shared/data

@pytest.mark.data
@pytest.mark.slow
def test_real_cifar10_jpeg_subset(shared_data, tmp_path):
    root = extract_subset(shared_data / "cifar10-jpg.tar.gz", tmp_path, per_class=20)
    assert sum(1 for _ in root.rglob("*.jpg")) == 400
    data = build_classification_data(root, val_fraction=0.1)
    assert data.format == "image-folder" and data.classes == [n.decode() for n in CIFAR_NAMES]
    assert len(data.train) == 180 and len(data.val) == 20 and len(data.test) == 200
    assert Counter(data.test.targets) == {c: 20 for c in range(10)}
    assert data.train[0][0].shape == (3, 32, 32) and data.skipped == 0
    assert all(abs(m - c) < 0.05 for m, c in zip(data.mean, CIFAR10_MEAN))


@pytest.mark.data
def test_real_tiny_imagenet_subset(shared_data, tmp_path):
    root = extract_subset(shared_data / "tiny-imagenet-200-subset.tar.gz", tmp_path, per_class=2)
    assert root.name == "tiny-imagenet-200"
    data = build_classification_data(tmp_path, img_size=32, val_fraction=0.5)
    assert data.format == "tiny-imagenet" and len(data.classes) == 200 and len(data.class_ids) == 200
    assert len(data.train) == 200 and len(data.val) == 200 and len(data.test) == 400
    assert Counter(data.test.targets) == {c: 2 for c in range(200)}
    x, y = data.test[0]
    assert x.shape == (3, 32, 32) and 0 <= y < 200
