"""Classification data loading throughput, per worker process (one thread).

Measures items/s of the datasets nostride.data.classification builds, with and without
``cache="ram"`` (images decoded once), against a baseline in the same run (indexing the uint8
array and converting to float, no augmentation):

    python benchmarks/classification_data.py [--shared ../shared/data] [--n 5000]

The real archives are optional: without them only the in-memory rows are printed.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from nostride.data.classification import (CIFAR10_MEAN, CIFAR10_STD, TensorImageDataset, build_classification_data,
                                          extract_subset, train_transform)


def items_per_s(dataset, n: int) -> float:
    n = min(n, len(dataset))
    dataset[0]  # warm-up
    t0 = time.perf_counter()
    for i in range(n):
        dataset[i]
    return n / (time.perf_counter() - t0)


def loader_items_per_s(dataset, n: int, batch_size: int = 128) -> float:
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=0)
    t0, seen = time.perf_counter(), 0
    for x, _ in loader:
        seen += len(x)
        if seen >= n:
            break
    return seen / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    ap.add_argument("--n", type=int, default=5000, help="items timed per row")
    args = ap.parse_args()
    torch.set_num_threads(1)  # one DataLoader worker = one thread
    torch.manual_seed(0)

    images = torch.randint(0, 256, (args.n, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (args.n,))
    mean, std = torch.tensor(CIFAR10_MEAN).view(3, 1, 1), torch.tensor(CIFAR10_STD).view(3, 1, 1)

    class Baseline(torch.utils.data.Dataset):  # index + float conversion, nothing else
        def __len__(self):
            return len(images)

        def __getitem__(self, i):
            return (images[i].float() / 255 - mean) / std, int(labels[i])

    rows = []
    base = items_per_s(Baseline(), args.n)
    rows.append(("baseline: uint8 array -> normalised float, no augmentation", base))
    v2_pipeline = v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip(),
                              v2.ToDtype(torch.float32, scale=True), v2.Normalize(CIFAR10_MEAN, CIFAR10_STD)])
    rows.append(("in memory, v2 RandomCrop+Flip+ToDtype+Normalize",
                 items_per_s(TensorImageDataset(images, labels, v2_pipeline), args.n)))
    mem = TensorImageDataset(images, labels, train_transform(32, CIFAR10_MEAN, CIFAR10_STD, resize=False))
    rows.append(("in memory, nostride train_transform (same augmentation)", items_per_s(mem, args.n)))
    rows.append(("  same through DataLoader(batch 128, num_workers=0)", loader_items_per_s(mem, args.n)))

    with tempfile.TemporaryDirectory() as tmp:
        cifar_tar = args.shared / "cifar10-jpg.tar.gz"
        if cifar_tar.is_file():
            root = extract_subset(cifar_tar, Path(tmp) / "c", per_class=max(1, args.n // 10), splits=("train",))
            data = build_classification_data(root, val_fraction=0.0)
            rows.append(("CIFAR-10 JPEG folder (32x32), train transform", items_per_s(data.train, args.n)))
            data = build_classification_data(root, val_fraction=0.0, cache="ram")
            rows.append(("  same with cache ram (decoded once, before timing)", items_per_s(data.train, args.n)))
            data = build_classification_data(root, val_fraction=0.0, img_size=16)
            rows.append(("CIFAR-10 JPEG folder resized to 16x16, train transform", items_per_s(data.train, args.n)))
            t0 = time.perf_counter()
            data = build_classification_data(root, val_fraction=0.0, img_size=16, cache="ram")
            fill = len(data.train) / (time.perf_counter() - t0)
            rows.append(("  same with cache ram", items_per_s(data.train, args.n)))
            rows.append(("  filling that cache (images decoded per second, once)", fill))
        tiny_tar = args.shared / "tiny-imagenet-200-subset.tar.gz"
        if tiny_tar.is_file():
            root = extract_subset(tiny_tar, Path(tmp) / "t", per_class=max(1, args.n // 200), splits=("train",))
            data = build_classification_data(root, val_fraction=0.0)
            rows.append(("Tiny ImageNet JPEG (64x64), train transform", items_per_s(data.train, args.n)))
            data = build_classification_data(root, val_fraction=0.0, img_size=32)
            rows.append(("Tiny ImageNet JPEG resized to 32x32, train transform", items_per_s(data.train, args.n)))
            data = build_classification_data(root, val_fraction=0.0, cache="ram")
            rows.append(("Tiny ImageNet JPEG (64x64), cache ram", items_per_s(data.train, args.n)))

    width = max(len(r[0]) for r in rows)
    print(f"{'dataset (one process, one thread)':<{width}}  {'items/s':>8}  {'vs baseline':>11}")
    for name, rate in rows:
        print(f"{name:<{width}}  {rate:8.0f}  {rate / base:10.2f}x")


if __name__ == "__main__":
    main()
