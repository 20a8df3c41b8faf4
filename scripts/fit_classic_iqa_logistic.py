"""Fit the 5-parameter logistics that map the measurement tools to a 1–5 score.

The tools are NIQE, BRISQUE, PIQE and the classic backend's simple measures
(sharpness, noise, blockiness, contrast, colourfulness, exposure error; see
``tooliqa.tools.iqa_tools.IQA_METRICS``).

As in AgenticIQA (classic tools "normalised by a five-parameter logistic"), each
metric's raw value ``x`` is mapped to the quality scale with::

    score = clip(b1 * (0.5 - 1 / (1 + exp(b2 * (x - b3)))) + b4 * x + b5, 1, 5)

fitted by least squares to the AGIQA-3K quality MOS rescaled linearly from
``[0, 4.49]`` (the database's range) to ``[1, 5]``. Only the ``dev`` split is fitted;
``test`` is scored afterwards with the dev parameters, for reporting only.

Each curve is monotone. Its direction follows the sign of the measure's Spearman
correlation with the MOS on ``dev``: NIQE, BRISQUE and PIQE decrease, as their
meaning says; a simple measure whose AGIQA-3K correlation runs against its meaning
(``IqaMetric.higher_is_better``) gets the curve the data support, and the JSON
records ``"agrees_with_meaning": false`` so the tool can say so (on AI-generated
images, Immerkær's noise estimate rises with fine texture, which raters liked).
The fit uses :func:`tooliqa.eval.metrics.fit_logistic`, which is constrained to be
non-decreasing: on ``x`` for increasing curves, on ``-x`` for decreasing ones;
substituting back gives the same formula in ``x`` with ``b2 <= 0`` and ``b4 <= 0``.

Raw values come from ``--cache-dir`` (``<metric>_agiqa.csv``: ``name,split,<metric>``,
as written by ``bench/bench_classic_metrics.py --csv``) when it covers every image,
else they are computed (``--workers`` processes) and written there.

Usage::

    python scripts/fit_classic_iqa_logistic.py                  # fit, write JSON, print table
    python scripts/fit_classic_iqa_logistic.py --no-write
    python scripts/fit_classic_iqa_logistic.py --cache-dir /tmp --workers 2
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import math
import multiprocessing as mp
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "agiqa3k"
OUT_JSON = REPO / "tools" / "data" / "classic_iqa_logistic.json"
MOS_MIN, MOS_MAX = 0.0, 4.49  # AGIQA-3K quality MOS range (see the data README)
from tooliqa.tools.iqa_tools import IQA_METRICS  # noqa: E402

METRICS = tuple(IQA_METRICS)
FORMULA = "score = clip(b1 * (0.5 - 1 / (1 + exp(b2 * (x - b3)))) + b4 * x + b5, 1, 5)"

sys.path.insert(0, str(REPO))  # allow running from a checkout without installing

from tooliqa.eval.metrics import fit_logistic, logistic_5pl, plcc, rmse, srcc  # noqa: E402

DETAILS = {
    "niqe": "NIQE (Mittal et al. 2013), authors' pristine model, tooliqa.tools.niqe.niqe",
    "brisque": "BRISQUE (Mittal et al. 2012), variant 'live', tooliqa.tools.brisque.brisque",
    "piqe": "PIQE (Venkatanath et al. 2015), tooliqa.tools.piqe.piqe",
}


def function(metric: str) -> Callable[[np.ndarray], float]:
    return IQA_METRICS[metric].fn  # brisque: default variant "live" (the authors' release)


def details(metric: str) -> str:
    m = IQA_METRICS[metric]
    return DETAILS.get(metric) or (
        f"{m.title}, tooliqa.tools.{m.module or metric}.{m.function or metric}"
    )


def read_labels(data: Path) -> list[dict[str, str]]:
    with open(data / "labels.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    rows.sort(key=lambda r: r["name"])
    return rows


def _measure(job: tuple[str, str]) -> float:
    metric, path = job
    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"))
    try:
        return float(function(metric)(rgb))
    except ValueError:  # NIQE is undefined on flat (e.g. all-black) images
        return math.nan


def raw_values(
    metric: str, data: Path, rows: list[dict[str, str]], cache_dir: Path, workers: int
) -> np.ndarray:
    """Raw metric per row (NaN where undefined), from the cache CSV or computed."""
    cache = cache_dir / f"{metric}_agiqa.csv"
    known: dict[str, float] = {}
    if cache.exists():
        with open(cache, newline="", encoding="utf-8") as fh:
            known = {r["name"]: float(r[metric]) for r in csv.DictReader(fh)}
    missing = [r["name"] for r in rows if r["name"] not in known]
    if missing:
        print(f"  {metric}: computing {len(missing)} images with {workers} workers", flush=True)
        jobs = [(metric, str(data / "images" / n)) for n in missing]
        with mp.get_context("spawn").Pool(workers) as pool:
            values = pool.map(_measure, jobs, chunksize=8)
        known.update(zip(missing, values, strict=True))
        cache_dir.mkdir(parents=True, exist_ok=True)
        with open(cache, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["name", "split", metric])
            for r in rows:
                w.writerow([r["name"], r["split"], repr(known[r["name"]])])
    else:
        print(f"  {metric}: raw values from {cache}", flush=True)
    return np.array([known[r["name"]] for r in rows], dtype=float)


def to_target(mos: np.ndarray) -> np.ndarray:
    return 1.0 + 4.0 * (mos - MOS_MIN) / (MOS_MAX - MOS_MIN)


def score(x: np.ndarray, beta: list[float]) -> np.ndarray:
    return np.clip(logistic_5pl(x, *beta), 1.0, 5.0)


def fit_metric(x: np.ndarray, target: np.ndarray, higher_is_better: bool = False) -> list[float]:
    """5PL ``raw -> target``, monotone in the measure's direction."""
    fit = fit_logistic(x if higher_is_better else -x, target, params=5)
    if not fit.ok or fit.params is None:
        raise SystemExit(f"logistic fit failed: {fit.message}")
    b1, b2, b3, b4, b5 = fit.params
    if higher_is_better:
        return [b1, b2, b3, b4, b5]
    # f(-x) with the increasing fit: b1 (expit(-b2 (x + b3)) - 0.5) - b4 x + b5
    return [b1, -b2, -b3, -b4, b5]


def _quality(pred: np.ndarray, mos: np.ndarray, target: np.ndarray) -> dict[str, float | int]:
    return {
        "n": int(pred.size),
        "srcc": round(float(srcc(pred, mos) or math.nan), 4),
        "plcc": round(float(plcc(pred, target) or math.nan), 4),
        "rmse": round(float(rmse(pred, target) or math.nan), 4),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="AGIQA-3K folder")
    ap.add_argument("--cache-dir", type=Path, default=Path("/tmp"), help="raw-value CSVs")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=OUT_JSON)
    ap.add_argument("--no-write", action="store_true", help="do not write the JSON")
    args = ap.parse_args(argv)
    data = args.data.resolve()
    if not (data / "labels.csv").exists():
        raise SystemExit(f"AGIQA-3K not found at {data} (pass --data)")
    rows = read_labels(data)
    mos = np.array([float(r["mos"]) for r in rows])
    split = np.array([r["split"] for r in rows])
    names = np.array([r["name"] for r in rows])
    target = to_target(mos)

    metrics: dict[str, dict] = {}
    for metric in METRICS:
        x = raw_values(metric, data, rows, args.cache_dir, args.workers)
        finite = np.isfinite(x)
        dev, test = (split == "dev") & finite, (split == "test") & finite
        meaning_up = IQA_METRICS[metric].higher_is_better
        up = float(srcc(x[dev], mos[dev]) or 0.0) > 0
        beta = fit_metric(x[dev], target[dev], up)
        undefined = sorted(str(n) for n in names[~finite])
        metrics[metric] = {
            "description": details(metric),
            "direction": "higher_is_better" if meaning_up else "lower_is_better",
            "curve": "increasing" if up else "decreasing",
            "agrees_with_meaning": up == meaning_up,
            "beta": [float(b) for b in beta],
            "raw_range_dev": [float(x[dev].min()), float(x[dev].max())],
            "dev_fit": _quality(score(x[dev], beta), mos[dev], target[dev]),
            "dev_raw_srcc": round(float(srcc(x[dev], mos[dev]) or math.nan), 4),
            "test_report": {
                k: v
                for k, v in _quality(score(x[test], beta), mos[test], target[test]).items()
                if k in ("n", "srcc", "plcc")
            },
            "undefined_images": undefined,
        }
    for metric in metrics:
        metrics[metric]["variant"] = "live" if metric == "brisque" else None

    args_text = " ".join(argv if argv is not None else sys.argv[1:])
    doc = {
        "format_version": 1,
        "formula": FORMULA,
        "target": f"AGIQA-3K quality MOS rescaled linearly from [{MOS_MIN}, {MOS_MAX}] to [1, 5]",
        "fit": (
            "least squares with tooliqa.eval.metrics.fit_logistic(x, target, params=5) "
            "(monotone non-decreasing) where the dev SRCC of x is positive; else on -x, "
            "then b2, b3, b4 negated to express it in x"
        ),
        "srcc_note": "SRCC against the raw MOS; PLCC and RMSE of the clipped score against the target",
        "undefined": (
            "images where a metric is undefined (NIQE on flat, all-black images) are left "
            "out of the fit and the reports; the tool returns a failure message there, "
            "never a score"
        ),
        "metrics": metrics,
        "provenance": {
            "dataset": "AGIQA-3K (Li et al., IEEE TCSVT 2023)",
            "dataset_licence": "MIT",
            "fit_split": "dev",
            "report_split": "test (reporting only; nothing chosen from it)",
            "date": _dt.date.today().isoformat(),
            "script": "scripts/fit_classic_iqa_logistic.py",
            "command": f"python scripts/fit_classic_iqa_logistic.py {args_text}".rstrip(),
        },
    }

    print()
    print(
        f"{'metric':14s} {'b1':>9s} {'b2':>9s} {'b3':>9s} {'b4':>9s} {'b5':>8s}"
        f" | {'dev n':>5s} {'SRCC':>7s} {'PLCC':>7s} {'RMSE':>6s} | {'test n':>6s} {'SRCC':>7s} {'PLCC':>7s}"
    )
    for metric, m in metrics.items():
        b, d, t = m["beta"], m["dev_fit"], m["test_report"]
        print(
            f"{metric:14s} "
            + " ".join(f"{v:9.4g}" for v in b[:4])
            + f" {b[4]:8.4g} | {d['n']:5d} {d['srcc']:7.4f} {d['plcc']:7.4f} {d['rmse']:6.4f}"
            f" | {t['n']:6d} {t['srcc']:7.4f} {t['plcc']:7.4f}"
        )
        if m["undefined_images"]:
            print(f"  {metric} undefined on: {', '.join(m['undefined_images'])}")
    if not args.no_write:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        shown = args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out
        print(f"wrote {shown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
