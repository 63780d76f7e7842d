"""CPU training step in float32 against bfloat16 autocast (``--amp`` on CPU), with and without channels-last.

For each model and input size: forward + loss + backward + SGD step on a synthetic batch, in train
mode, on one thread (``--threads``), four ways (float32, float32 + channels-last, bfloat16 autocast,
bfloat16 autocast + channels-last), timed round-robin in the same run so that the ratios survive a
shared machine. Prints ms per image and the speed-up over float32, and whether this CPU reports
bfloat16 instructions (without them oneDNN emulates bfloat16 and the "speed-up" is below 1).

    python benchmarks/cpu_bf16.py [--threads 1] [--batch-size 128] [--repeats 5] [--quick]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from _common import apply_threads, describe_device, measure

from nostride.models import create_model

CASES = [  # (model, width, image size): the CIFAR study's models, and a detector at the main job's size
    ("resnet18", 32, 32), ("resnet18_spd", 32, 32), ("resnet18_cifar", 32, 32),
    ("resnet18", 32, 16), ("resnet18_spd", 32, 16), ("resnet18_cifar", 32, 16),
    ("yolov5n", None, 128), ("yolov5n_spd", None, 128),
]
MODES = {"float32": (False, False), "float32+cl": (False, True), "bf16": (True, False), "bf16+cl": (True, True)}


def cpu_bf16_flags() -> list[str]:
    """The bfloat16-related instruction-set flags this CPU reports (Linux), e.g. avx512_bf16, amx_bf16."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    return sorted({w for w in text.split() if "bf16" in w})


def train_step(name: str, width: int | None, size: int, batch: int, amp: bool, channels_last: bool):
    """A closure running one training step of a fresh model (seed 0) in the given mode."""
    torch.manual_seed(0)
    kwargs = {"width": width} if width else {}
    model = create_model(name, **kwargs).train()
    x = torch.randn(batch, 3, size, size)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            out = model(x)
        outs = out if isinstance(out, (list, tuple)) else [out]
        loss = sum(o.float().square().mean() for o in outs)  # a stand-in loss; the step's cost is the network's
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=128, help="batch of the classifiers; detectors use a quarter")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="one case, tiny batch (a smoke test)")
    args = ap.parse_args()
    apply_threads(args.threads)
    device = torch.device("cpu")
    cases = CASES[3:4] if args.quick else CASES
    batch0 = 8 if args.quick else args.batch_size
    print(f"device: {describe_device(device)}; bfloat16 flags: {', '.join(cpu_bf16_flags()) or 'none'}; "
          f"torch {torch.__version__}")
    print(f"| model | px | batch | {' | '.join(f'{m} ms/img' for m in MODES)} | bf16 speed-up | bf16+cl speed-up |")
    print("|---|---|---|" + "---|" * (len(MODES) + 2))
    for name, width, size in cases:
        batch = batch0 if name.startswith("resnet") else max(1, batch0 // 4)
        fns = {mode: train_step(name, width, size, batch, *flags) for mode, flags in MODES.items()}
        times = measure(fns, device, repeats=1 if args.quick else args.repeats, min_time=0 if args.quick else 0.5,
                        warmup=1 if args.quick else 2)
        ms = {mode: times[mode][0] / batch * 1e3 for mode in MODES}
        label = f"{name}@width={width}" if width else name
        print(f"| {label} | {size} | {batch} | {' | '.join(f'{ms[m]:.2f}' for m in MODES)} | "
              f"{ms['float32'] / ms['bf16']:.2f}x | {ms['float32'] / ms['bf16+cl']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
