"""The result of one assessment, the same everywhere: CLI, evaluation, UI, training export."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from .parsing import Action, AnswerAction, InvalidToolCall, Malformed, ToolCallAction
from .regions import magnifier_regions

__all__ = ["Assessment", "ProtocolTurn", "Step", "Usage", "transcript"]

SCHEMA_VERSION = "1"


def transcript(messages: list[Any]) -> list[dict[str, Any]]:
    """The conversation as plain records: role, text, number of images, tool calls.

    Images are counted, not copied (the views are in the steps).
    """
    out = []
    for msg in messages:
        content = getattr(msg, "content", "")
        blocks = content if isinstance(content, list) else [content]
        text = "".join(
            b if isinstance(b, str) else str(b.get("text", ""))
            for b in blocks
            if isinstance(b, str) or b.get("type") == "text"
        )
        images = sum(
            1 for b in blocks if isinstance(b, dict) and b.get("type") in ("image_url", "image")
        )
        record: dict[str, Any] = {
            "role": getattr(msg, "type", "unknown"),
            "text": text,
            "images": images,
        }
        calls = getattr(msg, "tool_calls", None)
        if calls:
            record["tool_calls"] = [
                {"name": c["name"], "args": c.get("args", {}), "id": c.get("id")} for c in calls
            ]
        if getattr(msg, "tool_call_id", None):
            record["tool_call_id"] = msg.tool_call_id
        out.append(record)
    return out


def _unanswered(plan: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The query answer of a run that ended without an answer: the plan, nothing else."""
    if not plan:
        return None
    return {**plan, "answer": "", "verdict": None, "score": None, "evidence": []}


def _step(raw: Mapping[str, Any]) -> Step:
    """A Step from a state step, whose ``view`` is a reference (or, in old states, bytes)."""
    view = raw.get("view")
    fields = {k: v for k, v in raw.items() if k not in ("view", "view_ref")}
    if isinstance(view, bytes):
        return Step(**fields, view=view)
    return Step(**fields, view_ref=view if isinstance(view, str) else None)


class Step(BaseModel):
    """One tool round: what was asked, whether it worked, what came back."""

    round: int
    tool: str
    args: dict[str, Any] = Field(default_factory=dict)
    ok: bool
    message: str = ""
    source: str = "native"
    box: list[int] | None = None
    gamma: float | None = None
    elapsed_ms: float = 0.0
    mime: str | None = None
    view: bytes | None = Field(default=None, exclude=True, repr=False)
    view_ref: str | None = None
    """The view's ``tooliqa-blob:sha256:...`` reference in the process that ran the graph
    (:mod:`tooliqa.tools.blobs`); :func:`tooliqa.aassess` attaches the bytes as ``view``."""
    raw: float | None = None
    """Measurement tools only: the metric's raw value (e.g. NIQE)."""
    score_1_5: float | None = None
    """Measurement tools only: the raw value mapped to 1-5 by the fitted logistic."""

    @field_validator("view", mode="before")
    @classmethod
    def _view_bytes(cls, value: Any) -> Any:
        """A view given as a ``data:`` URL (``include_views``) or a reference this process
        still holds becomes its bytes; other text is no view (never its UTF-8 bytes)."""
        if not isinstance(value, str):
            return value
        if value.startswith("data:") and ";base64," in value:
            try:
                return base64.b64decode(value.split(",", 1)[1], validate=True)
            except (ValueError, binascii.Error):
                return None
        from tooliqa.tools import BLOBS, is_blob_ref

        return BLOBS.get(value) if is_blob_ref(value) and value in BLOBS else None

    def view_data_url(self) -> str | None:
        if self.view is None:
            return None
        return f"data:{self.mime or 'image/png'};base64,{base64.b64encode(self.view).decode()}"


TurnKind = Literal["rubric", "gate", "final", "repair"]


class ProtocolTurn(BaseModel):
    """What the protocol (Tool-IQA Appendix A) saw in one model reply, as typed fields.

    The format reward and the training record read these, never the reply text or the
    error messages. ``None`` means "does not apply to this turn" (no tool call, no answer,
    or a structured JSON turn that has no thinking block).
    """

    turn: TurnKind
    """``rubric`` (the observation), ``gate`` (tool or answer), ``final`` (the answer asked
    for once no tool may be called) or ``repair`` (the answer after a repair prompt)."""
    round: int = 0
    """Tool rounds used before this reply."""
    action: Literal["rubric", "tool_call", "invalid_tool_call", "answer", "malformed"]
    thinking: bool | None = None
    """A thinking block was opened and closed."""
    single_action: bool = True
    """Exactly one action: not a tool call and an answer, not several of either."""
    tool_call_valid: bool | None = None
    """A tool call: it could be read and named an enabled tool with arguments of its schema
    (False for unreadable JSON, an unknown tool, wrong argument types). A valid call may
    still fail on the image (a region too small): that is the step's ``ok``."""
    answer_tagged: bool | None = None
    """An answer or an unusable one: the score sat in ``<answer>`` (or the structured JSON),
    not in prose."""
    score_in_range: bool | None = None
    """An answer: a score in [1, 5] was read; False for a number outside it."""
    rubric_parsed: bool | None = None
    """The rubric turn: the note named at least one rubric attribute."""
    repair_needed: bool = False
    """The reply was unusable (a repair prompt follows while retries remain)."""
    reason: str | None = None
    """Why the reply was unusable."""

    @classmethod
    def of(cls, turn: TurnKind, round: int, action: Action) -> ProtocolTurn:
        """The record of a parsed gate or answer reply (a tool call's validity is filled in
        once the tool has run)."""
        form = action.form
        fields: dict[str, Any] = {
            "turn": turn,
            "round": round,
            "thinking": form.thinking,
            "single_action": form.single_action,
        }
        if isinstance(action, ToolCallAction):
            return cls(**fields, action="tool_call")
        if isinstance(action, InvalidToolCall):
            return cls(**fields, action="invalid_tool_call", tool_call_valid=False)
        if isinstance(action, AnswerAction):
            tagged = form.tagged and not action.lenient
            return cls(**fields, action="answer", answer_tagged=tagged, score_in_range=True)
        assert isinstance(action, Malformed)
        return cls(
            **fields,
            action="malformed",
            answer_tagged=form.answers > 0 if form.tool_calls == 0 else None,
            score_in_range=False if action.code == "out_of_range" else None,
            repair_needed=True,
            reason=action.reason,
        )


class Usage(BaseModel):
    """Tokens and model calls spent on one image."""

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    model_calls: int = 0


class Assessment(BaseModel):
    """A quality judgement: the score in [1, 5] (or None with ``error``), the rubric,
    the tool steps, the rationale and what it cost."""

    schema_version: str = SCHEMA_VERSION
    image: str | None = None
    score: float | None = None
    rubric: dict[str, str | None] = Field(default_factory=dict)
    rubric_notes: dict[str, str] = Field(default_factory=dict)
    rubric_note: str = ""
    steps: list[Step] = Field(default_factory=list)
    rationale: str = ""
    answer: str = ""
    query: str | None = None
    forced_answer: bool = False
    backend: str = "unknown"
    model: str | None = None
    usage: Usage = Field(default_factory=Usage)
    timings: dict[str, float] = Field(default_factory=dict)
    errors: list[str] = Field(default_factory=list)
    error: str | None = None
    error_kind: str | None = None
    """Why there is no score: ``image``, ``model`` (no valid score in the model's output),
    ``client``/``server`` (the model server refused / failed), ``timeout`` or ``internal``
    (see :mod:`tooliqa.failures`); None when there is a score."""
    uncertainty: dict[str, Any] | None = None
    """Score distribution (mean, std, interval, level, source, n, note) when asked for
    with ``Context.score_logprobs`` or ``samples=N``; see :mod:`tooliqa.graph.uncertainty`."""
    attribute_scores: dict[str, float] = Field(default_factory=dict)
    """1-5 score per rubric attribute (``sharpness``, ``noise``, ...) when asked for with
    ``Context.attribute_scores``."""
    regions: list[dict[str, Any]] = Field(default_factory=list)
    """Distortion regions: ``{box: [x1, y1, x2, y2] (pixels), label, severity, source}``,
    ``source`` one of ``magnifier``, ``answer``, ``piqe`` (see :mod:`tooliqa.graph.regions`)."""
    protocol: list[ProtocolTurn] = Field(default_factory=list)
    """Per model reply, what the protocol saw (see :class:`ProtocolTurn`)."""
    query_answer: dict[str, Any] | None = None
    """With a query: the plan and the answer to it, ``{query, kind, focus, region, tools,
    answer, verdict, score, evidence}`` (see :mod:`tooliqa.graph.query`)."""
    transcript: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and self.score is not None

    @property
    def tool_calls(self) -> int:
        return len(self.steps)

    def to_json(self, *, include_views: bool = False, indent: int | None = None) -> str:
        """JSON text; with ``include_views`` each step carries its view as a data URL."""
        data = self.model_dump(mode="json")
        if include_views:
            for step, out in zip(self.steps, data["steps"], strict=True):
                out["view"] = step.view_data_url()
        return json.dumps(data, ensure_ascii=False, indent=indent)

    @classmethod
    def failure(
        cls,
        error: str,
        *,
        image: str | None = None,
        backend: str = "unknown",
        model: str | None = None,
        kind: str | None = None,
    ) -> Assessment:
        """An Assessment for an image that could not be assessed at all (``kind``: see
        :attr:`error_kind`)."""
        return cls(image=image, error=error, error_kind=kind, backend=backend, model=model)

    @classmethod
    def from_state(
        cls, state: Mapping[str, Any], *, backend: str, model: str | None = None
    ) -> Assessment:
        """Build from a finished graph state."""
        rubric = state.get("rubric") or {}
        score = state.get("score")
        errors = list(state.get("errors") or [])
        error = None
        if score is None:
            error = errors[-1] if errors else "no score was produced"
        usage = state.get("usage") or {}
        return cls(
            image=state.get("image_name"),
            score=score,
            rubric={k: v.get("level") for k, v in rubric.items()},
            rubric_notes={k: v.get("note", "") for k, v in rubric.items()},
            rubric_note=state.get("rubric_note", ""),
            steps=[_step(s) for s in state.get("steps") or []],
            rationale=state.get("rationale", ""),
            answer=state.get("answer", ""),
            query=state.get("image_question"),
            forced_answer=bool(state.get("forced_answer", False)),
            backend=backend,
            model=model,
            usage=Usage(**{k: int(v) for k, v in usage.items() if k in Usage.model_fields}),
            timings={k: round(float(v), 6) for k, v in (state.get("timings") or {}).items()},
            errors=errors,
            error=error,
            error_kind=None if score is not None else "model",
            uncertainty=state.get("uncertainty"),
            attribute_scores=dict(state.get("attribute_scores") or {}),
            regions=[
                *magnifier_regions(state.get("steps") or [], state.get("replies") or []),
                *(state.get("answer_regions") or []),
            ],
            protocol=[ProtocolTurn(**t) for t in state.get("protocol") or []],
            query_answer=state.get("query_answer") or _unanswered(state.get("plan")),
            transcript=transcript(state.get("messages") or []),
        )
