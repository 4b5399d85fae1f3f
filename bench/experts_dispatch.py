"""Expert dispatch: all experts as one batched matmul against a loop over experts.

    .venv/bin/python bench/experts_dispatch.py [--reps 100] [--threads 1]

Forward + backward of one mixture block (dim 32, hidden 64: the anomaly network's shape) at
token counts from an MMAE batch (32) to a scoring pass (4096); the loop is the baseline, run
in the same process, interleaved with the batched path. Prints the batched/loop time ratio
and which path ``_dispatch`` takes at that size (``models.nn.experts.BATCHED_PAIRS``).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.nn import experts as X  # noqa: E402


def step_ms(block, x, path, reps: int) -> float:
    block._dispatch = path
    t0 = time.perf_counter()
    for _ in range(reps):
        y = block(x)
        (y.sum() + block.aux_loss).backward()
    return (time.perf_counter() - t0) / reps * 1e3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s); batched path up to {X.BATCHED_PAIRS} pairs")
    print(f"{'block':8s} {'tokens':>7s} {'pairs':>6s} {'loop ms':>8s} {'batched ms':>11s} {'ratio':>6s}  default")
    for kind in ("topk", "dynamic"):
        for n in (32, 256, 512, 1024, 2048, 4096):
            torch.manual_seed(0)
            block = X.build_ffn(X.ExpertsConfig(kind=kind), 32, 64)
            x = torch.randn(n, 32, requires_grad=True)
            block(x)
            pairs = int(block.last_stats["real_per_token"] * n + 0.5)
            loop, batched = block._dispatch_loop, block._dispatch_batched
            step_ms(block, x, loop, 5)
            step_ms(block, x, batched, 5)  # warm both
            t_loop, t_batched = [], []
            for _ in range(3):  # interleaved rounds; the median of each
                t_loop.append(step_ms(block, x, loop, args.reps))
                t_batched.append(step_ms(block, x, batched, args.reps))
            a, b = statistics.median(t_loop), statistics.median(t_batched)
            print(f"{kind:8s} {n:7d} {pairs:6d} {a:8.2f} {b:11.2f} {b / a:6.2f}  "
                  f"{'batched' if pairs <= X.BATCHED_PAIRS else 'loop'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
