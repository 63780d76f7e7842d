"""Real DDP: two CPU processes (gloo) launched with torch.distributed.run on a tiny image folder."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap

import pytest
from helpers import image_folder

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

SCRIPT = textwrap.dedent('''
    import json, os, sys
    import torch
    import nostride
    from nostride.engine import Hook

    class Witness(Hook):
        """Each rank writes how many training samples it saw and a checksum of its final weights."""
        def __init__(self):
            self.seen = 0
        def before_step(self, trainer):
            self.seen += len(trainer.batch[1])
        def after_train(self, trainer):
            rank = int(os.environ["RANK"])
            checksum = sum(float(p.double().sum()) for p in trainer.model.parameters())
            info = {"rank": rank, "world": trainer.info.world_size, "seen": self.seen, "checksum": checksum,
                    "val_count": trainer.metrics.get("count"), "per_rank_batch": trainer.batch_per_rank}
            with open(os.path.join(sys.argv[2], f"rank{rank}.json"), "w") as f:
                json.dump(info, f)

    torch.set_num_threads(1)
    extra = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    nostride.train(**{**dict(model="resnet18_cifar", data=sys.argv[1], width=4, epochs=2, batch_size=8, lr=0.05,
                   workers=0, device="cpu", project=sys.argv[2], name="ddp", quiet=True, val_fraction=0.25,
                   sync_bn=True, ema=True, hooks=[Witness()]), **extra})
''')



def test_ddp_two_processes_on_cpu(tmp_path):
    from nostride.data.classification import build_classification_data

    data = image_folder(tmp_path / "data")
    ref = build_classification_data(data, val_fraction=0.25, seed=0)
    n_train, n_val, n_test = len(ref.train), len(ref.val), len(ref.test)
    assert n_val % 2 == 1 and n_test % 2 == 1, "odd sizes: DistributedSampler would pad them"
    out = tmp_path / "out"
    out.mkdir()
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
         str(script), str(data), str(out)],
        capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2] and [r["per_rank_batch"] for r in ranks] == [4, 4]
    # both ranks trained, on disjoint halves of the training set (DistributedSampler pads to even)
    per_rank = (n_train + 1) // 2
    assert [r["seen"] for r in ranks] == [2 * per_rank, 2 * per_rank]
    # DDP kept the replicas identical
    assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], rel=1e-6)
    # validation counted every sample exactly once over the two ranks
    assert ranks[0]["val_count"] == ranks[1]["val_count"] == n_val
    rows = list(csv.DictReader(open(out / "ddp" / "results.csv")))
    assert [int(r["val/count"]) for r in rows] == [n_val, n_val]
    final = json.loads((out / "ddp" / "final_metrics.json").read_text())
    assert final["test"]["count"] == n_test and final["val"]["count"] == n_val
    # one run folder, one checkpoint set (rank 0 alone writes)
    assert sorted(p.name for p in out.iterdir()) == ["ddp", "rank0.json", "rank1.json"]
    assert sorted(p.name for p in (out / "ddp" / "weights").iterdir()) == ["best.pt", "last.pt"]
    assert proc.stdout.count("done:") == 1  # only rank 0 prints
    assert "SyncBatchNorm needs CUDA" in proc.stdout
    from nostride import model_from_checkpoint

    model = model_from_checkpoint(out / "ddp" / "weights" / "best.pt")
    assert model.names == ref.classes


def test_ddp_with_compile_and_strided_spd_form(tmp_path):
    """--compile wraps the DDP module (no_sync of gradient accumulation reaches DDP through it);
    replicas stay identical and the checkpoint holds the plain module's keys."""
    data = image_folder(tmp_path / "data")
    out = tmp_path / "out"
    out.mkdir()
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    extra = {"model": "resnet18_spd", "epochs": 1, "compile": True, "spd_form": "strided", "accumulate": 2,
             "sync_bn": False}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
         str(script), str(data), str(out), json.dumps(extra)],
        capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], rel=1e-6)
    from nostride import load_checkpoint

    ckpt = load_checkpoint(out / "ddp" / "weights" / "last.pt")
    assert not [k for k in ckpt["model"] if "_orig_mod" in k or k.startswith("module.")]

