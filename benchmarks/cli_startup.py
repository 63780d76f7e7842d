"""Start-up time of the ``nostride`` command: --help/--version must not import torch.

Best of N wall times (a fresh process each) of ``nostride --help``, ``--version``, ``train --help``,
next to ``python -c "import torch, torchvision"`` (what every command paid before the lazy
imports) and a bare ``python -c pass``, all in the same run; ratios are to the torch import.

    python benchmarks/cli_startup.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "nostride --help": [sys.executable, "-m", "nostride", "--help"],
    "nostride --version": [sys.executable, "-m", "nostride", "--version"],
    "nostride train --help": [sys.executable, "-m", "nostride", "train", "--help"],
    "import torch, torchvision": [sys.executable, "-c", "import torch, torchvision"],
}


def best_time(cmd: list[str], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per command; the best is kept (default 5)")
    args = parser.parse_args()
    times = {name: best_time(cmd, args.repeat) for name, cmd in COMMANDS.items()}
    ref = times["import torch, torchvision"]
    print(f"{'command':<28} {'best of ' + str(args.repeat):>10}  {'/ torch import':>14}")
    for name, t in times.items():
        print(f"{name:<28} {t:>9.3f}s  {t / ref:>14.3f}")


if __name__ == "__main__":
    main()
