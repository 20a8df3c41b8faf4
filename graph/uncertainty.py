"""Score uncertainty: a distribution over the 1-5 score, from token logprobs or from samples.

Pure functions (no LangChain): the graph hands in the answer message's OpenAI
``logprobs.content`` list (``[{token, logprob, top_logprobs: [{token, logprob}]}]``),
or the scores of N sampled trajectories.

**From logprobs** (Q-Align, Wu et al. 2024, "Q-Align: teaching LMMs for visual
rating via discrete text-defined levels": the score is the probability-weighted
expectation over the rating tokens; Zoom-IQA reads the same distribution).
The score written as ``D0.D1D2...`` is located among the answer's tokens; each
digit must be a token of its own (Qwen tokenisers split numbers digit by digit).
At every digit position the alternatives in ``top_logprobs`` (and the sampled
token) that are digits of the allowed set -- ``1``..``5`` for the integer digit,
``0``..``9`` for the decimals -- are renormalised into a distribution ``p_k``.
Then, treating the positions as independent (each later digit's distribution is
the one the model gave after the digits it actually wrote)::

    E[S]   = E[D0] + sum_k 10^-k E[Dk]
    Var[S] = Var[D0] + sum_k 10^-2k Var[Dk]

The mean is clipped to [1, 5]; the interval is the 90% normal approximation
``E[S] +- 1.645 sqrt(Var[S])`` clipped to [1, 5]. ``mass`` reports how much
probability the allowed digits held before renormalising (the lowest position).

**From samples**: the mean of the N scores, the sample standard deviation
(ddof=1) and a 90% *prediction* interval from the t-distribution,
``mean +- t_{0.95, N-1} s sqrt(1 + 1/N)``, clipped to [1, 5]: like the logprob
interval it says where the model's score falls, not where the mean is.

>>> d = from_samples([3.0, 3.5, 4.0])
>>> (d.mean, round(d.std, 4), d.source, d.n)
(3.5, 0.5, 'samples', 3)
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "LEVEL",
    "ScoreDistribution",
    "Unavailable",
    "from_logprobs",
    "from_samples",
    "logprob_content",
]

#: Coverage of the reported interval.
LEVEL = 0.9
_Z = 1.6448536269514722  # standard normal quantile at 0.95
SCORE_MIN, SCORE_MAX = 1.0, 5.0
_NUMBER_RE = re.compile(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
_INT_DIGITS = "12345"
_DEC_DIGITS = "0123456789"


@dataclass(frozen=True)
class ScoreDistribution:
    """Mean, spread and a ``LEVEL`` interval of the score; ``n`` is the number of
    samples (1 for a logprob distribution)."""

    mean: float
    std: float
    interval: tuple[float, float]
    source: Literal["logprobs", "samples"]
    n: int = 1
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form stored in ``Assessment.uncertainty``."""
        return {
            "mean": round(self.mean, 4),
            "std": round(self.std, 4),
            "interval": [round(self.interval[0], 4), round(self.interval[1], 4)],
            "level": LEVEL,
            "source": self.source,
            "n": self.n,
            "note": self.note,
            **self.extra,
        }


@dataclass(frozen=True)
class Unavailable:
    """No distribution could be computed; ``reason`` says why."""

    reason: str
    source: Literal["logprobs", "samples"] = "logprobs"

    def as_dict(self) -> dict[str, Any]:
        return {
            "mean": None,
            "std": None,
            "interval": None,
            "level": LEVEL,
            "source": self.source,
            "n": 0,
            "note": self.reason,
        }


def _clip(x: float) -> float:
    return min(SCORE_MAX, max(SCORE_MIN, x))


def _interval(mean: float, half: float) -> tuple[float, float]:
    return _clip(mean - half), _clip(mean + half)


def logprob_content(metadata: Mapping[str, Any] | None) -> list[dict[str, Any]] | None:
    """The token list of an OpenAI ``logprobs`` object in LangChain's ``response_metadata``."""
    logprobs = (metadata or {}).get("logprobs")
    if isinstance(logprobs, Mapping):
        content = logprobs.get("content")
        if isinstance(content, list) and content:
            return [t for t in content if isinstance(t, Mapping)]  # type: ignore[misc]
    return None


def _score_span(text: str, score: float) -> tuple[int, int] | None:
    """Character span of the written score: inside the last ``<answer>``, else after
    the last JSON ``"score"`` key, else anywhere; the first number equal to ``score``."""
    lower = text.lower()
    start, end = lower.rfind("<answer>"), len(text)
    if start >= 0:
        close = lower.find("</answer>", start)
        end = close if close >= 0 else end
    else:
        start = max(text.rfind('"score"'), 0)
    for match in _NUMBER_RE.finditer(text, start, end):
        try:
            value = float(match.group(0))
        except ValueError:  # pragma: no cover - the regex only matches numbers
            continue
        if abs(value - score) < 1e-6:
            return match.start(), match.end()
    return None


def _digit_probs(entry: Mapping[str, Any], allowed: str) -> tuple[dict[str, float], float]:
    """Renormalised probabilities of the allowed digits at one token, and their raw mass."""
    seen: dict[str, float] = {}
    candidates = [entry, *(entry.get("top_logprobs") or [])]
    for cand in candidates:
        token = str(cand.get("token", ""))
        logprob = cand.get("logprob")
        if token in seen or not isinstance(logprob, int | float) or math.isinf(logprob):
            continue
        seen[token] = math.exp(float(logprob))
    probs: dict[str, float] = {}
    for token, p in seen.items():
        digit = token.strip()
        if len(digit) == 1 and digit in allowed:
            probs[digit] = probs.get(digit, 0.0) + p
    mass = sum(probs.values())
    if mass <= 0.0:
        return {}, 0.0
    return {d: p / mass for d, p in probs.items()}, mass


def _digit_tokens(tokens: list[str], score: float) -> tuple[list[int], str] | Unavailable:
    """Token index of each digit of the written score (integer digit first), and the text."""
    starts, pos = [], 0
    for token in tokens:
        starts.append(pos)
        pos += len(token)
    text = "".join(tokens)
    span = _score_span(text, score)
    if span is None:
        return Unavailable(f"the score {score:g} was not found among the answer's tokens")
    written = text[span[0] : span[1]]
    if not re.fullmatch(r"\d(?:\.\d+)?", written):
        return Unavailable(f"the score is written as {written!r}, not as D or D.DD")
    by_char = {c: i for i, s in enumerate(starts) for c in range(s, s + len(tokens[i]))}
    chars = [span[0], *range(span[0] + 2, span[1])]
    if any(tokens[by_char[c]].strip() != text[c] for c in chars):
        pieces = [tokens[i] for i in sorted({by_char[c] for c in range(*span)})]
        return Unavailable(
            f"the tokeniser merged the score's digits (tokens {pieces!r}); "
            "per-digit probabilities need one token per digit"
        )
    return [by_char[c] for c in chars], written


def from_logprobs(
    content: Sequence[Mapping[str, Any]] | None, score: float
) -> ScoreDistribution | Unavailable:
    """The expected score from the digit tokens of ``score`` (see the module docstring).

    >>> toks = [{"token": t, "logprob": 0.0} for t in ["<answer>", "4", "</answer>"]]
    >>> from_logprobs(toks, 4.0).mean
    4.0
    """
    if not content:
        return Unavailable("the server returned no logprobs for the answer")
    located = _digit_tokens([str(t.get("token", "")) for t in content], score)
    if isinstance(located, Unavailable):
        return located
    indexes, written = located
    mean = var = 0.0
    lowest_mass = 1.0
    for k, i in enumerate(indexes):
        probs, mass = _digit_probs(content[i], _INT_DIGITS if k == 0 else _DEC_DIGITS)
        if not probs:
            return Unavailable(f"no probability on allowed digits at score position {k}")
        lowest_mass = min(lowest_mass, mass)
        e = sum(int(d) * p for d, p in probs.items())
        e2 = sum(int(d) ** 2 * p for d, p in probs.items())
        mean += 10.0**-k * e
        var += 10.0 ** (-2 * k) * max(e2 - e * e, 0.0)
    mean, std = _clip(mean), math.sqrt(var)
    return ScoreDistribution(
        mean=mean,
        std=std,
        interval=_interval(mean, _Z * std),
        source="logprobs",
        n=1,
        note=(
            f"expected score over the digit tokens of {written!r} "
            f"(lowest digit mass {lowest_mass:.3f}); 90% normal interval"
        ),
        extra={"mass": round(lowest_mass, 4)},
    )


def from_samples(scores: Sequence[float], *, attempted: int | None = None) -> ScoreDistribution:
    """Mean, sample std and a 90% t prediction interval of N sampled scores (N >= 1)."""
    if not scores:
        raise ValueError("from_samples needs at least one score")
    n = len(scores)
    mean = sum(scores) / n
    std = math.sqrt(sum((s - mean) ** 2 for s in scores) / (n - 1)) if n > 1 else 0.0
    if n > 1:
        from scipy.stats import t

        half = float(t.ppf(0.5 + LEVEL / 2, n - 1)) * std * math.sqrt(1 + 1 / n)
        note = f"mean of {n} sampled trajectories; 90% t prediction interval"
    else:
        half = 0.0
        note = "one sample: no spread can be estimated"
    if n > 1 and std == 0.0:
        note += "; all samples agree (a deterministic backend such as classic gives std 0)"
    if attempted is not None and attempted > n:
        note += f"; {attempted - n} of {attempted} samples gave no score"
    return ScoreDistribution(
        mean=mean,
        std=std,
        interval=_interval(mean, half),
        source="samples",
        n=n,
        note=note,
        extra={"scores": [round(s, 4) for s in scores]},
    )
