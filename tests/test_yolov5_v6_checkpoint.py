"""``nostride val`` on a checkpoint written by YOLOv5 v6.0's own code prints ``val.py``'s numbers.

``tests/data/yolov5_v6_trained/`` holds a small YOLOv5 (the yolov5n layout at width 0.09375, under
1 MB) trained by YOLOv5 v6.0's ``train.py`` on the first 16 coco128 train images (autoanchor on),
and ``expected.json``: what v6.0's ``val.py`` reports for it on those 16 images with the options
stored there. Its README says exactly how both were made (outside this repository). The test runs
the command line as a user types it and compares the printed P, R, mAP50 and mAP50-95 with the
reference's, to 3 decimals.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TRAINED = Path(__file__).parent / "data" / "yolov5_v6_trained"


def _coco16(shared_data: Path, root: Path) -> Path:
    src = shared_data / "coco128"
    if not src.is_dir():
        pytest.skip("coco128 not present")
    (root / "images" / "train2017").mkdir(parents=True)
    (root / "labels" / "train2017").mkdir(parents=True)
    for f in sorted((src / "images" / "train2017").glob("*.jpg"))[:16]:
        shutil.copy(f, root / "images" / "train2017" / f.name)
        lab = src / "labels" / "train2017" / f"{f.stem}.txt"
        if lab.is_file():
            shutil.copy(lab, root / "labels" / "train2017" / lab.name)
    names = yaml.safe_load((src / "data.yaml").read_text())["names"]
    names = [names[i] for i in range(len(names))] if isinstance(names, dict) else list(names)
    data = {"path": str(root), "train": "images/train2017", "val": "images/train2017", "nc": len(names),
            "names": names}
    (root / "coco16.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return root / "coco16.yaml"


@pytest.mark.slow
@pytest.mark.data
def test_nostride_val_prints_the_numbers_of_yolov5_v6_val_py(tmp_path, shared_data):
    expected = json.loads((TRAINED / "expected.json").read_text())
    weights = TRAINED / "yolov5p_coco16.pt"
    assert weights.stat().st_size < 1_000_000
    data = _coco16(shared_data, tmp_path / "coco16")
    o = expected["options"]
    cmd = [sys.executable, "-m", "nostride", "val", "--weights", str(weights), "--data", str(data),
           "--img-size", str(o["img_size"]), "--batch-size", str(o["batch_size"]), "--conf", str(o["conf"]),
           "--iou", str(o["iou"]), "--device", "cpu", "--workers", "0", "--project", str(tmp_path / "runs"),
           "--no-plots"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [line.split() for line in r.stdout.splitlines() if line.split()[:1] == ["all"]]
    assert rows, r.stdout[-2000:]
    printed = [float(v) for v in rows[0][3:7]]
    want = [round(expected[k], 3) for k in ("precision", "recall", "mAP50", "mAP50-95")]
    assert printed == pytest.approx(want, abs=1e-9), (printed, want)
    assert max(want) > 0.05  # a model that finds things: agreement at 0.000 would prove nothing
