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

from .parsing import parse_query_answer
from .prompts import ATTRIBUTE_NAMES
from .regions import negated

__all__ = [
    "FOCUS_WORDS",
    "QUERY_ANSWER_PROMPT",
    "TOOLS_FOR",
    "QueryPlan",
    "plan_query",
    "query_answer",
]

QueryKind = Literal["yes_no", "attribute", "overall", "open"]
Polarity = Literal["defect", "virtue"]

#: Attribute → word patterns (regular expressions matched as whole words,
#: case-insensitive) by what a "yes" to a question built on them means: ``defect``
#: words name a problem ("noisy": yes = worse), ``virtue`` words a quality ("sharp":
#: yes = better), ``neutral`` words only name the attribute ("exposure").
FOCUS_WORDS: dict[str, dict[str, tuple[str, ...]]] = {
    "sharpness": {
        "defect": (
            r"blur(?:s|ry|red)?",
            r"unsharp",
            r"out[ -]of[ -]focus",
            r"defocus(?:ed)?",
            r"soft",
            r"smear(?:ed|y)?",
            r"fuzzy",
        ),
        "virtue": (r"sharp", r"crisp", r"in focus", r"well[ -]focus(?:ed|sed)"),
        "neutral": (r"sharpness", r"focus", r"details?"),
    },
    "noise": {
        "defect": (r"noise", r"noisy", r"grain(?:s|y)?", r"speckl(?:e|ed|es|y)"),
        "virtue": (r"noise[ -]free", r"noiseless", r"clean"),
        "neutral": (),
    },
    "artifacts": {
        "defect": (
            r"artifacts?",
            r"artefacts?",
            r"jpeg",
            r"compress(?:ed|ion)",
            r"block(?:y|ing|iness)",
            r"ringing",
            r"halos?",
            r"ghosting",
        ),
        "virtue": (),
        "neutral": (),
    },
    "exposure": {
        "defect": (
            r"over[ -]?exposed",
            r"under[ -]?exposed",
            r"too dark",
            r"too bright",
            r"blown(?: out)?",
            r"dark",
            r"dim",
            r"murky",
        ),
        "virtue": (r"well[ -]exposed", r"bright(?: enough)?", r"well[ -]lit"),
        "neutral": (r"exposure", r"exposed", r"lighting", r"lit", r"brightness"),
    },
    "colour": {
        "defect": (
            r"washed[ -]out",
            r"over[ -]?saturated",
            r"colou?r cast",
            r"dull",
            r"faded",
        ),
        "virtue": (r"vivid", r"colou?rful"),
        "neutral": (r"colou?rs?", r"saturation", r"white balance"),
    },
    "visibility": {
        "defect": (r"obscured", r"hidden", r"hard to see", r"invisible"),
        "virtue": (r"visible", r"recogni[sz]able"),
        "neutral": (r"visibility", r"saliency"),
    },
}

#: Words about the whole image's quality, by polarity ("Is this a bad photo?").
OVERALL_WORDS: dict[str, tuple[str, ...]] = {
    "defect": (r"bad", r"poor", r"low[ -]quality", r"ugly", r"unusable", r"terrible", r"awful"),
    "virtue": (
        r"good",
        r"great",
        r"fine",
        r"ok(?:ay)?",
        r"acceptable",
        r"usable",
        r"nice",
        r"high[ -]quality",
        r"right",
        r"correct",
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

Hit = tuple[int, int, str, str]  # start, end, attribute ("" for overall words), polarity


def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(r"(?<![\w'-])(?:" + pattern + r")(?![\w-])", re.I)


_PATTERNS: tuple[tuple[re.Pattern[str], str, str], ...] = (
    *(
        (_rx(p), attr, polarity)
        for attr, table in FOCUS_WORDS.items()
        for polarity, patterns in table.items()
        for p in patterns
    ),
    *((_rx(p), "", polarity) for polarity, patterns in OVERALL_WORDS.items() for p in patterns),
)


def _hits(text: str) -> list[Hit]:
    """Every attribute/overall word in ``text``; where matches overlap the longest wins
    ("noise-free" over "noise", "out of focus" over "focus")."""
    found = sorted(
        ((m.start(), m.end(), attr, pol) for rx, attr, pol in _PATTERNS for m in rx.finditer(text)),
        key=lambda h: (h[0], -(h[1] - h[0])),
    )
    out: list[Hit] = []
    for hit in found:
        if out and hit[0] < out[-1][1]:
            continue  # inside (or overlapping) a longer, earlier match
        out.append(hit)
    return out


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
    "please",
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
            aim = ""
            if self.region and "magnifier" in self.tools:
                aim = f" (aim the magnifier at the {self.region})"
            elif self.region and set(self.tools) - {"gamma_corrector", "magnifier"}:
                aim = f" (give the {self.region}'s bbox to measure only it)"
            lines.append(
                "Gather evidence for it with the tools before answering: "
                + ", ".join(self.tools)
                + aim
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


def _tokens(text: str) -> list[tuple[int, int, str]]:
    rx = re.compile(r"[a-z]+(?:'s)?(?:-[a-z]+)?", re.I)
    return [(m.start(), m.end(), m.group(0).lower()) for m in rx.finditer(text)]


def _region(text: str, hits: Sequence[Hit]) -> tuple[str | None, tuple[int, int]]:
    """The part of the image the question names, and its span: the first noun phrase
    after a determiner (up to four words, to a stop word) that is not the image
    itself, without the attribute words that end it ("Is the night sky noisy?" ->
    "night sky"). Attribute words that start it stay ("the dark areas") only when
    the question names another attribute elsewhere ("... noisy?")."""

    def attribute_at(start: int, end: int) -> bool:
        return any(h[0] < end and start < h[1] for h in hits)

    tokens = _tokens(text)
    for i, (_, _, word) in enumerate(tokens):
        if word not in _DETERMINERS:
            continue
        phrase: list[tuple[int, int, str]] = []
        for token in tokens[i + 1 : i + 5]:
            if token[2] in _STOP or token[2] in _DETERMINERS:
                break
            phrase.append(token)
        while phrase and attribute_at(phrase[-1][0], phrase[-1][1]):
            phrase.pop()
        if phrase and attribute_at(phrase[0][0], phrase[0][1]):
            p0, p1 = phrase[0][0], phrase[-1][1]
            other = any(h[2] and not (p0 <= h[0] and h[1] <= p1) for h in hits)
            while phrase and attribute_at(phrase[0][0], phrase[0][1]) and not other:
                phrase.pop(0)
        if phrase and phrase[0][2] not in _NOT_REGIONS and phrase[-1][2] not in _NOT_REGIONS:
            return " ".join(t[2] for t in phrase), (phrase[0][0], phrase[-1][1])
    return None, (0, 0)


def _focus(text: str) -> tuple[tuple[str, ...], Polarity | None, str | None]:
    """The attributes asked about (in order of first mention, words inside the region
    phrase left out), what a "yes" means (the first defect or virtue word, turned
    round by a negation before it: "free of noise" is a virtue) and the region."""
    hits = _hits(text)
    region, (r0, r1) = _region(text, hits)
    asked = [h for h in hits if not (r0 <= h[0] and h[1] <= r1 and r1 > r0)]
    focus = tuple(dict.fromkeys(h[2] for h in asked if h[2]))
    lead = _YES_NO.match(text)
    skip = lead.end() if lead else 0
    polarity: Polarity | None = None
    for start, _, _, pol in asked:
        if pol == "neutral":
            continue
        if negated(text, start, skip):  # "free of noise" asks about a virtue
            pol = "virtue" if pol == "defect" else "defect"
        polarity = cast(Polarity, pol)
        break
    return focus, polarity, region


def plan_query(
    query: str, enabled_tools: Iterable[str] = ("magnifier", "gamma_corrector")
) -> QueryPlan:
    """The plan for ``query`` with the tools a run has enabled."""
    text = " ".join(query.split())
    if not text:
        raise ValueError("the query is empty")
    focus, polarity, region = _focus(text)
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
        region=region,
        polarity=polarity if kind == "yes_no" else None,
        tools=tools,
        overall=overall,
    )


_VERDICT_RE = re.compile(r"^\W*(yes|no)\b", re.I)


def _stated_score(text: str, attribute: str) -> float | None:
    """The 1-5 score a query answer states for ``attribute`` as ``Name: x`` (or ``x/5``)
    at its start or after a separator; None when it states none."""
    names = {attribute, ATTRIBUTE_NAMES.get(attribute, attribute)}
    alternatives = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    rx = rf"(?:^|[;.,\n]\s*)(?:{alternatives})\s*:\s*(\d+(?:\.\d+)?)(?:\s*/\s*5)?"
    m = re.search(rx, text, re.I)
    if m is None:
        return None
    value = float(m.group(1))
    return value if 1.0 <= value <= 5.0 else None


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

    ``answer`` is the ``<query_answer>`` text ("" when it is missing, with a note);
    ``verdict`` ``yes``/``no`` for yes/no questions when the answer starts with
    one; ``score`` the focus attribute's 1–5 score: the ``<answer>`` score when the
    question asked for it instead of the overall score, else the number the query
    answer gives for it, else its attribute score.
    """
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
            stated = _stated_score(text or "", attr) if plan.kind == "attribute" else None
            focus_score = stated if stated is not None else attribute_scores.get(attr)
    out = {
        **plan.as_dict(),
        "answer": text or "",
        "verdict": verdict,
        "score": focus_score,
        "evidence": _evidence(plan, rubric, steps, attribute_scores),
    }
    return out, notes
