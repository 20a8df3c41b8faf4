"""Classic no-reference IQA measurements as tools: NIQE, BRISQUE, PIQE and the
classic backend's simple measures (sharpness, noise, blockiness, contrast,
colourfulness, exposure error).

A measurement tool returns numbers, not a view: the measure's raw value on the whole
ORIGINAL image (or on a region given as ``bbox``, in the magnifier's conventions) and
a 1–5 quality score from the five-parameter logistic of AgenticIQA's tool
normalisation::

    score = clip(b1 * (0.5 - 1 / (1 + exp(b2 * (x - b3)))) + b4 * x + b5, 1, 5)

with ``b1..b5`` fitted per measure on the AGIQA-3K ``dev`` split
(``data/classic_iqa_logistic.json``, written by
``scripts/fit_classic_iqa_logistic.py``, which records the fit quality and its
provenance). Each curve is monotone in the direction the measure is read
(:attr:`IqaMetric.higher_is_better`): NIQE, BRISQUE, PIQE, noise, blockiness and
exposure error are lower-is-better; sharpness, contrast and colourfulness
higher-is-better.

Where a metric is undefined (NIQE on a region under 96 x 96 pixels or without a
textured 96 x 96 patch, e.g. an all-black image) :func:`measure` raises
:class:`~tooliqa.tools.views.ToolArgumentError`; the registry turns that into a
failure message for the model, never a made-up score.

>>> 1.0 <= score_1_5("niqe", 3.0) <= 5.0 and score_1_5("niqe", 3.0) > score_1_5("niqe", 9.0)
True
"""

from __future__ import annotations

import functools
import importlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .views import BBoxConvention, ToolArgumentError, bbox_to_pixels, covering_crop

__all__ = [
    "IQA_METRICS",
    "LOGISTIC_FILE",
    "SIMPLE_METRICS",
    "IqaMetric",
    "Logistic",
    "MeasureArgs",
    "Measurement",
    "load_logistic",
    "logistic_5pl",
    "measure",
    "score_1_5",
]

LOGISTIC_FILE = Path(__file__).resolve().parent / "data" / "classic_iqa_logistic.json"
_SOURCE = "a 5-parameter logistic fitted to AGIQA-3K dev"


@dataclass(frozen=True)
class IqaMetric:
    """One measurement: where its implementation lives and how to describe it to the model.

    The implementing modules (scipy.ndimage, parameter files) are imported on first
    use, not when ``tooliqa.tools`` is imported: most runs never call them.
    """

    name: str
    title: str
    min_side: int  # the implementation's smallest image side (a test checks they agree)
    summary: str
    module: str = ""  # module of this package holding the function (default: ``name``)
    function: str = ""  # the function ``rgb -> float`` (default: ``name``)
    higher_is_better: bool = False

    @property
    def fn(self) -> Callable[[np.ndarray], float]:
        module = importlib.import_module(f".{self.module or self.name}", __package__)
        return getattr(module, self.function or self.name)

    @property
    def direction(self) -> str:
        return "higher is better" if self.higher_is_better else "lower is better"


#: The classic backend's measures (:mod:`.measures`) as tools, next to the three metrics.
SIMPLE_METRICS: tuple[str, ...] = (
    "sharpness",
    "noise",
    "blockiness",
    "contrast",
    "colourfulness",
    "exposure_error",
)


IQA_METRICS: dict[str, IqaMetric] = {
    "niqe": IqaMetric(
        "niqe",
        "NIQE",
        96,
        "NIQE (Natural Image Quality Evaluator): distance of the image's natural-scene "
        "statistics from those of pristine photographs; lower is better, about 2-4 for "
        "pristine photographs",
    ),
    "brisque": IqaMetric(
        "brisque",
        "BRISQUE",
        16,  # the default variant "live" is the one the logistic is fitted for
        "BRISQUE (Blind/Referenceless Image Spatial Quality Evaluator): an SVR on "
        "natural-scene statistics trained on LIVE distortions (blur, noise, JPEG); lower "
        "is better, about 0-100",
    ),
    "piqe": IqaMetric(
        "piqe",
        "PIQE",
        16,
        "PIQE (Perception based Image Quality Evaluator): share of 16x16 blocks with "
        "blocking artifacts or noise; lower is better, 0-100",
    ),
    "sharpness": IqaMetric(
        "sharpness",
        "Sharpness index",
        8,
        "Sharpness index: RMS of the Laplacian over the mean gradient, a "
        "contrast-independent measure of how fine the edges are; higher is sharper, "
        "about 1-3 for blurred and 4-8 for crisp images",
        module="measures",
        function="sharpness_index",
        higher_is_better=True,
    ),
    "noise": IqaMetric(
        "noise",
        "Noise sigma",
        8,
        "Noise sigma: Immerkaer's estimate of the luminance noise standard deviation in "
        "grey levels (0-255); lower is better, under 2 is clean, over 4.5 heavy",
        module="measures",
        function="noise_level",
    ),
    "blockiness": IqaMetric(
        "blockiness",
        "Blockiness",
        16,
        "Blockiness: luminance steps across 8x8 block boundaries over those inside "
        "blocks (JPEG blocking); lower is better, 1.0 means none, over 1.75 severe",
        module="measures",
        function="blockiness_level",
    ),
    "contrast": IqaMetric(
        "contrast",
        "RMS contrast",
        8,
        "RMS contrast: standard deviation of the luminance over 255; higher is more "
        "contrast, under 0.1 is flat",
        module="measures",
        function="rms_contrast",
        higher_is_better=True,
    ),
    "colourfulness": IqaMetric(
        "colourfulness",
        "Colourfulness",
        8,
        "Colourfulness (Hasler-Suesstrunk): spread and mean of the opponent colour "
        "channels; higher is more colourful, under 10 is dull, 30-90 natural",
        module="measures",
        function="colourfulness",
        higher_is_better=True,
    ),
    "exposure_error": IqaMetric(
        "exposure_error",
        "Exposure error",
        8,
        "Exposure error: distance of the mean luminance from 0.45 plus the fractions of "
        "clipped shadows and highlights; lower is better, 0 is balanced",
        module="measures",
        function="exposure_error",
    ),
}


@dataclass(frozen=True)
class Logistic:
    """A metric's fitted mapping (see ``data/classic_iqa_logistic.json``)."""

    metric: str
    beta: tuple[float, float, float, float, float]
    direction: str
    curve: str = "decreasing"
    agrees_with_meaning: bool = True
    """False where AGIQA-3K's ratings run against the measure's meaning (the curve then
    follows the ratings; the tool message says so)."""

    def __call__(self, raw: float) -> float:
        return score_from_beta(raw, self.beta)


def logistic_5pl(x: float, b1: float, b2: float, b3: float, b4: float, b5: float) -> float:
    """``b1 * (0.5 - 1 / (1 + exp(b2 * (x - b3)))) + b4 * x + b5`` (overflow-safe)."""
    t = b2 * (x - b3)
    sig = 1.0 / (1.0 + math.exp(-t)) if t >= 0 else math.exp(t) / (1.0 + math.exp(t))
    return b1 * (sig - 0.5) + b4 * x + b5


def score_from_beta(raw: float, beta: tuple[float, ...]) -> float:
    """The 5PL of ``raw`` clipped to [1, 5]."""
    b1, b2, b3, b4, b5 = beta
    return min(5.0, max(1.0, logistic_5pl(raw, b1, b2, b3, b4, b5)))


@functools.cache
def load_logistic(path: str | None = None) -> dict[str, Logistic]:
    """The fitted logistics, by metric name (cached)."""
    doc = json.loads(Path(path or LOGISTIC_FILE).read_text(encoding="utf-8"))
    out = {}
    for name, entry in doc["metrics"].items():
        b = tuple(float(v) for v in entry["beta"])
        if len(b) != 5:
            raise ValueError(f"{name}: expected 5 logistic parameters, got {len(b)}")
        out[name] = Logistic(
            name,
            (b[0], b[1], b[2], b[3], b[4]),
            str(entry["direction"]),
            str(entry.get("curve", "decreasing")),
            bool(entry.get("agrees_with_meaning", True)),
        )
    return out


def score_1_5(metric: str, raw: float) -> float:
    """1–5 quality score of a raw ``metric`` value (the fitted 5PL, clipped)."""
    return load_logistic()[metric](raw)


class MeasureArgs(BaseModel):
    """Arguments of a measurement tool: an optional region (whole image by default)."""

    model_config = ConfigDict(extra="ignore")
    bbox: list[float] | None = Field(
        default=None,
        description="Region to measure as [x1, y1, x2, y2]; omit for the whole image.",
        min_length=4,
        max_length=4,
    )


@dataclass(frozen=True)
class Measurement:
    """A metric measured on the image or a region of it."""

    metric: str
    raw: float
    score_1_5: float
    box: tuple[int, int, int, int]
    width: int
    height: int
    scale: int = 1
    """The image was measured reduced this many times (see ``DecodedImage.scale``)."""

    @property
    def message(self) -> str:
        m = IQA_METRICS[self.metric]
        x1, y1, x2, y2 = self.box
        size = f"{self.width}x{self.height}"
        decoded = f", decoded at 1/{self.scale} scale" if self.scale > 1 else ""
        if self.box == (0, 0, self.width, self.height):
            where = f"whole {size} image{decoded}"
        else:
            where = f"region x {x1}-{x2}, y {y1}-{y2} (pixels of the {size} image{decoded})"
        text = (
            f"{m.title} {self.raw:.2f} ({m.direction}) → {self.score_1_5:.2f} / 5 on "
            f"{_SOURCE}; measured on the {where}."
        )
        fit = load_logistic()[self.metric]
        if not fit.agrees_with_meaning:
            rated = "higher" if fit.curve == "increasing" else "lower"
            text += (
                f" Note: on AGIQA-3K, {rated} values went with better-rated images, so the "
                "1-5 score follows the ratings, not the measure's meaning."
            )
        return text

    def data(self) -> dict[str, Any]:
        return {"metric": self.metric, "raw": self.raw, "score_1_5": self.score_1_5}


def measure(
    rgb: np.ndarray,
    metric: str,
    bbox: object = None,
    convention: BBoxConvention = "rel1000",
    *,
    min_side: int = 28,
    scale: int = 1,
    size: tuple[int, int] | None = None,
) -> Measurement:
    """Measure ``metric`` on ``rgb`` (or on the ``bbox`` region of it).

    For an image decoded reduced ``scale`` times from ``size`` (see
    :func:`~tooliqa.tools.views.covering_crop`) the box is read and reported in the
    full image's pixels. Raises :class:`ToolArgumentError` with a message for the
    model when the region is invalid or too small for the metric, or the metric is
    undefined on it.
    """
    m = IQA_METRICS[metric]
    height, width = rgb.shape[:2]
    width, height = size or (width * scale, height * scale)
    if bbox is None:
        box = (0, 0, width, height)
        region = rgb
    else:
        need = max(min_side, m.min_side)
        try:
            box = bbox_to_pixels(bbox, width, height, convention, min_side=need)
        except ToolArgumentError as exc:
            raise ToolArgumentError(
                f"{m.title} needs a region of at least {need}x{need} px: {exc}"
            ) from None
        region, box = covering_crop(rgb, box, scale, (width, height))
    rh, rw = region.shape[:2]
    if rh < m.min_side or rw < m.min_side:
        raise ToolArgumentError(
            f"{m.title} needs at least {m.min_side}x{m.min_side} pixels, "
            f"the {'image' if bbox is None else 'region'} is {rw}x{rh}"
            + (f" at the 1/{scale} scale it was decoded at" if scale > 1 else "")
        )
    try:
        raw = float(m.fn(region))
    except ValueError as exc:
        raise ToolArgumentError(str(exc)) from None
    if not math.isfinite(raw):
        raise ToolArgumentError(
            f"{m.title} is undefined on this {'image' if bbox is None else 'region'}"
        )
    return Measurement(metric, raw, score_1_5(metric, raw), box, width, height, scale)
