"""Speed of space-to-depth implementations, SPD-Conv, its fused form and a strided conv.

For each shape (N, C, H, W) -> C_out, all measured in the same run:

* SPD rearrangement alone, forward + backward, three implementations giving the paper's channel
  order: slicing + cat (the authors' released code / YOLOv5 Focus), view + permute (nostride),
  ``pixel_unshuffle`` + channel re-ordering;
* ``SPDConv(C, C_out, 3, scale=2)`` forward + backward (training mode) and a 3x3 stride-2
  ``ConvBnAct`` with the same output shape (the strided baseline SPD-Conv replaces);
* inference (eval, no_grad) of ``SPDConv``, of ``nostride.fuse(SPDConv)`` and of the strided conv.

Targets: (a) the view/permute SPD is <= 10 % of SPD-Conv's forward + backward time;
(b) fused / unfused inference time <= 1.0.

    python benchmarks/spd_layer.py [--device cpu|cuda] [--repeats 7] [--quick]
"""

from __future__ import annotations

import argparse
from typing import Callable

import torch
import torch.nn.functional as F
from _common import add_device_args, apply_threads, describe_device, measure

from nostride import fuse
from nostride.layers import ConvBnAct, SPDConv, space_to_depth

SHAPES = [  # (N, C, H, W, C_out): ResNet stage transitions, a small-map stage, the image stem
    (8, 64, 56, 56, 128),
    (8, 128, 28, 28, 256),
    (32, 32, 32, 32, 64),
    (8, 3, 224, 224, 32),
]
QUICK_SHAPES = [(2, 64, 56, 56, 128), (2, 128, 28, 28, 256), (8, 32, 32, 32, 64), (2, 3, 224, 224, 32)]


def spd_slicing(x: torch.Tensor) -> torch.Tensor:
    """The released code's space_to_depth (scale 2): four strided slices, concatenated."""
    return torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1)


def spd_pixel_unshuffle(x: torch.Tensor) -> torch.Tensor:
    """``pixel_unshuffle`` (channel k*4 + 2r + c), then re-ordered to the paper's (r + 2c)*C + k."""
    n, c, h, w = x.shape
    y = F.pixel_unshuffle(x, 2).reshape(n, c, 2, 2, h // 2, w // 2)  # (N, C, r, c, Ho, Wo)
    return y.permute(0, 3, 2, 1, 4, 5).reshape(n, 4 * c, h // 2, w // 2)


SPD_IMPLEMENTATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "slice+cat": spd_slicing,
    "view/permute": lambda x: space_to_depth(x, 2),
    "unshuffle+reorder": spd_pixel_unshuffle,
}



def forward_backward(module_or_fn, x: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        out = module_or_fn(x)
        out.backward(torch.ones_like(out))
        x.grad = None
        if isinstance(module_or_fn, torch.nn.Module):
            module_or_fn.zero_grad(set_to_none=True)

    return step


def inference(module: torch.nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        with torch.no_grad():
            module(x)

    return step


def bench_shape(shape, device: torch.device, repeats: int) -> dict[str, tuple[float, float]]:
    """(median, min) seconds of every measurement for one (N, C, H, W, C_out)."""
    n, c, h, w, c_out = shape
    x = torch.randn(n, c, h, w, device=device, requires_grad=True)
    spd_conv = SPDConv(c, c_out, 3, scale=2).to(device)
    strided = ConvBnAct(c, c_out, 3, 2, act="relu").to(device)
    training = {f"spd {name}": forward_backward(fn, x) for name, fn in SPD_IMPLEMENTATIONS.items()}
    training["SPDConv train"] = forward_backward(spd_conv, x)
    training["strided train"] = forward_backward(strided, x)
    results = measure(training, device, repeats)

    spd_conv.eval()
    fused = fuse(spd_conv)
    strided_fused = fuse(strided)  # BN folded too, so all three are compared in deployment form
    xi = x.detach()
    results.update(
        measure(
            {
                "SPDConv infer": inference(spd_conv, xi),
                "fused infer": inference(fused, xi),
                "strided infer": inference(strided_fused, xi),
            },
            device,
            repeats,
        )
    )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_device_args(parser)
    parser.add_argument("--repeats", type=int, default=7, help="timed blocks per measurement (median)")
    parser.add_argument("--quick", action="store_true", help="smaller batches and 3 repeats")
    args = parser.parse_args()
    apply_threads(args.threads)
    device = torch.device(args.device)
    repeats = 3 if args.quick else args.repeats
    shapes = QUICK_SHAPES if args.quick else SHAPES
    machine = describe_device(device)
    print(f"torch {torch.__version__}, device {device} ({machine}), median of {repeats} interleaved blocks, times in ms")

    header = (
        f"{'input -> C_out':<26}{'slice+cat':>10}{'view/perm':>10}{'unshuf':>8}{'SPDConv':>9}{'strided':>9}"
        f"{'SPD %':>7}{'| SPDConv':>10}{'fused':>8}{'strided':>9}{'fused/unf':>11}"
    )
    print(f"{'':<26}{'--- forward + backward (training) ---':^53}{'| --- inference (eval) ---':^38}")
    print(header)
    worst_share = worst_ratio = worst_share_min = worst_ratio_min = 0.0
    for shape in shapes:
        both = bench_shape(shape, device, repeats)
        r = {k: med for k, (med, _) in both.items()}
        share = r["spd view/permute"] / r["SPDConv train"]
        ratio = r["fused infer"] / r["SPDConv infer"]
        worst_share, worst_ratio = max(worst_share, share), max(worst_ratio, ratio)
        best = {k: low for k, (_, low) in both.items()}
        worst_share_min = max(worst_share_min, best["spd view/permute"] / best["SPDConv train"])
        worst_ratio_min = max(worst_ratio_min, best["fused infer"] / best["SPDConv infer"])
        ms = {k: v * 1e3 for k, v in r.items()}
        label = f"{tuple(shape[:4])}->{shape[4]}"
        print(
            f"{label:<26}{ms['spd slice+cat']:>10.2f}{ms['spd view/permute']:>10.2f}{ms['spd unshuffle+reorder']:>8.2f}"
            f"{ms['SPDConv train']:>9.2f}{ms['strided train']:>9.2f}{100 * share:>6.1f}%"
            f"{ms['SPDConv infer']:>10.2f}{ms['fused infer']:>8.2f}{ms['strided infer']:>9.2f}{ratio:>11.2f}"
        )
    print(
        f"(a) view/permute SPD share of SPDConv forward+backward: worst {100 * worst_share:.1f}% "
        f"(target <= 10%: {'met' if worst_share <= 0.10 else 'MISSED'}); from minimum times: {100 * worst_share_min:.1f}%"
    )
    print(
        f"(b) fused / unfused inference time: worst {worst_ratio:.2f} "
        f"(target <= 1.0: {'met' if worst_ratio <= 1.0 else 'MISSED'}); from minimum times: {worst_ratio_min:.2f}"
    )


if __name__ == "__main__":
    main()
