"""Distortion regions of an Assessment: where the evidence says the image is damaged.

Three sources, one record ``{"box": [x1, y1, x2, y2], "label", "severity", "source"}``
with the box in original-image pixels (x2, y2 exclusive):

* ``magnifier``: each successful magnifier step's region, labelled with the first
  distortion the model's next reply names (:func:`distortion_label`), else
  ``"inspected"``; severity None;
* ``answer``: boxes the model lists in ``<regions>`` when ``Context.report_regions``
  asks for them, converted from its box convention;
* ``piqe``: the classic backend's PIQE distortion boxes, written the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from tooliqa.tools import ToolArgumentError, bbox_to_pixels

__all__ = [
    "DISTORTION_WORDS",
    "NEGATIONS",
    "answer_regions",
    "distortion_label",
    "magnifier_regions",
    "negated",
]

#: Label → words that name it (matched at word starts, case-insensitive).
DISTORTION_WORDS: dict[str, tuple[str, ...]] = {
    "blur": ("blur", "out of focus", "out-of-focus", "defocus", "soft", "smear", "motion blur"),
    "noise": ("noise", "noisy", "grain"),
    "artifact": ("artifact", "artefact", "block", "jpeg", "compression", "ringing", "ghost"),
    "exposure": ("exposure", "overexpos", "underexpos", "too dark", "too bright", "blown"),
    "colour": ("colour", "color", "saturat"),
}
_WORD_RE = {
    label: re.compile(r"\b(?:" + "|".join(re.escape(w) for w in words) + ")", re.I)
    for label, words in DISTORTION_WORDS.items()
}


#: Words that negate a word within the next three words, in the same clause ("no visible
#: noise"); also used by the query planner (:mod:`tooliqa.graph.query`).
NEGATIONS = (
    "no",
    "not",
    "without",
    "free of",
    "lack",
    "lacks",
    "lacking",
    "absence of",
    "neither",
    "nor",
    "never",
    "hardly",
)
_NEGATION_RE = re.compile(
    r"(?:\b(?:" + "|".join(re.escape(w) for w in NEGATIONS) + r")\b|n't)(?:\W+\w+){0,2}\W*$",
    re.I,
)
_FREE_RE = re.compile(r"\w*[- ]free\b", re.I)  # "noise-free", "blur free"


def negated(text: str, start: int, skip: int = 0) -> bool:
    """Whether a negation (:data:`NEGATIONS`, or "n't") comes at most three words before
    ``start``, in the same clause, not counting the first ``skip`` characters (a
    question's leading "Isn't").

    >>> negated("The sky is free of noise", 19), negated("Isn't it blurry?", 9, skip=5)
    (True, False)
    """
    clause = re.split(r"[.;:!?,]|\bbut\b", text[skip:start])[-1]
    return bool(_NEGATION_RE.search(clause))


def distortion_label(text: str) -> str | None:
    """The distortion named first in ``text`` and not negated ("no noise", "free of
    blur", "isn't blurry", "noise-free" do not count).

    >>> distortion_label("The zoomed patch shows heavy JPEG blocking and some noise.")
    'artifact'
    >>> distortion_label("No visible noise here, but the edges are soft.")
    'blur'
    """
    text = text or ""
    found = []
    for label, rx in _WORD_RE.items():
        for m in rx.finditer(text):
            if not negated(text, m.start()) and not _FREE_RE.match(text, m.end()):
                found.append((m.start(), label))
                break
    return min(found)[1] if found else None


def magnifier_regions(
    steps: Iterable[Mapping[str, Any]], replies: Iterable[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """One region per successful magnifier step; ``replies`` are ``{"round", "text"}``
    records of the model's replies after tool rounds (the first per round is used)."""
    after: dict[int, str] = {}
    for reply in replies:
        after.setdefault(int(reply["round"]), str(reply.get("text", "")))
    out = []
    for step in steps:
        if step.get("tool") != "magnifier" or not step.get("ok") or not step.get("box"):
            continue
        label = distortion_label(after.get(int(step["round"]), ""))
        out.append(
            {
                "box": [int(v) for v in step["box"]],
                "label": label or "inspected",
                "severity": None,
                "source": "magnifier",
            }
        )
    return out


def answer_regions(
    regions: Iterable[Mapping[str, Any]], width: int, height: int, convention: str
) -> tuple[list[dict[str, Any]], list[str]]:
    """Regions parsed from an answer (:func:`~tooliqa.graph.parsing.parse_regions`) with
    their boxes converted to pixels by the magnifier's conversion; unusable boxes are
    dropped with a note."""
    out: list[dict[str, Any]] = []
    notes: list[str] = []
    for region in regions:
        try:
            box = bbox_to_pixels(region["bbox"], width, height, convention, min_side=1)  # type: ignore[arg-type]
        except (ToolArgumentError, ValueError) as exc:
            notes.append(f"answer region dropped: {exc}")
            continue
        out.append(
            {
                "box": list(box),
                "label": region.get("label") or "distortion",
                "severity": region.get("severity"),
                "source": region.get("source", "answer"),
            }
        )
    return out, notes
