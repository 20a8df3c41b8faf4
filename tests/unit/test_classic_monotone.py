"""The offline default on photos it was not tuned on (the graded benchmark's held-out
scikit-image references): its score falls as a distortion grows, and its rubric says what
the measures show on a clean photo and on a strongly distorted one.

Kinds the default does not yet order are strict expected failures: each one turns into
an unexpected pass (a failure) the day the backend orders it, and must then become a
plain test. Figures per kind: ``python bench/bench_graded.py``.
"""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
from PIL import Image

from tooliqa.api import aassess, make_context
from tooliqa.eval.graded import KINDS, GradedSet, default_scorer, group_scores, spearman

#: Held-out references bundled with scikit-image (the TID2013 ones need ../shared).
PHOTOS = ("camera", "motorcycle_left", "gravel")

#: Kinds whose mean Spearman on PHOTOS is still under 0.9 (0.30-0.82; saturation -1).
NOT_YET_MONOTONE = frozenset(
    {"gaussian_blur", "motion_blur", "white_noise", "webp", "darken", "contrast",
     "saturation", "resample"}
)  # fmt: skip

_IMAGES = GradedSet()
_SCORER = default_scorer()


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param(
            k,
            marks=pytest.mark.xfail(strict=True, reason="the default does not order it yet")
            if k in NOT_YET_MONOTONE
            else (),
        )
        for k in KINDS
    ],
)
def test_the_score_falls_as_the_distortion_grows(kind):
    rhos = [
        spearman(group_scores(_SCORER, ref, kind, images=_IMAGES))
        for ref in PHOTOS
        if _IMAGES.applies(ref, kind)
    ]
    assert rhos and float(np.mean(rhos)) >= 0.9, rhos


def _rubric(rgb: np.ndarray) -> dict[str, str]:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    a = asyncio.run(aassess(buf.getvalue(), context=make_context(max_rounds=0)))
    return dict(a.rubric)


@pytest.mark.parametrize("ref", ["camera", "motorcycle_left"])
def test_the_rubric_says_what_the_measures_show(ref):
    clean = _rubric(_IMAGES.reference(ref))
    assert clean["noise"] == "none" and clean["artifacts"] == "none"
    assert clean["exposure"] in ("good", "excellent")
    strong = {kind: _rubric(_IMAGES.image(ref, kind, 5)) for kind in KINDS}
    assert strong["gaussian_blur"]["sharpness"] == "low"
    assert strong["motion_blur"]["sharpness"] == "low"
    assert strong["white_noise"]["noise"] == "severe"
    assert strong["jpeg"]["artifacts"] == "severe"
    assert strong["darken"]["exposure"] == "poor"
    assert strong["brighten"]["exposure"] == "poor"
