"""Query-aware assessment: plan around a user's question, answer it with evidence.

With a query (``--query "Is the sky noisy?"``, ``assess(..., query=...)``) the
graph's ``plan`` node reads the question before the image is looked at and makes a
:class:`QueryPlan`:

* ``kind`` – ``yes_no`` ("Is the sky noisy?"), ``attribute`` ("How sharp is it?",
  "Rate only the sharpness"), ``overall`` ("Is this a good photo?") or ``open``;
* ``focus`` – the rubric attributes the question is about (keyword table
  :data:`FOCUS_WORDS`), ``region`` – the part of the image it names ("the sky");
* ``polarity`` – for yes/no questions, whether the question names a defect
  ("noisy", "blurry": *yes* means worse) or a virtue ("sharp", "well exposed");
* ``tools`` – the enabled tools that gather evidence for the focus
  (:data:`TOOLS_FOR`), best first;
* ``overall`` – False when the question asks for an attribute *instead of* the
  overall score ("rate only ...", "just the noise"): the ``<answer>`` then carries
  that attribute's 1–5 score and ``Assessment.query_answer["score_of"]`` names it.

The plan is rule-based: it costs no model call and works with any model, the
released Tool-IQA model included (its Appendix A prompts are kept; the plan is
added after them). The first turn carries the question and the plan
(:meth:`QueryPlan.instructions`); every answer-asking turn asks for
``<query_answer>...</query_answer>`` after ``</answer>``
(:meth:`QueryPlan.answer_request`). :func:`query_answer` turns the reply and the
run's evidence (the focus attributes' rubric lines, each tool step's result and
the attribute scores) into ``Assessment.query_answer``.

>>> p = plan_query("Is the sky noisy?", ("magnifier", "gamma_corrector"))
>>> (p.kind, p.focus, p.region, p.polarity, p.tools)
('yes_no', ('noise',), 'sky', 'defect', ('magnifier',))
>>> plan_query("rate only the sharpness").overall
False
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, cast

from .prompts import ATTRIBUTE_NAMES

__all__ = [
    "FOCUS_WORDS",
    "QUERY_ANSWER_PROMPT",
    "TOOLS_FOR",
    "QueryPlan",
    "parse_query_answer",
    "plan_query",
    "query_answer",
]

QueryKind = Literal["yes_no", "attribute", "overall", "open"]
Polarity = Literal["defect", "virtue"]

#: Attribute → (defect words, virtue words), matched at word starts, case-insensitive.
FOCUS_WORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "sharpness": (
        ("blur", "unsharp", "out of focus", "out-of-focus", "defocus", "soft", "smear"),
        ("sharp", "in focus", "crisp", "detail", "focus"),
    ),
    "noise": (("noise", "noisy", "grain", "speckl"), ("clean", "noise-free", "noiseless")),
    "artifacts": (
        ("artifact", "artefact", "jpeg", "compress", "block", "ringing", "halo", "ghost"),
        (),
    ),
    "exposure": (
        ("overexpos", "underexpos", "too dark", "too bright", "blown", "dark", "dim"),
        ("exposure", "exposed", "bright", "lighting", "lit"),
    ),
    "colour": (
        ("washed out", "oversaturat", "colour cast", "color cast", "dull", "faded"),
        ("colour", "color", "saturat", "vivid", "white balance"),
    ),
    "visibility": (
        ("obscured", "hidden", "hard to see"),
        ("subject", "visible", "visibility", "salien", "recognis", "recogniz"),
    ),
}

#: Attribute → the tools that gather evidence for it, best first (only enabled ones
#: end up in a plan).
TOOLS_FOR: dict[str, tuple[str, ...]] = {
    "sharpness": ("magnifier", "sharpness", "niqe"),
    "noise": ("magnifier", "noise", "brisque"),
    "artifacts": ("magnifier", "blockiness", "piqe"),
    "exposure": ("gamma_corrector", "exposure_error", "contrast"),
    "colour": ("colourfulness",),
    "visibility": ("gamma_corrector", "magnifier", "contrast"),
}
_OVERALL_TOOLS = ("magnifier", "gamma_corrector", "niqe", "brisque")

_WORDS: dict[str, tuple[tuple[re.Pattern[str], Polarity], ...]] = {
    attr: tuple(
        (re.compile(r"\b" + re.escape(w), re.I), polarity)
        for polarity, words in ((cast(Polarity, "defect"), bad), (cast(Polarity, "virtue"), good))
        for w in words
    )
    for attr, (bad, good) in FOCUS_WORDS.items()
}
_YES_NO = re.compile(
    r"^\s*(?:is|are|does|do|did|can|could|has|have|was|were|should|will|would|isn't|aren't"
    r"|doesn't|don't)\b",
    re.I,
)
_ONLY = re.compile(r"\b(?:only|just|solely|instead of the overall)\b", re.I)
_RATE = re.compile(
    r"\b(?:rate|score|grade|how (?:much|sharp|noisy|bright|dark|well|good|bad))", re.I
)
_OVERALL = re.compile(r"\b(?:overall|quality|good (?:photo|picture|image)|usable)\b", re.I)
_DETERMINERS = {"the", "this", "that", "these", "those", "her", "his", "their", "its", "my"}
_STOP = {
    "a",
    "an",
    "and",
    "appear",
    "appears",
    "are",
    "at",
    "be",
    "been",
    "enough",
    "for",
    "has",
    "have",
    "in",
    "is",
    "look",
    "looks",
    "of",
    "on",
    "or",
    "out",
    "seem",
    "seems",
    "so",
    "than",
    "to",
    "too",
    "very",
    "with",
}
_NOT_REGIONS = {
    "colors",
    "colours",
    "frame",
    "image",
    "one",
    "overall",
    "photo",
    "photograph",
    "picture",
    "quality",
    "scene",
    "shot",
    "whole",
}

#: Appended to every answer-asking turn when there is a query (this project's wording).
QUERY_ANSWER_PROMPT = """Also answer the user's question "{query}" after </answer>, citing the evidence (what you saw, the tool results):
<query_answer>{form}</query_answer>"""


@dataclass(frozen=True)
class QueryPlan:
    """How to go about a question (see the module docstring)."""

    query: str
    kind: QueryKind
    focus: tuple[str, ...]
    region: str | None
    polarity: Polarity | None
    tools: tuple[str, ...]
    overall: bool

    @property
    def score_of(self) -> str:
        """What ``<answer>`` rates: ``overall`` or the one attribute asked for instead."""
        return self.focus[0] if not self.overall and self.focus else "overall"

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["focus"] = list(self.focus)
        out["tools"] = list(self.tools)
        out["score_of"] = self.score_of
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QueryPlan:
        return cls(
            query=str(data["query"]),
            kind=data["kind"],
            focus=tuple(data.get("focus") or ()),
            region=data.get("region"),
            polarity=data.get("polarity"),
            tools=tuple(data.get("tools") or ()),
            overall=bool(data.get("overall", True)),
        )

    def _focus_names(self) -> str:
        return ", ".join(ATTRIBUTE_NAMES.get(a, a) for a in self.focus) or "overall quality"

    def instructions(self) -> str:
        """The plan, for the first turn (after the question)."""
        where = f" in the {self.region}" if self.region else ""
        lines = [f"Plan: the question is about {self._focus_names()}{where}."]
        if self.tools:
            lines.append(
                "Gather evidence for it with the tools before answering: "
                + ", ".join(self.tools)
                + (f" (aim the magnifier at the {self.region})" if self.region else "")
                + "."
            )
        if not self.overall:
            lines.append(
                f"The user wants the {self._focus_names()} rated INSTEAD of the overall "
                f"quality: your <answer> score is the {self._focus_names()} score (1.00-5.00)."
            )
        return "\n".join(lines)

    def answer_request(self) -> str:
        """Text appended to the answer-asking turns."""
        if self.kind == "yes_no":
            form = "Yes or No, then one sentence of evidence"
        elif self.kind == "attribute" and self.focus:
            scores = "; ".join(f"{ATTRIBUTE_NAMES.get(a, a)}: X.X" for a in self.focus)
            form = f"{scores}, then one sentence of evidence"
        else:
            form = "a short answer with its evidence"
        return QUERY_ANSWER_PROMPT.format(query=self.query, form=form)


def _focus(query: str) -> tuple[tuple[str, ...], Polarity | None]:
    """Attributes named (in order of first mention) and the polarity of the first."""
    found: list[tuple[int, str, Polarity]] = []
    for attr, patterns in _WORDS.items():
        hits = [(m.start(), pol) for rx, pol in patterns if (m := rx.search(query))]
        if hits:
            pos, pol = min(hits)
            found.append((pos, attr, pol))
    found.sort()
    polarity = found[0][2] if found else None
    return tuple(a for _, a, _ in found), polarity


def _names_attribute(word: str) -> bool:
    return any(rx.search(word) for patterns in _WORDS.values() for rx, _ in patterns)


def _region(query: str) -> str | None:
    """The first noun phrase after a determiner that is not the image itself nor an
    attribute word ("Is the night sky noisy?" -> "night sky")."""
    words = re.findall(r"[a-z]+(?:-[a-z]+)?", query.lower())
    for i, word in enumerate(words):
        if word not in _DETERMINERS:
            continue
        phrase: list[str] = []
        for w in words[i + 1 : i + 4]:
            if w in _STOP or w in _DETERMINERS or _names_attribute(w):
                break
            phrase.append(w)
        if phrase and phrase[0] not in _NOT_REGIONS and phrase[-1] not in _NOT_REGIONS:
            return " ".join(phrase)
    return None


def plan_query(
    query: str, enabled_tools: Iterable[str] = ("magnifier", "gamma_corrector")
) -> QueryPlan:
    """The plan for ``query`` with the tools a run has enabled."""
    text = " ".join(query.split())
    if not text:
        raise ValueError("the query is empty")
    focus, polarity = _focus(text)
    if _YES_NO.search(text) and not _RATE.search(text):
        kind: QueryKind = "yes_no"
    elif focus:
        kind = "attribute"
    elif _OVERALL.search(text) or _RATE.search(text):
        kind = "overall"
    else:
        kind = "open"
    if kind == "overall":
        focus = ()
    overall = not (kind == "attribute" and _ONLY.search(text) and len(focus) == 1)
    enabled = set(enabled_tools)
    wanted = [t for a in focus for t in TOOLS_FOR.get(a, ())] or list(_OVERALL_TOOLS)
    tools = tuple(dict.fromkeys(t for t in wanted if t in enabled))
    return QueryPlan(
        query=text,
        kind=kind,
        focus=focus,
        region=_region(text),
        polarity=polarity if kind == "yes_no" else None,
        tools=tools,
        overall=overall,
    )


_QA_RE = re.compile(r"<query_answer>(.*?)(?:</query_answer>|$)", re.S | re.I)
_VERDICT_RE = re.compile(r"^\W*(yes|no)\b", re.I)


def parse_query_answer(text: str) -> str | None:
    """The text of the last ``<query_answer>`` block, or None when there is none."""
    blocks = _QA_RE.findall(text or "")
    if not blocks:
        return None
    return " ".join(blocks[-1].split()) or None


def _evidence(
    plan: QueryPlan,
    rubric: Mapping[str, Mapping[str, Any]],
    steps: Sequence[Mapping[str, Any]],
    attribute_scores: Mapping[str, float],
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for attr in plan.focus or tuple(rubric):
        entry = rubric.get(attr)
        if entry and entry.get("level"):
            note = f" - {entry['note']}" if entry.get("note") else ""
            name = ATTRIBUTE_NAMES.get(attr, attr)
            out.append({"source": "rubric", "text": f"{name}: {entry['level']}{note}", "round": 0})
    for step in steps:
        if step.get("ok"):
            out.append(
                {
                    "source": str(step["tool"]),
                    "text": str(step.get("message", "")),
                    "round": int(step.get("round", 0)),
                }
            )
    for attr in plan.focus:
        if attr in attribute_scores:
            name = ATTRIBUTE_NAMES.get(attr, attr)
            out.append(
                {
                    "source": "attribute_score",
                    "text": f"{name}: {attribute_scores[attr]:.1f} / 5",
                    "round": None,
                }
            )
    return out


def query_answer(
    plan: QueryPlan,
    reply_text: str,
    *,
    score: float | None,
    rubric: Mapping[str, Mapping[str, Any]],
    steps: Sequence[Mapping[str, Any]],
    attribute_scores: Mapping[str, float],
) -> tuple[dict[str, Any], list[str]]:
    """``Assessment.query_answer`` from the final reply and the run's evidence, and notes.

    ``answer`` is the ``<query_answer>`` text (the rationale when it is missing, with a
    note); ``verdict`` ``yes``/``no`` for yes/no questions when the answer starts with
    one; ``score`` the focus attribute's 1–5 score: the ``<answer>`` score when the
    question asked for it instead of the overall score, else the number the query
    answer gives for it, else its attribute score.
    """
    from .parsing import parse_attribute_scores

    notes: list[str] = []
    text = parse_query_answer(reply_text)
    if text is None:
        notes.append("the answer did not answer the question (no <query_answer>)")
    verdict = None
    if plan.kind == "yes_no" and text:
        m = _VERDICT_RE.search(text)
        verdict = m.group(1).lower() if m else None
        if verdict is None:
            notes.append("the answer to the yes/no question starts with neither yes nor no")
    focus_score = None
    if plan.focus:
        attr = plan.focus[0]
        if not plan.overall:
            focus_score = score
        else:
            given, _ = parse_attribute_scores(f"<attributes>{text or ''}</attributes>")
            focus_score = given.get(attr, attribute_scores.get(attr))
    out = {
        **plan.as_dict(),
        "answer": text or "",
        "verdict": verdict,
        "score": focus_score,
        "evidence": _evidence(plan, rubric, steps, attribute_scores),
    }
    return out, notes
