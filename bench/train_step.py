"""Training-step benchmark: milliseconds per step of the CT network on one thread, in the
float32 contiguous layout of ich-ct 0.4.0 and before, and in the variants that led to
`readingroom train --precision bf16` (bfloat16 autocast on a channels-last layout).

A step is what the trainer does for each batch: forward pass of 32 slices (20 x 128 x 128, the
ich-ct input), BCE loss, backward pass and AdamW update. Inputs are random: the arithmetic
does not depend on them. Median of ``--steps`` after three warm-up steps.

Run it from the repository root::

    .venv/bin/python bench/train_step.py [--steps 15] [--threads 1]

The ICH trainer uses one thread (the other core generates phantoms), so one thread is the
figure that sets how many steps fit in the 30-minute budget. bfloat16 is fast on CPUs with
AVX512-BF16 or AMX; elsewhere torch emulates it and it can be slower than float32.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import logging
import statistics
import time

log = logging.getLogger(__name__)

VARIANTS = (("float32, contiguous (ich-ct 0.4.0 and before)", False, False),
            ("float32, channels-last", True, False),
            ("bfloat16 autocast, contiguous", False, True),
            ("bfloat16 autocast, channels-last (--precision bf16, ich-ct 0.5.0)", True, True))


def step_ms(channels_last: bool, bf16: bool, steps: int, batch: int = 32) -> float:
    import torch

    from models.networks import build

    torch.manual_seed(0)
    model = build("ich")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.rand(batch, 20, 128, 128)
    y = (torch.rand(batch, 1) > 0.5).float()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    times = []
    for _ in range(steps + 3):
        t = time.perf_counter()
        xb = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits, _ = model(xb)
        loss = loss_fn(logits.float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times[3:])


def main(argv: list[str] | None = None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"CT training step, batch 32, {args.threads} thread(s), torch {torch.__version__}, "
          f"CPU bf16 support: {torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()}")
    base = None
    for name, cl, bf16 in VARIANTS:
        ms = step_ms(cl, bf16, args.steps)
        base = base or ms
        print(f"  {name:68s} {ms:6.0f} ms/step  ({base / ms:.1f}x)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
