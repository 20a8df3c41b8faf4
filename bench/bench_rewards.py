"""Benchmark the GRPO rewards on one batch of trajectories.

Builds a batch of 1,024 trajectories (256 images x 4 generations, random scores on a 1-5
scale, about half with tool calls, a few unparseable) and prints median milliseconds for
fidelity, BATE, format and the three together, as TRL calls them (keyword columns in, lists
out). With ``--processes P`` > 1 it also times fidelity and BATE as rank 0 of P processes with
the default global scope: a fake gather appends P − 1 copies of the batch (other image ids), so
the comparison set is P times larger while the communication itself is not timed.
Run: python bench/bench_rewards.py
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
from _timing import median_ms

from tooliqa.training.rewards import (
    BATEReward,
    FidelityReward,
    FormatReward,
    Row,
    default_rewards,
    fidelity_scores,
)


def make_batch(images: int, generations: int, invalid: float, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    n = images * generations
    mos = np.repeat(rng.uniform(1.0, 5.0, images), generations)
    pred: list[float | None] = list(np.clip(mos + rng.normal(0.0, 0.8, n), 1.0, 5.0))
    for i in np.flatnonzero(rng.random(n) < invalid):
        pred[i] = None
    calls = np.where(rng.random(n) < 0.5, rng.integers(1, 3, n), 0)
    successes = np.minimum(calls, rng.integers(0, 3, n))
    protocol = [
        {
            "rubric_ok": bool(rng.random() < 0.95),
            "single_action": bool(rng.random() < 0.95),
            "answer_tagged": p is not None,
            "score_in_range": p is not None,
            "repaired": bool(rng.random() < 0.05),
        }
        for p in pred
    ]
    return {
        "prompts": ["prompt"] * n,
        "completions": ["completion"] * n,
        "completion_ids": [[0]] * n,
        "mos": list(mos),
        "group": [f"img{i:04d}" for i in np.repeat(np.arange(images), generations)],
        "pred_score": pred,
        "tool_calls": [int(c) for c in calls],
        "tool_successes": [int(s) for s in successes],
        "protocol": protocol,
        "log_metric": lambda name, value: None,
    }


class FakeRanks:
    """Rank 0 of ``processes`` processes: the others hold copies of the batch (new image ids)."""

    def __init__(self, cols: dict[str, Any], columns: tuple[str, ...], processes: int) -> None:
        self.others: list[Row] = [
            (*row[:2], f"rank{rank}/{row[2]}", *row[3:])
            for rank in range(1, processes)
            for row in zip(*(cols[c] for c in columns), strict=True)
        ]

    def __call__(self, rows: list[Row]) -> tuple[list[Row], int]:
        return rows + self.others, 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--invalid", type=float, default=0.03, help="share of unparseable scores")
    parser.add_argument("--repeat", type=int, default=21)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--processes", type=int, default=1, help="also time rank 0 of this many processes"
    )
    args = parser.parse_args()
    cols = make_batch(args.images, args.generations, args.invalid, args.seed)
    n = len(cols["pred_score"])
    fidelity, bate, fmt = FidelityReward(), BATEReward(), FormatReward()
    rewards = default_rewards()
    rows = {
        "fidelity_scores (pure numpy)": median_ms(
            lambda: fidelity_scores(cols["pred_score"], cols["mos"], cols["group"]), args.repeat
        ),
        "FidelityReward": median_ms(lambda: fidelity(**cols), args.repeat),
        "BATEReward": median_ms(lambda: bate(**cols), args.repeat),
        "FormatReward": median_ms(lambda: fmt(**cols), args.repeat),
        "all three (default_rewards)": median_ms(lambda: [r(**cols) for r in rewards], args.repeat),
    }
    if args.processes > 1:
        p = args.processes
        fid_p = FidelityReward(gather=FakeRanks(cols, ("pred_score", "mos", "group"), p))
        bate_columns = ("pred_score", "mos", "group", "tool_calls", "tool_successes")
        bate_p = BATEReward(gather=FakeRanks(cols, bate_columns, p))
        rows[f"FidelityReward, rank 0 of {p}"] = median_ms(lambda: fid_p(**cols), args.repeat)
        rows[f"BATEReward, rank 0 of {p}"] = median_ms(lambda: bate_p(**cols), args.repeat)
    invalid = sum(p is None for p in cols["pred_score"])
    tools = sum(c > 0 for c in cols["tool_calls"])
    print(
        f"{n} trajectories ({args.images} images x {args.generations}), {tools} with tool calls,"
        f" {invalid} unparseable; median of {args.repeat}"
    )
    for name, ms in rows.items():
        print(f"  {name:<30} {ms:9.2f} ms")


if __name__ == "__main__":
    main()
