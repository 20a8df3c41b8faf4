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
from .rewards import FORMAT_CHECKS

__all__ = ["PROTOCOL_CHECKS", "ROLLOUT_KEYS", "protocol_checks", "rollout_record"]

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

#: The protocol checks of a trajectory, keys of its ``protocol`` column (the format reward
#: counts all but ``repaired``, which it subtracts).
PROTOCOL_CHECKS = (*FORMAT_CHECKS, "repaired")


def protocol_checks(assessment: Assessment, score_range: tuple[float, float] = (1.0, 5.0)) -> dict:
    """Did the trajectory follow the protocol? Booleans read by the format reward.

    Read from the typed per-turn record :attr:`Assessment.protocol
    <tooliqa.graph.Assessment.protocol>`, never from reply text or error messages:
    ``rubric_ok``: the rubric note parsed; ``thinking``: every reply had a closed thinking
    block (structured JSON turns, which have none, do not count against it);
    ``single_action``: no reply held a tool call and an answer, or several of either;
    ``tool_calls_valid``: every tool call could be read and named an enabled tool with
    arguments of its schema (a valid call that failed on the image still counts as valid);
    ``answer_tagged``: the score came from an ``<answer>`` tag (or the structured JSON);
    ``score_in_range``: a finite score within ``score_range``; ``repaired``: some reply was
    unusable, so a repair prompt was needed. A trajectory with no recorded turns fails all.
    """
    turns = assessment.protocol
    score = assessment.score
    lo, hi = score_range
    in_range = score is not None and math.isfinite(score) and lo <= score <= hi
    answers = [t for t in turns if t.action == "answer"]
    return {
        "rubric_ok": any(t.turn == "rubric" and t.rubric_parsed for t in turns),
        "thinking": bool(turns) and all(t.thinking is not False for t in turns),
        "single_action": bool(turns) and all(t.single_action for t in turns),
        "tool_calls_valid": bool(turns) and all(t.tool_call_valid is not False for t in turns),
        "answer_tagged": score is not None and bool(answers) and bool(answers[-1].answer_tagged),
        "score_in_range": in_range,
        "repaired": any(t.repair_needed for t in turns),
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
        protocol = dict.fromkeys(PROTOCOL_CHECKS, False)
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
