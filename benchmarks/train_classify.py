"""Classification training throughput: the model step and data loading, measured separately.

* model step: forward + cross-entropy + backward + SGD step (momentum, weight decay) on a synthetic
  in-memory batch, in train mode (AMP float16 + GradScaler on CUDA, as ``nostride train`` does),
  for each model and input size, with the ratio to ``resnet18`` at the same size measured in the
  same run;
* data loading: a ``DataLoader`` (shuffle, ``--workers`` processes) over the real training
  pipeline (random crop with padding + horizontal flip + normalisation), no model: an in-memory
  uint8 array (the CIFAR-10 python format) and, when ``../shared/data`` is present, JPEG image
  folders extracted from the CIFAR-10 (32x32) and Tiny ImageNet (64x64) archives;
* headroom = slowest loader throughput at that size / model-step throughput. Above 1, data
  loading keeps up with the model step.

On CPU the model step runs on one thread (``--threads``) and ratios and headroom use images per
CPU-second (this process plus its loader workers, from ``getrusage``): on a CPU the model and the
loader workers share the cores, so what matters is the CPU each image costs in each, and CPU time
is far less distorted than wall time when other jobs share the machine. On CUDA they use wall
time. Both are printed.

    python benchmarks/train_classify.py [--device cpu|cuda] [--batch-size 64] [--steps 10]
                                        [--workers 2] [--quick] [--shared ../shared/data]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import cpu_seconds, describe_device, sync
from torch.utils.data import DataLoader

from nostride.data.classification import (CIFAR10_MEAN, CIFAR10_STD, TensorImageDataset, build_classification_data,
                                          extract_subset, train_transform)
from nostride.models import create_model
from nostride.utils import count_flops

BASELINE = "resnet18"
MODELS = ["resnet18", "resnet18_spd", "resnet18_cifar", "resnet50_cifar", "resnet50", "resnet50_spd"]


def model_step_images_per_s(name: str, size: int, batch: int, steps: int, device: torch.device,
                            warmup: int = 1, num_classes: int = 10) -> tuple[float, float, float]:
    """(images per wall second, images per CPU second, forward GFLOPs per image) of forward + loss +
    backward + SGD step, timed over ``steps`` after ``warmup`` steps."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=num_classes).to(device).train()
    gflops = count_flops(model, (1, 3, size, size)) / 1e9
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, num_classes, (batch,), device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    for _ in range(warmup):  # allocator, cuDNN autotuning, oneDNN primitive creation
        step()
    sync(device)
    t0, c0 = time.perf_counter(), cpu_seconds()
    for _ in range(steps):
        step()
    sync(device)
    return steps * batch / (time.perf_counter() - t0), steps * batch / (cpu_seconds() - c0), gflops


def loader_images_per_s(dataset, batch: int, workers: int, images: int) -> tuple[float, float]:
    """(images per wall second, images per CPU second) delivered by a shuffling DataLoader.

    Wall time excludes the first batch (worker start-up); CPU time is that of this process and its
    workers over the whole run, start-up included (so it slightly understates throughput).
    """
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True,
                        persistent_workers=False)
    c0 = cpu_seconds()
    seen, total, t0, t1 = 0, 0, None, None
    while t1 is None:  # several epochs if the dataset is smaller than `images`
        it = iter(loader)
        for x, _ in it:
            total += len(x)
            if t0 is None:
                t0 = time.perf_counter()
                continue
            seen += len(x)
            if seen >= images:
                t1 = time.perf_counter()
                break
        del it  # shuts the workers down, so their CPU time is counted in RUSAGE_CHILDREN
    return seen / (t1 - t0), total / (cpu_seconds() - c0)


def build_loaders(sizes: list[int], n_memory: int, shared: Path | None, per_class_real: dict[int, int],
                  tmp: Path) -> dict[int, list[tuple[str, object]]]:
    """Datasets to time at each size: (label, train dataset with the real augmentation)."""
    out: dict[int, list[tuple[str, object]]] = {s: [] for s in sizes}
    g = torch.Generator().manual_seed(0)
    for s in sizes:
        arr = torch.randint(0, 256, (n_memory, 3, s, s), dtype=torch.uint8, generator=g)
        labels = torch.randint(0, 10, (n_memory,), generator=g)
        tf = train_transform(s, CIFAR10_MEAN, CIFAR10_STD, resize=False, augment=True)
        out[s].append((f"in-memory uint8 array ({n_memory} images)", TensorImageDataset(arr, labels, tf)))
    archives = {32: "cifar10-jpg.tar.gz", 64: "tiny-imagenet-200-subset.tar.gz"}
    for s, archive in archives.items():
        if s not in sizes or shared is None or not (shared / archive).is_file():
            continue
        root = extract_subset(shared / archive, tmp / archive.split(".")[0], per_class=per_class_real[s],
                              splits=("train",))
        data = build_classification_data(root, img_size=s, val_fraction=0.0, augment=True,
                                         mean=CIFAR10_MEAN, std=CIFAR10_STD)  # stats given: no estimation pass
        out[s].append((f"JPEG folder, {archive.split('.')[0]} ({len(data.train)} images)", data.train))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=None, help="model-step batch (default 64, --quick 8)")
    ap.add_argument("--steps", type=int, default=None, help="timed model steps after one warm-up step (default 10, --quick 1)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed model steps first (default 2 on CUDA, 1 on CPU)")
    ap.add_argument("--loader-batch", type=int, default=64, help="DataLoader batch size (a training batch)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads of the model step (default on CPU: 1, "
                    "the per-core cost, like one loader worker; also immune to OpenMP spin-waiting when other jobs "
                    "share the cores)")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--models", nargs="+", default=None, help=f"default: {' '.join(MODELS)}")
    ap.add_argument("--loader-images", type=int, default=None, help="images timed per loader (default 4096, --quick 1024)")
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data",
                    help="real datasets folder (skipped if absent)")
    ap.add_argument("--quick", action="store_true", help="small batch and step counts (a run of about 1.5-2 minutes on a shared 2-core CPU)")
    args = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # rows appear as they are measured
    device = torch.device(args.device)
    warmup = args.warmup if args.warmup is not None else (2 if device.type == "cuda" else 1)
    batch = args.batch_size or (8 if args.quick else 64)
    steps = args.steps or (1 if args.quick else 10)
    models = args.models or MODELS
    if BASELINE not in models:
        models = [BASELINE] + models
    loader_images = args.loader_images or (1024 if args.quick else 4096)

    # On a CPU the model step and the loader workers share the cores (and here other jobs too), so
    # ratios use images per CPU-second, which sharing distorts far less than wall time; on CUDA
    # the model step runs on the GPU and wall time is what matters.
    by_cpu = device.type == "cpu"
    if args.threads or by_cpu:
        torch.set_num_threads(args.threads or 1)
    basis = "img/CPU-s" if by_cpu else "img/s"
    print(f"device {device} ({describe_device(device)}), "
          f"torch {torch.__version__}; model-step batch {batch}, {warmup} warm-up + "
          f"{steps} timed steps; loader batch {args.loader_batch}, {args.workers} workers; ratios by {basis}")
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        per_class = {32: 100 if args.quick else 400, 64: 5 if args.quick else 20}  # 1000 / 4000 images
        loaders = build_loaders(args.sizes, max(loader_images, 2 * args.loader_batch), args.shared, per_class, Path(tmp))
        print("\ndata loading (random crop + flip + normalise, no model)")
        print(f"{'dataset':<52} {'size':>5} {'img/s':>9} {'img/CPU-s':>10}")
        slowest: dict[int, float] = {}
        for s in args.sizes:
            for label, ds in loaders[s]:
                wall, cpu = loader_images_per_s(ds, args.loader_batch, args.workers, min(loader_images, 4 * len(ds)))
                print(f"{label:<52} {s:>5} {wall:>9.0f} {cpu:>10.0f}")
                rate = cpu if by_cpu else wall
                slowest[s] = min(slowest.get(s, rate), rate)

    print(f"\nmodel step (forward + backward + SGD step{', AMP fp16' if device.type == 'cuda' else ''})")
    print(f"{'model':<16} {'size':>5} {'GFLOPs':>7} {'img/s':>9} {'img/CPU-s':>10} {'vs ' + BASELINE:>12} "
          f"{'loader ' + basis:>17} {'headroom':>9}")
    for s in args.sizes:
        base = None
        for name in models:
            wall, cpu, gflops = model_step_images_per_s(name, s, batch, steps, device, warmup)
            rate = cpu if by_cpu else wall
            base = rate if name == BASELINE else base
            print(f"{name:<16} {s:>5} {gflops:>7.3f} {wall:>9.2f} {cpu:>10.2f} {rate / base:>11.2f}x {slowest[s]:>17.0f} "
                  f"{slowest[s] / rate:>9.0f}")
    print(f"\nGFLOPs: one forward pass of one image (2 per multiply-add); vs {BASELINE}: model-step throughput relative to {BASELINE} at the same size ({basis}); headroom = "
          f"slowest loader {basis} at that size / model-step {basis} (> 1: data loading is not the bottleneck); "
          f"total {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
