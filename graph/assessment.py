"""The result of one assessment, the same everywhere: CLI, evaluation, UI, training export."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field

from .regions import magnifier_regions

__all__ = ["Assessment", "Step", "Usage", "transcript"]

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
    raw: float | None = None
    """Measurement tools only: the metric's raw value (e.g. NIQE)."""
    score_1_5: float | None = None
    """Measurement tools only: the raw value mapped to 1-5 by the fitted logistic."""

    def view_data_url(self) -> str | None:
        if self.view is None:
            return None
        return f"data:{self.mime or 'image/png'};base64,{base64.b64encode(self.view).decode()}"


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
    uncertainty: dict[str, Any] | None = None
    """Score distribution (mean, std, interval, level, source, n, note) when asked for
    with ``Context.score_logprobs`` or ``samples=N``; see :mod:`tooliqa.graph.uncertainty`."""
    attribute_scores: dict[str, float] = Field(default_factory=dict)
    """1-5 score per rubric attribute (``sharpness``, ``noise``, ...) when asked for with
    ``Context.attribute_scores``."""
    regions: list[dict[str, Any]] = Field(default_factory=list)
    """Distortion regions: ``{box: [x1, y1, x2, y2] (pixels), label, severity, source}``,
    ``source`` one of ``magnifier``, ``answer``, ``piqe`` (see :mod:`tooliqa.graph.regions`)."""
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
    ) -> Assessment:
        """An Assessment for an image that could not be assessed at all."""
        return cls(image=image, error=error, backend=backend, model=model)

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
            steps=[Step(**s) for s in state.get("steps") or []],
            rationale=state.get("rationale", ""),
            answer=state.get("answer", ""),
            query=state.get("query"),
            forced_answer=bool(state.get("forced_answer", False)),
            backend=backend,
            model=model,
            usage=Usage(**{k: int(v) for k, v in usage.items() if k in Usage.model_fields}),
            timings={k: round(float(v), 6) for k, v in (state.get("timings") or {}).items()},
            errors=errors,
            error=error,
            uncertainty=state.get("uncertainty"),
            attribute_scores=dict(state.get("attribute_scores") or {}),
            regions=[
                *magnifier_regions(state.get("steps") or [], state.get("replies") or []),
                *(state.get("answer_regions") or []),
            ],
            query_answer=state.get("query_answer") or _unanswered(state.get("plan")),
            transcript=transcript(state.get("messages") or []),
        )
