"""Calibration of the classic (hand-crafted measures) scorer.

Loads ``tooliqa/data/classic_calibration.json`` – written by
``scripts/fit_classic_calibration.py`` from the ``dev`` split of AGIQA-3K only –
and turns :class:`~tooliqa.tools.measures.Measurements` into a quality index (on
the AGIQA-3K MOS scale) and a 1–5 score.

The model is additive, so every score can be explained feature by feature::

    z_i   = clip((x_i - mean_i) / std_i, -clip, clip)
    q_i   = (z_i**2 - square_mean_i) / square_std_i
    c_i   = weights_i * z_i + square_weights_i * q_i          (contribution)
    index = intercept + sum_i c_i
    score = 1 + 4 / (1 + exp(-(index - centre) / scale))      (scale > 0)

where ``x = feature_vector(measurements)``. The score is strictly increasing in
the index and lies in [1, 5].

Distortion detectors then can only lower it: each names one transformed feature, a side
(``above`` or ``below``), a knot, a weight and a cap, and takes
``weight * min(cap, max(0, x - knot))`` (``below``: ``knot - x``) score points off,
never going under 1. They fire outside the range of AI-generated images (AGIQA-3K keeps
its SRCC) and order natural photos under heavy noise, blur and colour loss.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from types import MappingProxyType
from typing import Any

import numpy as np

from tooliqa.tools.measures import FEATURE_NAMES, Measurements, feature_vector

__all__ = ["ClassicCalibration", "Detector", "load_classic_calibration"]

_RESOURCE = "classic_calibration.json"


def _floats(doc: Mapping[str, Any], key: str, n: int) -> tuple[float, ...]:
    vals = tuple(float(v) for v in doc.get(key, [0.0] * n))
    if len(vals) != n or not all(math.isfinite(v) for v in vals):
        raise ValueError(f"classic calibration: {key!r} must hold {n} finite numbers")
    return vals


@dataclass(frozen=True)
class Detector:
    """A penalty on one feature past a knot (see the module docstring)."""

    feature: str
    side: str
    knot: float
    weight: float
    cap: float
    label: str = ""

    def penalty(self, x: float) -> float:
        past = x - self.knot if self.side == "above" else self.knot - x
        return self.weight * min(self.cap, max(0.0, past))

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Detector:
        feature, side = str(doc["feature"]), str(doc["side"])
        if feature not in FEATURE_NAMES:
            raise ValueError(f"classic calibration: detector on unknown feature {feature!r}")
        if side not in ("above", "below"):
            raise ValueError("classic calibration: a detector's side is 'above' or 'below'")
        knot, weight, cap = float(doc["knot"]), float(doc["weight"]), float(doc["cap"])
        if not (math.isfinite(knot) and weight >= 0 and cap >= 0 and math.isfinite(cap)):
            raise ValueError(
                "classic calibration: a detector needs a finite knot and cap >= 0, weight >= 0"
            )
        return cls(feature, side, knot, weight, cap, str(doc.get("label", feature)))


@dataclass(frozen=True)
class ClassicCalibration:
    """Fitted additive model from hand-crafted measures to a 1–5 quality score."""

    feature_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    weights: tuple[float, ...]
    intercept: float
    clip: float = math.inf
    square_mean: tuple[float, ...] = ()
    square_std: tuple[float, ...] = ()
    square_weights: tuple[float, ...] = ()
    map_centre: float = 2.0
    map_scale: float = 1.0
    detectors: tuple[Detector, ...] = ()
    recipe_version: str = ""
    provenance: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)

    # -- construction -------------------------------------------------------

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> ClassicCalibration:
        names = tuple(str(n) for n in doc["feature_names"])
        if names != FEATURE_NAMES:
            missing = sorted(set(names) ^ set(FEATURE_NAMES))
            raise ValueError(
                "classic calibration was fitted on a different feature set "
                f"(differences: {missing[:8]}); rerun scripts/fit_classic_calibration.py"
            )
        n = len(names)
        has_sq = "square_weights" in doc
        m = doc["map"]
        if m.get("form") != "logistic":
            raise ValueError(f"classic calibration: unsupported map form {m.get('form')!r}")
        scale = float(m["scale"])
        if not (scale > 0 and math.isfinite(scale)):
            raise ValueError("classic calibration: the map scale must be positive")
        std = _floats(doc, "std", n)
        if any(s <= 0 for s in std):
            raise ValueError("classic calibration: standard deviations must be positive")
        return cls(
            feature_names=names,
            mean=_floats(doc, "mean", n),
            std=std,
            weights=_floats(doc, "weights", n),
            intercept=float(doc["intercept"]),
            clip=float(doc.get("clip", math.inf)),
            square_mean=_floats(doc, "square_mean", n) if has_sq else (0.0,) * n,
            square_std=_floats(doc, "square_std", n) if has_sq else (1.0,) * n,
            square_weights=_floats(doc, "square_weights", n) if has_sq else (0.0,) * n,
            map_centre=float(m["centre"]),
            map_scale=scale,
            detectors=tuple(Detector.from_dict(d) for d in doc.get("detectors", ())),
            recipe_version=str(doc.get("recipe_version", "")),
            provenance=MappingProxyType(dict(doc.get("provenance", {}))),
        )

    @classmethod
    def load(cls) -> ClassicCalibration:
        """The calibration shipped as package data (cached)."""
        return load_classic_calibration()

    # -- evaluation ---------------------------------------------------------

    def _terms(self, m: Measurements) -> np.ndarray:
        """Per-feature contributions ``c_i`` as an array (order ``feature_names``)."""
        x = feature_vector(m)
        z = np.clip((x - np.asarray(self.mean)) / np.asarray(self.std), -self.clip, self.clip)
        q = (z * z - np.asarray(self.square_mean)) / np.asarray(self.square_std)
        c = np.asarray(self.weights) * z + np.asarray(self.square_weights) * q
        return np.nan_to_num(c, nan=0.0, posinf=0.0, neginf=0.0)

    def index(self, m: Measurements) -> float:
        """Quality index: predicted AGIQA-3K MOS (higher is better; unbounded)."""
        return float(self.intercept + self._terms(m).sum())

    def score_from_index(self, index: float) -> float:
        """Strictly increasing logistic map of the index onto [1, 5]."""
        t = (float(index) - self.map_centre) / self.map_scale
        t = min(max(t, -700.0), 700.0)
        return float(min(5.0, max(1.0, 1.0 + 4.0 / (1.0 + math.exp(-t)))))

    def penalties(self, m: Measurements) -> dict[str, float]:
        """Score points each distortion detector takes off (label -> points, all >= 0)."""
        if not self.detectors:
            return {}
        x = dict(zip(FEATURE_NAMES, feature_vector(m), strict=True))
        out: dict[str, float] = {}
        for d in self.detectors:
            out[d.label] = out.get(d.label, 0.0) + d.penalty(float(x[d.feature]))
        return out

    def score(self, m: Measurements) -> float:
        """Quality score in [1, 5]: the map of :meth:`index`, less the detectors'
        :meth:`penalties` (which can only lower it)."""
        return max(1.0, self.score_from_index(self.index(m)) - sum(self.penalties(m).values()))

    def contributions(self, m: Measurements) -> dict[str, float]:
        """Each feature's additive share of the index (they sum to ``index - intercept``).

        Positive values push the score up relative to an average dev image.
        """
        return {n: float(v) for n, v in zip(self.feature_names, self._terms(m), strict=True)}


@lru_cache(maxsize=1)
def load_classic_calibration() -> ClassicCalibration:
    """Read the packaged ``tooliqa/data/classic_calibration.json``."""
    text = (
        resources.files("tooliqa").joinpath("data").joinpath(_RESOURCE).read_text(encoding="utf-8")
    )
    return ClassicCalibration.from_dict(json.loads(text))
