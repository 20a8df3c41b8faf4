"""Benchmark NIQE (tools/niqe.py): speed and agreement with human MOS.

Prints, single-threaded: milliseconds per image (median and best of --repeat) on
the five 512x384 TID2013 calibration images and on the first --speed-images
512x512 AGIQA-3K images, with the calibration scores next to the official ones;
then Spearman (SRCC) of -NIQE (lower NIQE is better) against MOS on AGIQA-3K
test and, with --split all, dev. --csv writes the raw scores (name,split,niqe;
"nan" where NIQE is undefined, i.e. a flat image).

Reads ../shared/data in place. Set OMP_NUM_THREADS=1 for a one-thread figure.

    python bench/bench_niqe.py [--split test|all] [--csv /tmp/niqe_agiqa.csv]
"""

from __future__ import annotations

import argparse
import csv
import functools
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _timing import median_ms
from PIL import Image
from scipy import stats

from tooliqa.tools.niqe import niqe

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def score_or_nan(path: Path) -> float:
    """NIQE of an image file, NaN where it is undefined (a flat image)."""
    try:
        return niqe(load_rgb(path))
    except ValueError:
        return float("nan")


def best_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, (time.perf_counter() - t0) * 1000.0)
    return best


def speed(images: list[np.ndarray], repeat: int) -> tuple[float, float]:
    """Median over images of (median, best) milliseconds per call."""
    med = [median_ms(functools.partial(niqe, a), repeat) for a in images]
    best = [best_ms(functools.partial(niqe, a), repeat) for a in images]
    return float(np.median(med)), float(np.median(best))


def calibration(repeat: int) -> None:
    folder = SHARED / "calibration"
    with open(folder / "official_scores.csv", newline="", encoding="utf-8") as fh:
        rows = {r[0]: r[1:] for r in csv.reader(fh)}
    names = rows["Method"]
    images = [load_rgb(folder / "dist" / n) for n in names]
    print("calibration (TID2013 512x384): ours / official `niqe` (authors' MATLAB)")
    for name, img, ref in zip(names, images, rows["niqe"], strict=True):
        ours, off = niqe(img), float(ref)
        print(f"  {name}  {ours:9.4f}  {off:9.4f}  rel {100 * (ours - off) / off:+.3f}%")
    med, best = speed(images, repeat)
    print(f"  512x384: {med:.1f} ms/image median, {best:.1f} ms best")


def agiqa(args: argparse.Namespace) -> None:
    folder = SHARED / "agiqa3k"
    with open(folder / "labels.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    sample = [load_rgb(folder / "images" / r["name"]) for r in rows[: args.speed_images]]
    med, best = speed(sample, args.repeat)
    print(f"AGIQA-3K 512x512 ({len(sample)} images): {med:.1f} ms/image median, {best:.1f} ms best")
    splits = ["dev", "test"] if args.split == "all" else [args.split]
    out: list[tuple[str, str, float]] = []
    for split in splits:
        part = [r for r in rows if r["split"] == split]
        t0 = time.perf_counter()
        scores = [score_or_nan(folder / "images" / r["name"]) for r in part]
        wall = time.perf_counter() - t0
        niqe_v, mos = np.asarray(scores), np.asarray([float(r["mos"]) for r in part])
        flat = np.isnan(niqe_v)
        # NIQE is undefined on a flat image: rank it worst, and also report without it.
        srcc = stats.spearmanr(-np.where(flat, np.inf, niqe_v), mos).statistic
        srcc_def = stats.spearmanr(-niqe_v[~flat], mos[~flat]).statistic
        print(
            f"  {split}: {len(part)} images, SRCC(-NIQE, MOS) {srcc:.4f} "
            f"({int(flat.sum())} undefined, ranked worst; {srcc_def:.4f} without them), "
            f"{1000 * wall / len(part):.1f} ms/image incl. JPEG decode"
        )
        out += [(r["name"], split, s) for r, s in zip(part, scores, strict=True)]
    if args.csv:
        with open(args.csv, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["name", "split", "niqe"])
            w.writerows((n, s, f"{v:.10g}") for n, s, v in out)
        print(f"  wrote {len(out)} scores to {args.csv}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--split", choices=["test", "dev", "all"], default="test")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--speed-images", type=int, default=10)
    parser.add_argument("--csv", type=Path, default=None)
    args = parser.parse_args()
    if not (SHARED / "calibration").is_dir() or not (SHARED / "agiqa3k").is_dir():
        raise SystemExit(f"needs ../shared/data (calibration/, agiqa3k/) at {SHARED}")
    calibration(args.repeat)
    agiqa(args)


if __name__ == "__main__":
    main()
