"""Regression guard: the calibrated classic score still tracks AGIQA-3K MOS.

Reads ``../shared/data/agiqa3k`` (relative to the repository root) in place and
skips when it is absent. Uses a fixed, evenly spaced subset of the ``test`` split
(the calibration itself was fitted on ``dev`` only).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import stats

from tooliqa.backends.classic_calibration import load_classic_calibration
from tooliqa.tools.measures import measure

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "agiqa3k"
N_IMAGES = 150
SRCC_FLOOR = 0.5

pytestmark = pytest.mark.data


def _subset() -> list[tuple[Path, float]]:
    with open(DATA / "labels.csv", newline="", encoding="utf-8") as fh:
        rows = sorted(
            (r for r in csv.DictReader(fh) if r["split"] == "test"), key=lambda r: r["name"]
        )
    pick = np.linspace(0, len(rows) - 1, N_IMAGES).round().astype(int)
    return [(DATA / "images" / rows[i]["name"], float(rows[i]["mos"])) for i in pick]


@pytest.mark.skipif(
    not (DATA / "labels.csv").exists(),
    reason="AGIQA-3K not found at ../shared/data/agiqa3k (relative to the repository root)",
)
def test_classic_score_correlates_with_mos_on_test_subset() -> None:
    calib = load_classic_calibration()
    scores, mos = [], []
    for path, m in _subset():
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
        s = calib.score(measure(rgb))
        assert 1.0 <= s <= 5.0
        scores.append(s)
        mos.append(m)
    rho = stats.spearmanr(scores, mos).statistic
    assert rho > SRCC_FLOOR, f"Spearman {rho:.3f} on {N_IMAGES} test images is below {SRCC_FLOOR}"
