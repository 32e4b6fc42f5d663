"""``readingroom phantoms|train|evaluate``: thin argument parsing over models/*."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Sequence

from readingroom.errors import ReadingRoomError

log = logging.getLogger(__name__)


def phantoms(argv: Sequence[str]) -> int:
    from models.phantoms import write_dataset

    p = argparse.ArgumentParser(prog="readingroom phantoms",
                                description="Write synthetic DICOM studies with ground truth and labels.csv.")
    p.add_argument("--task", choices=["ich", "cxr"], required=True)
    p.add_argument("--n", type=int, default=20, help="number of studies")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--size", type=int, default=None, help="matrix size (CT default 256, CXR default 1024)")
    p.add_argument("--real-fraction", type=float, default=0.1,
                   help="share of studies made by inserting lesions into the real pydicom-data images")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(list(argv))
    if args.n < 1:
        raise ReadingRoomError("--n must be at least 1")
    labels = write_dataset(args.task, args.n, args.seed, args.out, size=args.size,
                           real_fraction=args.real_fraction, progress=not args.quiet)
    print(f"wrote {args.n} {args.task} studies (SYNTHETIC) and {labels}")
    return 0


def train(argv: Sequence[str]) -> int:
    from models.train import main

    return main(argv)


def evaluate(argv: Sequence[str]) -> int:
    from models.evaluate import main

    return main(argv)
