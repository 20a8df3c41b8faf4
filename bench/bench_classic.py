"""Benchmark the embedded classic backend through the full graph on AGIQA-3K.

Reads ../shared/data/agiqa3k (labels.csv + images/), assesses the chosen split
(default: test, 1,025 images) with tools enabled, and prints Spearman (SRCC)
and Pearson (PLCC, on raw scores, no logistic fit) against the human MOS,
seconds per image, tool usage and failures.

    python bench/bench_classic.py [--split test] [--limit N] [--concurrency 2]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import statistics
import time
from collections import Counter
from pathlib import Path

from scipy import stats

from tooliqa.api import assess_many, make_context

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "agiqa3k"


async def run(args: argparse.Namespace) -> None:
    with open(args.data / "labels.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    rows = [r for r in rows if r["split"] == args.split]
    if args.limit:  # an evenly spaced subset: the file is sorted by generator
        rows = rows[:: max(1, len(rows) // args.limit)][: args.limit]
    paths = [args.data / "images" / r["name"] for r in rows]
    mos = [float(r["mos"]) for r in rows]
    ctx = make_context(max_rounds=args.max_rounds)
    scores: list[float | None] = [None] * len(rows)
    per_image, tools, failures = [], Counter(), 0
    t0 = time.perf_counter()
    async for i, a in assess_many(paths, context=ctx, concurrency=args.concurrency):
        scores[i] = a.score
        failures += a.score is None
        per_image.append(a.timings.get("total_s", 0.0))
        tools.update(s.tool for s in a.steps)
    wall = time.perf_counter() - t0
    pairs = [(s, m) for s, m in zip(scores, mos, strict=True) if s is not None]
    pred, truth = [p for p, _ in pairs], [t for _, t in pairs]
    srcc = stats.spearmanr(pred, truth).statistic
    plcc = stats.pearsonr(pred, truth).statistic
    print(
        f"AGIQA-3K {args.split}: {len(rows)} images, {failures} failed, backend=classic, max_rounds={args.max_rounds}"
    )
    print(f"  SRCC {srcc:.4f}   PLCC (raw scores) {plcc:.4f}")
    print(
        f"  wall {wall:.1f} s with concurrency {args.concurrency}: {wall / len(rows):.4f} s/image, "
        f"{len(rows) / wall:.2f} images/s"
    )
    print(f"  per-image graph time: median {statistics.median(per_image):.4f} s")
    used = sum(tools.values())
    print(f"  tool calls: {used} ({used / len(rows):.2f} per image) {dict(tools)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--split", default="test", choices=["dev", "test"])
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--max-rounds", type=int, default=2)
    args = parser.parse_args()
    if not (args.data / "labels.csv").exists():
        raise SystemExit(f"AGIQA-3K not found at {args.data} (expected labels.csv and images/)")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
