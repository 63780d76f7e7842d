"""ClassificationEvaluator: exact counts on crafted logits, ties, k > C, and the distributed sum."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from nostride.tasks.classify.metrics import ClassificationEvaluator, target_rank


def test_topk_confusion_and_loss_on_crafted_logits():
    # 4 classes, 5 samples; the target's rank is chosen per sample
    logits = torch.tensor([
        [4.0, 3.0, 2.0, 1.0],  # target 0 -> rank 0 (top1 hit), predicted 0
        [4.0, 3.0, 2.0, 1.0],  # target 1 -> rank 1 (top2), predicted 0
        [1.0, 2.0, 3.0, 4.0],  # target 0 -> rank 3 (top4 only), predicted 3
        [0.0, 9.0, 0.0, 0.0],  # target 1 -> rank 0, predicted 1
        [0.0, 1.0, 5.0, 2.0],  # target 3 -> rank 1, predicted 2
    ])
    targets = torch.tensor([0, 1, 0, 1, 3])
    ev = ClassificationEvaluator(4, class_names=list("abcd"), topk=(1, 2, 3))
    ev.process(logits[:2], targets[:2])  # two batches accumulate
    ev.process(logits[2:], targets[2:])
    m = ev.evaluate()
    assert m["count"] == 5
    assert m["top1"] == pytest.approx(100 * 2 / 5)
    assert m["top2"] == pytest.approx(100 * 4 / 5)
    assert m["top3"] == pytest.approx(100 * 4 / 5)
    expected = torch.zeros(4, 4, dtype=torch.int64)
    for t, p in [(0, 0), (1, 0), (0, 3), (1, 1), (3, 2)]:
        expected[t, p] += 1
    assert torch.equal(m["confusion"], expected)
    assert m["confusion"].dtype == torch.int64
    assert m["per_class"] == [50.0, 50.0, None, 0.0]  # class 2 has no samples
    assert m["per_class_count"] == [2, 2, 0, 1]
    assert m["mean_class_accuracy"] == pytest.approx(100 / 3)
    assert m["loss"] == pytest.approx(F.cross_entropy(logits, targets).item(), rel=1e-6)
    assert m["class_names"] == list("abcd")


def test_ties_break_to_lower_index_like_argmax():
    logits = torch.tensor([
        [1.0, 1.0, 1.0],  # all tied: class 0 ranks first, class 2 last
        [1.0, 1.0, 1.0],
        [1.0, 1.0, 1.0],
        [0.0, 2.0, 2.0],  # target 2 tied with class 1 -> rank 1
    ])
    targets = torch.tensor([0, 1, 2, 2])
    assert target_rank(logits, targets).tolist() == [0, 1, 2, 1]
    ev = ClassificationEvaluator(3, topk=(1, 2))
    ev.process(logits, targets)
    m = ev.evaluate()
    assert m["top1"] == pytest.approx(25.0)  # only sample 0
    assert m["top2"] == pytest.approx(75.0)  # samples 0, 1, 3
    # top-1 correct count equals the confusion diagonal (argmax uses the same tie rule)
    assert m["confusion"].diag().sum().item() == 1
    assert m["confusion"][2, 1].item() == 1  # sample 3 predicted class 1 (first maximum)


def test_k_larger_than_num_classes_is_clipped():
    ev = ClassificationEvaluator(3)  # default topk=(1, 5)
    logits = torch.tensor([[0.0, 1.0, 2.0], [3.0, 2.0, 1.0]])
    ev.process(logits, torch.tensor([0, 2]))
    m = ev.evaluate()
    assert m["top1"] == 0.0
    assert m["top5"] == 100.0  # every class is within the top 3


def test_nan_logits_rank_last():
    logits = torch.tensor([[float("nan"), 0.0, -1.0], [float("nan"), float("nan"), float("nan")]])
    assert target_rank(logits, torch.tensor([0, 2])).tolist() == [2, 2]
    ev = ClassificationEvaluator(3, topk=(1,))
    ev.process(logits, torch.tensor([1, 0]))
    m = ev.evaluate()
    # counted as ranked (sample 0 -> class 1; all-NaN -> first index), but a ranking of NaN scores is no
    # prediction: with any non-finite logits every metric is undefined, and the count of such samples says why
    assert torch.equal(m["confusion"], torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 0]]))
    assert m["nonfinite"] == 2 and math.isnan(m["top1"]) and math.isnan(m["loss"])
    assert math.isnan(m["mean_class_accuracy"]) and m["per_class"] == [None, None, None]


def test_one_infinite_logit_makes_every_metric_undefined():
    ev = ClassificationEvaluator(3, topk=(1, 2))
    ev.process(torch.tensor([[0.0, 1.0, 2.0], [3.0, float("inf"), 1.0]]), torch.tensor([2, 0]))
    m = ev.evaluate()
    assert m["nonfinite"] == 1 and m["count"] == 2
    assert all(math.isnan(m[k]) for k in ("top1", "top2", "loss", "mean_class_accuracy"))
    ev.reset()
    ev.process(torch.tensor([[0.0, 1.0, 2.0]]), torch.tensor([2]))
    assert ev.evaluate()["top1"] == 100.0 and ev.evaluate()["nonfinite"] == 0


def test_matches_random_reference_and_reset():
    torch.manual_seed(1)
    logits = torch.randn(300, 7)
    targets = torch.randint(0, 7, (300,))
    ev = ClassificationEvaluator(7, topk=(1, 3))
    for chunk in range(0, 300, 64):
        ev.process(logits[chunk:chunk + 64], targets[chunk:chunk + 64])
    m = ev.evaluate()
    top3 = logits.topk(3, 1).indices  # no ties in random floats
    assert m["top1"] == pytest.approx(100 * (logits.argmax(1) == targets).float().mean().item())
    assert m["top3"] == pytest.approx(100 * (top3 == targets[:, None]).any(1).float().mean().item())
    again = ev.evaluate()  # evaluate() has no side effects
    assert again["count"] == 300 and torch.equal(again["confusion"], m["confusion"]) and again["top3"] == m["top3"]
    ev.reset()
    empty = ev.evaluate()
    assert empty["count"] == 0 and math.isnan(empty["top1"]) and empty["confusion"].sum() == 0


def test_bad_input_is_rejected():
    ev = ClassificationEvaluator(3)
    with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
        ev.process(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="outside"):
        ev.process(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="integer"):
        ev.process(torch.zeros(2, 3), torch.zeros(2))
    with pytest.raises(ValueError, match="class names"):
        ClassificationEvaluator(3, class_names=["a"])


# ---- distributed: two gloo processes, each with its own shard -------------------------------

def _shard(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + rank)
    n = 40 + 13 * rank  # unequal shards
    return torch.randn(n, 5, generator=g), torch.randint(0, 5, (n,), generator=g)


def _dist_worker(rank: int, world: int, init_file: str, out_file: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        ev = ClassificationEvaluator(5, topk=(1, 2))
        ev.process(*_shard(rank))
        first = ev.evaluate()
        second = ev.evaluate()  # must not double-count (no in-place reduction of local state)
        if rank == 0:
            torch.save({"first": first, "second": second}, out_file)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_distributed_evaluate_sums_counts_over_ranks(tmp_path):
    import torch.multiprocessing as mp

    out = tmp_path / "rank0.pt"
    mp.spawn(_dist_worker, args=(2, str(tmp_path / "init"), str(out)), nprocs=2, join=True)
    got = torch.load(out, weights_only=False)
    ev = ClassificationEvaluator(5, topk=(1, 2))  # single-process reference on both shards
    for rank in range(2):
        ev.process(*_shard(rank))
    ref = ev.evaluate()
    for result in (got["first"], got["second"]):
        assert result["count"] == ref["count"] == 93
        assert torch.equal(result["confusion"], ref["confusion"])
        assert result["top1"] == pytest.approx(ref["top1"])
        assert result["top2"] == pytest.approx(ref["top2"])
        assert result["loss"] == pytest.approx(ref["loss"], rel=1e-9)


# ---- evaluate_classifier and plots ----------------------------------------------------------

def test_evaluate_classifier_equals_direct_computation_and_restores_mode():
    from torch.utils.data import TensorDataset

    from nostride.tasks.classify import evaluate_classifier

    torch.manual_seed(3)
    x, y = torch.randn(50, 6), torch.randint(0, 4, (50,))
    model = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.BatchNorm1d(4)).train()
    m = evaluate_classifier(model, TensorDataset(x, y), batch_size=16, device="cpu", workers=0,
                            class_names=list("wxyz"), progress=False)
    assert model.training  # restored
    with torch.no_grad():
        logits = model.eval()(x)  # eval mode: BatchNorm uses running statistics, as during evaluation
    assert m["count"] == 50 and m["class_names"] == list("wxyz")
    assert m["top1"] == pytest.approx(100 * (logits.argmax(1) == y).float().mean().item())
    assert m["loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
    with pytest.raises(ValueError, match="CUDA"):  # a device that is not there: a clear error
        evaluate_classifier(model, TensorDataset(x, y), device=f"cuda:{torch.cuda.device_count()}")


def _png_size(path) -> tuple[int, int]:
    blob = path.read_bytes()
    assert blob[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(blob[16:20], "big"), int.from_bytes(blob[20:24], "big")


def test_plots_for_10_and_200_classes(tmp_path):
    from nostride.tasks.classify.plots import plot_confusion_matrix, plot_per_class_accuracy

    cm = torch.randint(0, 5, (10, 10)) + 50 * torch.eye(10, dtype=torch.int64)
    cm[3] = 0  # a class without samples must not divide by zero
    w, h = _png_size(plot_confusion_matrix(cm, tmp_path / "cm10.png", [f"class{i}" for i in range(10)]))
    assert 500 <= w <= 1200 and 500 <= h <= 1200
    big = torch.randint(0, 3, (200, 200)) + 30 * torch.eye(200, dtype=torch.int64)
    w, h = _png_size(plot_confusion_matrix(big, tmp_path / "cm200.png"))
    assert w <= 1000 and h <= 1000  # a plain heat map, not a poster
    acc = (big.diag() / big.sum(1) * 100).tolist()
    acc[5] = None
    _png_size(plot_per_class_accuracy(acc, tmp_path / "pc200.png"))
    with pytest.raises(ValueError, match="square"):
        plot_confusion_matrix(torch.zeros(2, 3), tmp_path / "bad.png")
