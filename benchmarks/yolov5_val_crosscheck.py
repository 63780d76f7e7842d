"""Cross-check ``nostride val`` against YOLOv5 v6.0 ``val.py`` on coco128 (numbers in docs/evaluation.md).

Both pipelines load coco128 val with their own loader (YOLOv5: ``create_dataloader(rect=True,
pad=0.5)``; nostride: ``build_val_loader``) and receive the same raw head outputs from a stand-in
model: per image, jittered copies of its labels (some duplicated, some with the wrong class) plus
false positives, with confidences rounded so that ties occur, mapped into each loader's own
canvas. Each side then runs its own NMS, box scaling, matching and AP (YOLOv5: ``val.run`` with
``model=`` and ``dataloader=``). Printed: whether batches, canvases, letterbox shapes and targets
agree, the mean pixel difference of the two decoders, and both sets of P, R, mAP50, mAP50-95.

YOLOv5's code is not part of nostride: point ``--yolov5`` at a checkout of ultralytics/yolov5
tag v6.0 (its requirements: OpenCV; pandas, seaborn and pkg_resources are stubbed here, as only
their import is needed). Its dataloader writes a ``labels/*.cache`` file, so ``--coco128`` must be
a writable copy.

    python benchmarks/yolov5_val_crosscheck.py --yolov5 /tmp/yolov5-v6.0 --coco128 /tmp/coco128 \\
        [--img-size 640] [--batch-size 32] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch
from torch import nn


def _stub_reference_imports() -> None:
    """Modules YOLOv5 v6.0 imports but the validation path does not use, and numpy names it still uses."""
    from importlib.machinery import ModuleSpec

    def stub(name: str) -> types.ModuleType:
        module = types.ModuleType(name)
        module.__spec__ = ModuleSpec(name, None)  # torch looks modules up with importlib.util.find_spec
        return module

    pandas = stub("pandas")
    pandas.options = types.SimpleNamespace(display=types.SimpleNamespace())
    pandas.DataFrame = None
    sys.modules.setdefault("pandas", pandas)
    sys.modules.setdefault("seaborn", stub("seaborn"))
    pkg = stub("pkg_resources")
    from packaging.version import Version

    pkg.parse_version = Version
    sys.modules.setdefault("pkg_resources", pkg)
    np.int = int  # removed in numpy 1.24, used by v6.0's dataloader
    if not hasattr(np, "trapz"):
        np.trapz = np.trapezoid
    font_dir = Path(tempfile.mkdtemp(prefix="yolov5cfg-"))  # its Annotator wants a font file (else: download)
    import matplotlib

    (font_dir / "Arial.ttf").write_bytes((Path(matplotlib.get_data_path()) / "fonts/ttf/DejaVuSans.ttf").read_bytes())
    os.environ["YOLOV5_CONFIG_DIR"] = str(font_dir)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--yolov5", required=True, help="checkout of ultralytics/yolov5 at tag v6.0")
    ap.add_argument("--coco128", required=True, help="writable copy of coco128 (images/, labels/, data.yaml)")
    ap.add_argument("--img-size", type=int, default=640)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    _stub_reference_imports()
    sys.path.insert(0, str(Path(args.yolov5).resolve()))
    import val as ref_val  # noqa: E402  (YOLOv5 v6.0)
    from utils.datasets import create_dataloader  # noqa: E402

    from nostride.data.detection import DetectionDataset, build_val_loader, load_data_yaml
    from nostride.tasks.detect.evaluate import evaluate_detector

    img, bs, nc, n_raw = args.img_size, args.batch_size, 80, 400
    root = Path(args.coco128).resolve()
    ref_loader = create_dataloader(str(root / "images" / "val2017"), img, bs, 32, pad=0.5, rect=True, workers=0)[0]
    cfg = load_data_yaml(root / "data.yaml")
    ds = DetectionDataset(cfg.val, names=cfg.names, verbose=False)
    our_loader = build_val_loader(ds, img, bs, 32, workers=0)
    stems = [p.stem for p in ds.im_files]

    def batches(loader):
        return [(tuple(im.shape), [Path(p).stem for p in paths], shapes, t.clone(), im)
                for im, t, paths, shapes in loader]

    ref_b, our_b = batches(ref_loader), batches(our_loader)
    same = len(ref_b) == len(our_b) and all(a[0] == b[0] and a[1] == b[1] for a, b in zip(ref_b, our_b))
    def flat(shape):
        (h0, w0), ((rh, rw), (pw, ph)) = shape
        return tuple(float(v) for v in (h0, w0, rh, rw, pw, ph))

    shapes_equal = same and all(flat(a[2][i]) == flat(b[2][i]) for a, b in zip(ref_b, our_b) for i in range(len(a[1])))
    targets_equal = same and all(torch.equal(a[3], b[3]) for a, b in zip(ref_b, our_b))
    pixels = np.mean([(a[4].float() - b[4].float()).abs().mean().item() for a, b in zip(ref_b, our_b)]) if same else float("nan")
    print(f"same batches, canvases and order: {same}; letterbox shapes equal: {shapes_equal}; "
          f"targets equal: {targets_equal}; mean |pixel difference|: {pixels:.3f}")

    def raw_for(stem, shape_entry):
        i = stems.index(stem)
        labels, (h0, w0) = ds.labels[i], ds.shapes[i]
        rng = np.random.default_rng(int(stem) * 7 + args.seed)
        rows = []
        for c, xc, yc, w, h in labels.tolist():
            if rng.random() < 0.85:
                for _ in range(1 + int(rng.random() < 0.25)):
                    bw, bh, x, y = w * w0, h * h0, xc * w0, yc * h0
                    j = rng.normal(0, 0.1, 4)
                    x, y, bw, bh = x + j[0] * bw, y + j[1] * bh, bw * np.exp(j[2]), bh * np.exp(j[3])
                    cls = int(c) if rng.random() < 0.9 else int(rng.integers(nc))
                    rows.append((x - bw / 2, y - bh / 2, x + bw / 2, y + bh / 2, round(float(rng.uniform(0.02, 1)), 3), cls))
        for _ in range(int(rng.integers(0, 20))):
            bw, bh = rng.uniform(0.02, 0.5) * w0, rng.uniform(0.02, 0.5) * h0
            x, y = rng.uniform(0, w0), rng.uniform(0, h0)
            rows.append((x - bw / 2, y - bh / 2, x + bw / 2, y + bh / 2, round(float(rng.uniform(0.001, 0.7)), 3),
                         int(rng.integers(nc))))
        gain, (padw, padh) = shape_entry[1][0][0], shape_entry[1][1]
        out = torch.zeros(n_raw, 5 + nc)
        for k, (x1, y1, x2, y2, obj, cls) in enumerate(rows[:n_raw]):
            x1, x2, y1, y2 = x1 * gain + padw, x2 * gain + padw, y1 * gain + padh, y2 * gain + padh
            out[k, :5] = torch.tensor([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, obj])
            p = torch.from_numpy(rng.uniform(0, 0.01, nc)).float()
            p[cls] = float(rng.uniform(0.3, 1.0))
            p[int(rng.integers(nc))] = float(rng.uniform(0, 0.2))
            out[k, 5:] = p
        return out

    class StandIn(nn.Module):
        def __init__(self, batch_list):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))
            self.batch_list, self.k = batch_list, 0
            self.stride, self.names, self.nc = torch.tensor([8.0, 16.0, 32.0]), cfg.names, nc

        def forward(self, x, augment=False):
            shape, bstems, shapes, _, _ = self.batch_list[self.k]
            self.k += 1
            return torch.stack([raw_for(s, sh) for s, sh in zip(bstems, shapes)]).to(x.dtype), None

    t0 = time.time()
    (mp, mr, map50, map_, *_), maps, _ = ref_val.run({"nc": nc, "val": "x"}, model=StandIn(ref_b), dataloader=ref_loader,
                                                     plots=False, batch_size=bs, imgsz=img, half=False)
    t_ref = time.time() - t0
    t0 = time.time()
    ours = evaluate_detector(StandIn(our_b), ds, img_size=img, batch_size=bs, workers=0, progress=False,
                             verbose=False, device="cpu", plots=False, coco=False)
    t_ours = time.time() - t0
    ours_maps = np.full(nc, ours["mAP50-95"])
    for r in ours["per_class"]:
        ours_maps[r["class"]] = r["mAP50-95"]
    print(f"YOLOv5 v6.0 val.py: P {mp:.6f}  R {mr:.6f}  mAP50 {map50:.6f}  mAP50-95 {map_:.6f}  ({t_ref:.1f} s)")
    print(f"nostride:           P {ours['precision']:.6f}  R {ours['recall']:.6f}  mAP50 {ours['mAP50']:.6f}  "
          f"mAP50-95 {ours['mAP50-95']:.6f}  ({t_ours:.1f} s)")
    identical = (mp, mr, map50, map_) == (ours["precision"], ours["recall"], ours["mAP50"], ours["mAP50-95"])
    print(f"identical: {identical}; max per-class mAP50-95 difference: {float(np.abs(ours_maps - maps).max()):.3g}")


if __name__ == "__main__":
    main()
