"""What each user turn of the assessment conversation asks, as structured data beside its
text: the turn's kind, the question's plan, the prompt style and the extras asked for.

The nodes write it (:func:`mark`) into every user turn they add, in the message's
``additional_kwargs`` under :data:`TURN_KEY`, which OpenAI-compatible clients do not send
to the server (a user message goes out as role, content and name only). A model that
plays the protocol itself, such as the embedded classic backend, reads it back with
:func:`turn_of` instead of recognising prompts by their wording or pulling the question
back out of the prompt text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from langchain_core.messages import BaseMessage, HumanMessage

__all__ = ["TURN_KEY", "TurnKind", "TurnSpec", "mark", "turn_of"]

#: The ``additional_kwargs`` key of a user turn's :class:`TurnSpec`.
TURN_KEY = "tooliqa_turn"

TurnKind = Literal["rubric", "gate", "final", "repair"]

_KINDS = ("rubric", "gate", "final", "repair")


@dataclass(frozen=True)
class TurnSpec:
    """What one user turn asks.

    ``kind``: ``rubric`` (look at the image, write the rubric note), ``gate`` (call one
    tool or answer), ``final`` (answer now, no more tools) or ``repair`` (the last answer
    was unusable: answer again). ``plan``: the question's plan as
    :meth:`~tooliqa.graph.query.QueryPlan.as_dict` (None without a question).
    ``prompt_style``: ``paper`` or ``extended`` (the rubric has a colour line).
    ``attribute_scores`` / ``report_regions``: the answer must carry those extras.
    """

    kind: TurnKind
    plan: Mapping[str, Any] | None = None
    prompt_style: str = "paper"
    attribute_scores: bool = False
    report_regions: bool = False

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["plan"] = dict(self.plan) if self.plan is not None else None
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TurnSpec | None:
        """The spec a turn carries; None when it is not one (a foreign or damaged mark)."""
        kind = data.get("kind")
        plan = data.get("plan")
        if kind not in _KINDS or not (plan is None or isinstance(plan, Mapping)):
            return None
        return cls(
            kind=kind,
            plan=plan,
            prompt_style=str(data.get("prompt_style") or "paper"),
            attribute_scores=bool(data.get("attribute_scores")),
            report_regions=bool(data.get("report_regions")),
        )

    @property
    def answers(self) -> bool:
        """Whether the turn asks for (or allows) the final answer."""
        return self.kind != "rubric"


def mark(message: HumanMessage, spec: TurnSpec) -> HumanMessage:
    """``message`` carrying ``spec`` (the message itself, changed in place)."""
    message.additional_kwargs[TURN_KEY] = spec.as_dict()
    return message


def turn_of(messages: Sequence[BaseMessage]) -> TurnSpec | None:
    """The spec of the last user turn in ``messages`` (None when it carries none)."""
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            data = message.additional_kwargs.get(TURN_KEY)
            return TurnSpec.from_dict(data) if isinstance(data, Mapping) else None
    return None
