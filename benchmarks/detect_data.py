"""Detection data speed against YOLOv5 v6.0's own loaders, in one run on the same files.

* pre-process (validation): one letterboxed item of the rectangular validation set (decode, resize
  the long side, letterbox into the batch's canvas), single process: nostride's
  ``LetterboxDataset`` against the reference's ``LoadImagesAndLabels(rect=True, pad=0.5)``;
* training item: one augmented training item (mosaic of four decoded and resized images, random
  perspective, HSV, flips) with the scratch hyperparameters, single process;
* loader: images per second through a DataLoader with ``--workers`` processes over ``--epochs``
  whole epochs, worker start-up included: nostride's training loader as ``nostride train`` builds
  it (``nostride.engine.loaders.train_loader``: workers kept over the epochs and reseeded at each
  epoch's start, so every epoch's augmentation is a function of the run seed and the epoch, for
  exact ``--resume``), a plain DataLoader whose workers are started again every epoch (what
  ``nostride train`` used before), and the reference's ``create_dataloader`` (its
  ``InfiniteDataLoader`` keeps its workers).

Variants are timed round-robin in this process, so machine load hits them alike; ratios are
nostride / reference for speeds (above 1 = faster) and reference / nostride for times. Items are
timed in CPU seconds of this one-threaded process, loaders in wall seconds.

The reference is imported from a checkout of ultralytics/yolov5 at tag v6.0 (``--reference``;
optional modules it imports but these paths do not use are stubbed). Its dataset writes a label
cache, so the images are copied to a temporary folder first.

    python benchmarks/detect_data.py [--reference /tmp/yolov5] [--data ../shared/data/coco128/data.yaml]
        [--img-size 320] [--workers 2] [--batch-size 16] [--epochs 3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def _copy_split(data: str, dest: Path) -> Path:
    """The training images and labels of ``data`` copied under ``dest`` (``images/``, ``labels/``)."""
    from nostride.data.detection import DetectionDataset, load_data_yaml

    cfg = load_data_yaml(data)
    index = DetectionDataset(cfg.train, names=cfg.names, verbose=False, cache=False)
    (dest / "images").mkdir(parents=True)
    (dest / "labels").mkdir()
    for img, lab in zip(index.im_files, index.label_files):
        shutil.copy(img, dest / "images" / img.name)
        if lab.is_file():
            shutil.copy(lab, dest / "labels" / lab.name)
    return dest


def _time_items(get, n: int) -> float:
    """CPU seconds of this process per item over items 0..n-1 (one thread: OpenCV's pool is off and
    torch has one thread), which other jobs on a loaded machine distort far less than wall time."""
    start = time.process_time()
    for i in range(n):
        get(i)
    return (time.process_time() - start) / n


def _loader_ips(make_loader, epochs: int) -> float:
    """Images per second of a loader built, run for ``epochs`` epochs and shut down inside the timing
    (a loader left alive would go on preparing batches while the next variant is timed).

    ``make_loader()`` gives the loader, or ``(loader, before_epoch)`` with ``before_epoch(epoch)``
    called before each epoch (as the trainer sets the epoch of its loader).
    """
    n, start = 0, time.perf_counter()
    loader = make_loader()
    loader, before_epoch = loader if isinstance(loader, tuple) else (loader, None)
    for epoch in range(epochs):
        if before_epoch is not None:
            before_epoch(epoch)
        for batch in loader:
            n += len(batch[0])
    elapsed = time.perf_counter() - start
    for attr in ("iterator", "_iterator"):  # the reference's InfiniteDataLoader, a persistent DataLoader
        it = loader.__dict__.get(attr)
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()
    del loader
    return n / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reference", help="checkout of ultralytics/yolov5 at tag v6.0")
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "coco128" / "data.yaml"))
    ap.add_argument("--img-size", type=int, default=320)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from torch.utils.data import DataLoader

    from nostride.data.detection import DetectionDataset, collate_detection
    from nostride.data.detection.train_dataset import DetectionTrainDataset
    from nostride.data.detection.val_loader import LetterboxDataset
    from nostride.engine.distributed import DistInfo
    from nostride.engine.loaders import set_loader_epoch, train_loader
    from nostride.tasks.detect.hyp import load_hyp
    from nostride.utils.workers import worker_init_fn

    tmp = Path(tempfile.mkdtemp(prefix="detect-data-"))
    try:
        root = _copy_split(args.data, tmp / "split")
        s, bs = args.img_size, args.batch_size
        index = DetectionDataset(root / "images", verbose=False, cache=False)
        n = len(index)
        hyp = load_hyp("scratch")
        ours_val = LetterboxDataset(index, s, 32, 32, 0.5, rect=True)
        ours_train = DetectionTrainDataset(index, s, hyp=hyp, augment=True, verbose=False)
        val_fns = {"nostride": lambda i: ours_val[i]}
        train_fns = {"nostride": lambda i: ours_train[i]}

        def ours_loader():  # as the trainer builds and steps it
            loader = train_loader(ours_train, bs, args.workers, DistInfo(), seed=0, collate_fn=collate_detection)
            return loader, lambda epoch: set_loader_epoch(loader, epoch, 0, 0)

        def restarted_loader():
            return DataLoader(ours_train, batch_size=bs, shuffle=True, num_workers=args.workers,
                              collate_fn=collate_detection, worker_init_fn=worker_init_fn, persistent_workers=False)

        loaders = {"nostride": ours_loader, "nostride, workers restarted": restarted_loader}
        if args.reference:
            sys.path.insert(0, str(REPO / "benchmarks"))
            from yolov5_val_crosscheck import _stub_reference_imports

            _stub_reference_imports()
            sys.path.insert(0, str(Path(args.reference).resolve()))
            from utils.datasets import InfiniteDataLoader, LoadImagesAndLabels  # noqa: E402  (YOLOv5 v6.0)

            import yaml

            ref_hyp = yaml.safe_load((Path(args.reference) / "data" / "hyps" / "hyp.scratch.yaml").read_text())
            ref_val = LoadImagesAndLabels(str(root / "images"), s, 32, augment=False, rect=True, stride=32, pad=0.5,
                                          prefix="")
            ref_train = LoadImagesAndLabels(str(root / "images"), s, bs, augment=True, hyp=ref_hyp, rect=False,
                                            stride=32, prefix="")
            val_fns["YOLOv5 v6.0"] = lambda i: ref_val[i]
            train_fns["YOLOv5 v6.0"] = lambda i: ref_train[i]
            # as its create_dataloader builds it for one process (no shuffling in v6.0)
            loaders["YOLOv5 v6.0"] = lambda: InfiniteDataLoader(ref_train, batch_size=bs, num_workers=args.workers,
                                                                sampler=None, pin_memory=False,
                                                                collate_fn=LoadImagesAndLabels.collate_fn)

        def rows(title: str, fns: dict, unit_ms: bool) -> None:
            times: dict[str, list[float]] = {k: [] for k in fns}
            for r in range(args.repeats + 1):
                for name, fn in fns.items():
                    random.seed(r)
                    t = fn()
                    if r:  # the first round warms caches (files, imports)
                        times[name].append(t)
            best = {k: statistics.median(v) for k, v in times.items()}
            print(f"\n{title}")
            ref = best.get("YOLOv5 v6.0")
            for name, v in best.items():
                shown = f"{v * 1e3:8.2f} CPU-ms/img" if unit_ms else f"{v:8.1f} img/s"
                ratio = "" if ref is None or name == "YOLOv5 v6.0" else (
                    f"   {ref / v:.2f}x the reference's speed" if unit_ms else f"   {v / ref:.2f}x the reference's speed")
                print(f"  {name:<30} {shown}{ratio}")

        print(f"{n} images from {args.data} at {s} px; {args.workers} workers, batch {bs}, {args.epochs} epochs "
              f"per loader measurement, median of {args.repeats}")
        rows("pre-process (validation item: decode, resize, letterbox)",
             {k: (lambda f=f: _time_items(f, n)) for k, f in val_fns.items()}, True)
        rows("training item (mosaic, perspective, HSV, flips)",
             {k: (lambda f=f: _time_items(f, n)) for k, f in train_fns.items()}, True)
        rows(f"loader ({args.workers} workers, mosaic training items)",
             {k: (lambda ld=ld: _loader_ips(ld, args.epochs)) for k, ld in loaders.items()}, False)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
