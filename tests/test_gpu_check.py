"""benchmarks/gpu_check.py's pieces in its CPU smoke mode: the training-step check, the CLI
validation check and the refusal of a float16 export without CUDA (the script runs them all on a GPU)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def gpu_check():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import gpu_check

        yield gpu_check
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_training_check_steps_and_catches_a_frozen_model(gpu_check, one_thread):
    from train_detect import synthetic_batch

    cpu = torch.device("cpu")
    x, t = synthetic_batch(2, 64, cpu)
    note = gpu_check.training_check(lambda: gpu_check.detector_step("yolov5n_spd", x, t, cpu, False,
                                                                    spd_form="strided"), 1, False)
    assert note.startswith("float32; loss") and "tensors updated" in note
    note = gpu_check.training_check(lambda: gpu_check.classifier_step("resnet18_spd", x[:, :, :32, :32], cpu, False,
                                                                      channels_last=True), 1, False)
    assert "tensors updated" in note

    def frozen():
        step, model, scaler = gpu_check.classifier_step("resnet18_spd", x[:, :, :32, :32], cpu, False)
        for p in model.parameters():
            p.requires_grad_(False)

        def no_update():
            step.losses.append(torch.tensor(1.0))

        no_update.losses = step.losses
        return no_update, model, scaler

    with pytest.raises(AssertionError, match="no weight changed"):
        gpu_check.training_check(frozen, 1, False)


@pytest.mark.slow
def test_val_and_half_export_checks_on_cpu(gpu_check, tmp_path, one_thread, monkeypatch):
    cpu = torch.device("cpu")
    weights = gpu_check.detector_checkpoint(tmp_path / "w.pt", 64)
    data = gpu_check.tiny_detection_data(tmp_path / "data")
    note = gpu_check.val_check(weights, data, 64, cpu, tmp_path)
    assert note.startswith("float32 (float16 needs CUDA): 8 images")
    # --half without CUDA: one line naming CUDA, exit 2 (the float32 export after it is stubbed: slow here)
    import nostride.export

    monkeypatch.setattr(nostride.export, "export", lambda model, path, **kw: Path(path).write_bytes(b"") or Path(path))
    assert gpu_check.export_check(weights, 64, cpu, tmp_path).startswith("skipped: float16 needs CUDA")
