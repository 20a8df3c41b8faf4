"""Benchmark the classic no-reference metrics (NIQE, BRISQUE, PIQE) and the simple
measurement tools (sharpness, noise, ...): speed, calibration and agreement with
human MOS.

For each chosen metric, single-threaded (set ``OMP_NUM_THREADS=1``):

* calibration: scores on the five 512x384 TID2013 images next to the official
  ones (``official_scores.csv``), and seconds per image (median of ``--repeat``
  calls per image, :func:`_timing.median_ms`; median over images);
* speed on the first ``--speed-images`` 512x512 AGIQA-3K images, the same way;
* Spearman (SRCC) of the metric read in its direction (``-x`` for lower-is-better
  ones) against MOS on the chosen AGIQA-3K splits, with seconds per image including JPEG decoding.
  Where a metric is undefined (NIQE on a flat image) the image is ranked worst,
  and the SRCC without those images is printed too.

``--csv-dir DIR`` writes the raw values as ``DIR/<metric>_agiqa.csv``
(``name,split,<metric>``; ``nan`` where undefined), the files
``scripts/fit_classic_iqa_logistic.py`` reads. ``--piqe-loop`` also times PIQE
against a plain per-block loop written straight from the algorithm (cross-check).

Reads ../shared/data in place.

    OMP_NUM_THREADS=1 python bench/bench_classic_metrics.py [--metrics niqe brisque piqe]
        [--split dev test] [--limit N] [--variant live] [--csv-dir /tmp]
"""

from __future__ import annotations

import argparse
import csv
import functools
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _timing import median_ms
from PIL import Image
from scipy import stats

from tooliqa.tools import piqe as P
from tooliqa.tools.brisque import VARIANTS, brisque
from tooliqa.tools.iqa_tools import IQA_METRICS
from tooliqa.tools.niqe import niqe

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
METRICS = tuple(IQA_METRICS)
CLASSIC = ("niqe", "brisque", "piqe")


def load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def metric_fn(name: str, variant: str) -> Callable[[np.ndarray], float]:
    if name == "brisque":
        return functools.partial(brisque, variant=variant)  # type: ignore[arg-type]
    return {"niqe": niqe, "piqe": P.piqe}.get(name) or IQA_METRICS[name].fn


def score_or_nan(fn: Callable[[np.ndarray], float], rgb: np.ndarray) -> float:
    """The metric, NaN where it is undefined (NIQE on a flat image)."""
    try:
        return float(fn(rgb))
    except ValueError:
        return math.nan


def seconds_per_image(
    fn: Callable[[np.ndarray], float], images: list[np.ndarray], repeat: int
) -> float:
    """Median over images of the median time per call, in seconds."""
    return statistics.median(median_ms(functools.partial(fn, a), repeat) for a in images) / 1000.0


def calibration(metrics: list[str], args: argparse.Namespace) -> None:
    folder = SHARED / "calibration"
    with open(folder / "official_scores.csv", newline="", encoding="utf-8") as fh:
        rows = {r[0]: r[1:] for r in csv.reader(fh)}
    names = rows["Method"]
    images = [load_rgb(folder / "dist" / n) for n in names]
    print("calibration (TID2013 512x384): ours / official")
    for metric in metrics:
        fn = metric_fn(metric, args.variant)
        official = rows.get(metric) if metric != "brisque" or args.variant == "live" else None
        for i, (name, img) in enumerate(zip(names, images, strict=True)):
            ours = fn(img)
            ref = (
                f"{float(official[i]):9.4f}  diff {ours - float(official[i]):+.4f}"
                if official
                else "—"
            )
            print(f"  {metric:8s} {name}  {ours:9.4f}  {ref}")
        sec = seconds_per_image(fn, images, args.repeat)
        print(f"  {metric:8s} 512x384: {sec:.4f} s/image")


def agiqa(metrics: list[str], args: argparse.Namespace) -> None:
    folder = SHARED / "agiqa3k"
    with open(folder / "labels.csv", newline="", encoding="utf-8") as fh:
        labels = list(csv.DictReader(fh))
    sample = [load_rgb(folder / "images" / r["name"]) for r in labels[: args.speed_images]]
    for metric in metrics:
        fn = metric_fn(metric, args.variant)
        sec = seconds_per_image(fn, sample, args.repeat)
        print(f"{metric}: AGIQA-3K 512x512 ({len(sample)} images): {sec:.4f} s/image")
        if metric == "piqe" and args.piqe_loop:
            loop = seconds_per_image(P.piqe_blockwise, sample, max(1, args.repeat // 3))
            agree = max(abs(P.piqe(a) - P.piqe_blockwise(a)) for a in sample)
            print(
                f"  per-block loop {loop:.4f} s/image (x{loop / sec:.1f}), max |diff| {agree:.2g}"
            )
        out: list[tuple[str, str, float]] = []
        for split in args.split:
            part = [r for r in labels if r["split"] == split]
            if args.limit:  # the file is sorted by generator: spread the subset over it
                part = part[:: max(1, len(part) // args.limit)][: args.limit]
            t0 = time.perf_counter()
            values = np.array(
                [score_or_nan(fn, load_rgb(folder / "images" / r["name"])) for r in part]
            )
            wall = time.perf_counter() - t0
            mos = np.array([float(r["mos"]) for r in part])
            bad = ~np.isfinite(values)
            sign = 1.0 if IQA_METRICS[metric].higher_is_better else -1.0
            srcc = stats.spearmanr(sign * np.where(bad, -sign * np.inf, values), mos).statistic
            shown = metric if sign > 0 else f"-{metric}"
            line = (
                f"  {split}: {len(part)} images, SRCC({shown}, MOS) {srcc:.4f}, "
                f"{wall / len(part):.4f} s/image incl. JPEG decode"
            )
            if bad.any():
                clean = stats.spearmanr(sign * values[~bad], mos[~bad]).statistic
                line += f" ({int(bad.sum())} undefined, ranked worst; {clean:.4f} without them)"
            print(line)
            out += [(r["name"], split, float(v)) for r, v in zip(part, values, strict=True)]
        if args.csv_dir:
            args.csv_dir.mkdir(parents=True, exist_ok=True)
            path = args.csv_dir / f"{metric}_agiqa.csv"
            with open(path, "w", newline="", encoding="utf-8") as fh:
                w = csv.writer(fh)
                w.writerow(["name", "split", metric])
                w.writerows((n, s, f"{v:.10g}") for n, s, v in out)
            print(f"  wrote {len(out)} rows to {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", nargs="+", choices=METRICS, default=list(METRICS))
    parser.add_argument("--split", nargs="*", choices=["dev", "test"], default=["dev", "test"])
    parser.add_argument("--limit", type=int, default=0, help="evenly spaced subset per split")
    parser.add_argument("--variant", default="live", choices=VARIANTS, help="BRISQUE model")
    parser.add_argument("--repeat", type=int, default=5, help="timed calls per image")
    parser.add_argument("--speed-images", type=int, default=10)
    parser.add_argument("--no-calibration", action="store_true")
    parser.add_argument("--piqe-loop", action="store_true", help="time PIQE's per-block loop too")
    parser.add_argument("--csv-dir", type=Path, help="write <metric>_agiqa.csv files here")
    args = parser.parse_args()
    if not (SHARED / "calibration").is_dir() or not (SHARED / "agiqa3k").is_dir():
        raise SystemExit(f"needs ../shared/data (calibration/, agiqa3k/) at {SHARED}")
    if not args.no_calibration:
        calibration([m for m in args.metrics if m in CLASSIC], args)  # official rows exist
    agiqa(args.metrics, args)


if __name__ == "__main__":
    main()
