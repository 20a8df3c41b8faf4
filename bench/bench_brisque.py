"""Benchmark BRISQUE on AGIQA-3K: seconds per image and Spearman against the MOS.

Reads ../shared/data/agiqa3k (labels.csv + images/), scores the chosen splits
with :func:`tooliqa.tools.brisque.brisque` in this one process (set
``OMP_NUM_THREADS=1`` for one thread), and prints per split the Spearman
correlation of ``-BRISQUE`` (lower BRISQUE is better) with the MOS, and the
time per image: the BRISQUE call alone (decoding excluded), wall median and
mean, and the median CPU time of the calling thread (steadier on a busy machine).
``--csv`` writes the raw values (name, split, brisque).

    OMP_NUM_THREADS=1 python bench/bench_brisque.py [--split dev test] [--variant live]
        [--limit N] [--csv /tmp/brisque_agiqa.csv]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import stats

from tooliqa.tools.brisque import VARIANTS, brisque

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "agiqa3k"


def run_split(
    rows: list[dict[str, str]], data: Path, variant: str
) -> tuple[list[float], list[float], list[float]]:
    """BRISQUE of each row's image, and the wall and CPU (this thread) seconds per call."""
    scores, wall, cpu = [], [], []
    for r in rows:
        with Image.open(data / "images" / r["name"]) as im:
            rgb = np.asarray(im.convert("RGB"))
        t0, c0 = time.perf_counter(), time.thread_time()
        scores.append(brisque(rgb, variant=variant))
        wall.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
    return scores, wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--split", nargs="+", default=["dev", "test"], choices=["dev", "test"])
    parser.add_argument("--variant", default="live", choices=VARIANTS)
    parser.add_argument("--limit", type=int, default=0, help="evenly spaced subset per split")
    parser.add_argument("--csv", type=Path, help="write name,split,brisque here")
    args = parser.parse_args()
    if not (args.data / "labels.csv").exists():
        raise SystemExit(f"AGIQA-3K not found at {args.data} (expected labels.csv and images/)")
    with open(args.data / "labels.csv", newline="", encoding="utf-8") as fh:
        labels = list(csv.DictReader(fh))
    out: list[tuple[str, str, float]] = []
    for split in args.split:
        rows = [r for r in labels if r["split"] == split]
        if args.limit:  # the file is sorted by generator: spread the subset over it
            rows = rows[:: max(1, len(rows) // args.limit)][: args.limit]
        scores, wall, cpu = run_split(rows, args.data, args.variant)
        srcc = stats.spearmanr([-s for s in scores], [float(r["mos"]) for r in rows]).statistic
        print(
            f"AGIQA-3K {split}: {len(rows)} images, variant={args.variant}: "
            f"SRCC(-BRISQUE, MOS) {srcc:.4f}; s/image wall median {statistics.median(wall):.4f} "
            f"mean {statistics.fmean(wall):.4f}, CPU median {statistics.median(cpu):.4f}"
        )
        out += [(r["name"], split, s) for r, s in zip(rows, scores, strict=True)]
    if args.csv:
        with open(args.csv, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["name", "split", "brisque"])
            w.writerows((n, sp, f"{s:.6f}") for n, sp, s in out)
        print(f"wrote {len(out)} rows to {args.csv}")


if __name__ == "__main__":
    main()
