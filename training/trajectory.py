"""A finished graph run → one TRL rollout record (a pure function).

TRL's ``rollout_func`` contract wants, per trajectory, ``prompt_ids``,
``completion_ids`` and ``logprobs``; any other key becomes a column that reward
functions receive. ``env_mask`` (1 = sampled by the policy, 0 = came from the
environment) keeps tool responses, observation prompts and view images out of
the loss. ``images`` (every image of the conversation, in order) is consumed by
:class:`~tooliqa.training.trainer.ToolIQAGRPOTrainer` so the views reach the loss
forward pass.
"""

from __future__ import annotations

import math
from typing import Any

from tooliqa.graph import Assessment

from .bridge import TokenLedger

__all__ = ["ROLLOUT_KEYS", "protocol_checks", "rollout_record"]

#: The keys of one record (the columns a rollout batch carries).
ROLLOUT_KEYS = (
    "prompt_ids",
    "completion_ids",
    "logprobs",
    "env_mask",
    "images",
    "pred_score",
    "tool_calls",
    "tool_successes",
    "tools_used",
    "protocol",
    "completion_text",
    "rollout_error",
)

# Markers the graph writes into Assessment.errors (graph/nodes.py).
_RUBRIC_FAILED = "rubric note could not be parsed"
_LENIENT = "score read leniently"
_EXTRA_CALLS = "extra tool call(s) ignored"
_UNUSABLE = ("gate reply unusable", "final answer unusable")


def protocol_checks(assessment: Assessment, score_range: tuple[float, float] = (1.0, 5.0)) -> dict:
    """Did the trajectory follow the protocol? Booleans read by the format reward.

    ``rubric_ok``: the rubric note parsed; ``single_action``: never more than one
    tool call in a turn; ``answer_tagged``: the score came from an ``<answer>``
    tag; ``score_in_range``: a finite score within ``score_range``; ``repaired``:
    a repair prompt was needed.
    """
    errors = assessment.errors
    score = assessment.score
    lo, hi = score_range
    in_range = score is not None and math.isfinite(score) and lo <= score <= hi
    return {
        "rubric_ok": bool(assessment.rubric) and not any(_RUBRIC_FAILED in e for e in errors),
        "single_action": not any(_EXTRA_CALLS in e for e in errors),
        "answer_tagged": score is not None and not any(_LENIENT in e for e in errors),
        "score_in_range": in_range,
        "repaired": any(any(u in e for u in _UNUSABLE) for e in errors),
    }


def rollout_record(
    ledger: TokenLedger,
    assessment: Assessment | None,
    *,
    decode: Any = None,
    score_range: tuple[float, float] = (1.0, 5.0),
    error: str | None = None,
) -> dict[str, Any]:
    """Turn one conversation's ledger and outcome into a rollout record.

    ``assessment`` is None when the graph itself failed (``error`` says why):
    the record then carries no score and fails every protocol check, so the
    rewards give it their penalties. A run that finished without a usable
    score is not an error: it has ``pred_score`` None and its protocol checks
    say what went wrong. ``decode`` (ids → text) fills
    ``completion_text`` for logs.
    """
    if len(ledger.completion_ids) != len(ledger.completion_mask) or len(
        ledger.completion_ids
    ) != len(ledger.logprobs):
        raise ValueError("ledger is inconsistent: ids, mask and logprobs differ in length")
    if assessment is None:
        steps: list[Any] = []
        score = None
        protocol = {
            "rubric_ok": False,
            "single_action": False,
            "answer_tagged": False,
            "score_in_range": False,
            "repaired": False,
        }
    else:
        steps = list(assessment.steps)
        score = assessment.score
        protocol = protocol_checks(assessment, score_range)
    return {
        "prompt_ids": list(ledger.prompt_ids),
        "completion_ids": list(ledger.completion_ids),
        "logprobs": list(ledger.logprobs),
        "env_mask": list(ledger.completion_mask),
        "images": list(ledger.images),
        "pred_score": float(score) if score is not None else None,
        "tool_calls": len(steps),
        "tool_successes": sum(1 for s in steps if s.ok),
        "tools_used": [s.tool for s in steps],
        "protocol": protocol,
        "completion_text": decode(ledger.completion_ids) if decode is not None else "",
        "rollout_error": error,
    }
