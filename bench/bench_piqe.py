"""Benchmark PIQE (tools/piqe.py): speed, calibration and agreement with human MOS.

Prints, single-threaded: milliseconds per image (median and best of --repeat) on
the five 512x384 TID2013 calibration images and on the first --speed-images
512x512 AGIQA-3K images, next to a plain per-block loop written straight from the
algorithm (same machine, same moment: the machine load moves absolute figures a
lot); the calibration scores next to the official ones; then Spearman (SRCC) of
-PIQE (lower PIQE is better) against MOS on AGIQA-3K test and, with --split all,
dev. --csv writes the raw scores (name,split,piqe).

Reads ../shared/data in place. Set OMP_NUM_THREADS=1 for a one-thread figure.

    python bench/bench_piqe.py [--split test|all] [--csv /tmp/piqe_agiqa.csv]
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
from _timing import median_ms
from PIL import Image
from scipy import stats

from tooliqa.tools import piqe as P

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def best_ms(fn, repeat: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, (time.perf_counter() - t0) * 1000.0)
    return best


def loop_piqe(image: np.ndarray) -> float:
    """The same algorithm block by block, in a Python loop (speed baseline, cross-check)."""
    y, integral = P._grey(image)
    h, w = y.shape
    rows, cols = -(-h // 16), -(-w // 16)
    y = np.pad(y, ((0, rows * 16 - h), (0, cols * 16 - w)), mode="symmetric")
    z = P._mscn(P._stretch(y, integral))
    total, active = 0.0, 0
    for i in range(rows):
        for j in range(cols):
            b = z[16 * i : 16 * i + 16, 16 * j : 16 * j + 16]
            v = b.var(ddof=1)
            if v <= 0.1:
                continue
            active += 1
            edges = (b[0], b[-1], b[:, 0], b[:, -1])
            art = any(e[k : k + 6].std(ddof=1) < 0.1 for e in edges for k in range(11))
            sur = np.delete(b, [7, 9], axis=1).std(ddof=1)
            ratio = b[:, 7:9].std(ddof=1) / sur if sur > 0 else 0.0
            sig = np.sqrt(v)
            noisy = sig > 2 * abs(sig - ratio) / max(sig, ratio)
            total += art * (1 - v) + noisy * v
    return 100.0 * (total + 1) / (active + 1)


def speed(images: list[np.ndarray], repeat: int) -> str:
    med = np.median([median_ms(lambda a=a: P.piqe(a), repeat) for a in images])
    best = np.median([best_ms(lambda a=a: P.piqe(a), repeat) for a in images])
    loop = np.median([median_ms(lambda a=a: loop_piqe(a), max(1, repeat // 3)) for a in images])
    agree = max(abs(P.piqe(a) - loop_piqe(a)) for a in images)
    return (
        f"{med:.1f} ms/image median, {best:.1f} ms best; per-block loop {loop:.1f} ms "
        f"(x{loop / med:.1f}), max |difference| {agree:.2g}"
    )


def calibration(repeat: int) -> None:
    folder = SHARED / "calibration"
    with open(folder / "official_scores.csv", newline="", encoding="utf-8") as fh:
        rows = {r[0]: r[1:] for r in csv.reader(fh)}
    names = rows["Method"]
    images = [load_rgb(folder / "dist" / n) for n in names]
    print("calibration (TID2013 512x384): ours / official `piqe` (MATLAB)")
    for name, img, ref in zip(names, images, rows["piqe"], strict=True):
        res = P.piqe_maps(img)
        print(
            f"  {name}  {res.score:9.4f}  {float(ref):9.2f}  diff {res.score - float(ref):+.4f}"
            f"  ({res.n_active} active, {int(res.artifact.sum())} artifact, "
            f"{int(res.noise.sum())} noise blocks)"
        )
    print(f"  512x384: {speed(images, repeat)}")


def agiqa(args: argparse.Namespace) -> None:
    folder = SHARED / "agiqa3k"
    with open(folder / "labels.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    sample = [load_rgb(folder / "images" / r["name"]) for r in rows[: args.speed_images]]
    print(f"AGIQA-3K 512x512 ({len(sample)} images): {speed(sample, args.repeat)}")
    splits = ["dev", "test"] if args.split == "all" else [args.split]
    out: list[tuple[str, str, float]] = []
    for split in splits:
        part = [r for r in rows if r["split"] == split]
        t0 = time.perf_counter()
        scores = np.array([P.piqe(load_rgb(folder / "images" / r["name"])) for r in part])
        wall = time.perf_counter() - t0
        mos = [float(r["mos"]) for r in part]
        srcc = stats.spearmanr(-scores, mos).statistic
        print(
            f"  {split}: {len(part)} images, SRCC(-PIQE, MOS) {srcc:.4f}, "
            f"PIQE range {scores.min():.2f}-{scores.max():.2f}, "
            f"{1000 * wall / len(part):.1f} ms/image incl. JPEG decode"
        )
        out += [(r["name"], split, float(s)) for r, s in zip(part, scores, strict=True)]
    if args.csv:
        with open(args.csv, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["name", "split", "piqe"])
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
