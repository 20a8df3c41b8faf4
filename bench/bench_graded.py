"""Graded-distortion benchmark (KADID-10K style): how monotone is each scorer as a
distortion grows?

Every (reference, kind) group is the clean reference (level 0) and five increasing
levels of one distortion (:mod:`tooliqa.eval.graded`). For each scorer -- ours (the
offline default: the classic backend through the graph, ``make_context(max_rounds=2)``)
and the classic metrics NIQE, BRISQUE, PIQE read as higher = better -- prints a table:
rows are the kinds and their mean, each cell ``mean Spearman(levels, -score) / share
of fully monotone groups``. Then seconds per image inside each scorer.

Reports on the HELD-OUT references by default (tune on ``--references tuning`` only).
Reads scikit-image's bundled photos and ../shared/data/calibration/ref in place.

    python bench/bench_graded.py [--references held-out|tuning|all] [--kinds jpeg darken]
        [--scorers ours niqe] [--json /tmp/graded.json] [--show-groups]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tooliqa.eval.graded import (
    ALL_KINDS,
    HELD_OUT_REFERENCES,
    TUNING_REFERENCES,
    GradedReport,
    GradedSet,
    Scorer,
    comparison_table,
    default_scorer,
    evaluate,
    metric_scorer,
)

SETS = {
    "held-out": HELD_OUT_REFERENCES,
    "tuning": TUNING_REFERENCES,
    "all": TUNING_REFERENCES + HELD_OUT_REFERENCES,
}
SCORERS = ("ours", "niqe", "brisque", "piqe")


def make_scorer(name: str) -> Scorer:
    return default_scorer(max_rounds=2) if name == "ours" else metric_scorer(name)


def generate(images: GradedSet, references: tuple[str, ...], kinds: list[str]) -> float:
    """Build every image once (the reports then share them); seconds taken."""
    t0 = time.perf_counter()
    for ref in references:
        try:
            images.reference(ref)
        except LookupError:
            continue  # evaluate() records why
        for kind in kinds:
            if images.applies(ref, kind):
                images.group(ref, kind)
    return time.perf_counter() - t0


def show_groups(report: GradedReport) -> None:
    print(f"\n{report.scorer}: groups not fully monotone (scores at levels 0..5)")
    for g in report.groups:
        if not g.fully_monotone:
            scores = " ".join(f"{s:8.3f}" for s in g.scores)
            print(f"  {g.kind:14s} {g.reference:16s} rho {g.spearman:+.2f}  {scores}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--references", choices=list(SETS), default="held-out")
    parser.add_argument("--kinds", nargs="+", choices=ALL_KINDS, default=list(ALL_KINDS))
    parser.add_argument("--scorers", nargs="+", choices=SCORERS, default=list(SCORERS))
    parser.add_argument("--json", type=Path, help="write every report's numbers here")
    parser.add_argument("--show-groups", action="store_true", help="list non-monotone groups")
    args = parser.parse_args()

    references = SETS[args.references]
    images = GradedSet()
    gen_s = generate(images, references, args.kinds)
    reports = {
        name: evaluate(make_scorer(name), references, args.kinds, images=images)
        for name in args.scorers
    }
    first = next(iter(reports.values()))
    used = [r for r in references if r not in first.skipped]
    print(f"references ({args.references}, {len(used)}): {', '.join(used)}")
    for key, why in first.skipped.items():
        print(f"  skipped {key}: {why}")
    print(f"groups per scorer: {len(first.groups)}, images per scorer: {first.images}")
    print(f"generated the distorted images in {gen_s:.1f} s")
    print("\ncell = mean Spearman(levels 0..5, -score) / share of fully monotone groups\n")
    print(comparison_table(reports))
    print()
    for name, r in reports.items():
        print(f"{name}: {r.seconds_per_image:.4f} s/image ({r.images} images)")
    if args.show_groups:
        for r in reports.values():
            show_groups(r)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "references": args.references,
            "reports": {n: r.as_dict() for n, r in reports.items()},
        }
        args.json.write_text(json.dumps(payload, indent=1), encoding="utf-8")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
