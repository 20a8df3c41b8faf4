"""Rollouts for GRPO from the assessment graph itself.

The SAME compiled LangGraph graph, prompts, parser and view tools as inference
produce every trajectory; only the chat model differs: a
:class:`~tooliqa.training.bridge.RecordingChatModel` per trajectory, all of
them sharing one :class:`~tooliqa.training.bridge.TurnBatcher` so that the
turns of the whole batch are generated together.

A training prompt is a *rollout request*: a one-message conversation whose
text is a JSON object naming the image file (and an optional question), made
by :func:`rollout_request`. The image is read from disk as bytes, exactly as
``tooliqa assess`` would read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tooliqa.graph import Assessment, Context, compile_graph
from tooliqa.tools import ImageLimits, read_image_bytes

from .bridge import ChatRenderer, Generator, RecordingChatModel, TokenLedger, TurnBatcher
from .trajectory import ROLLOUT_KEYS, rollout_record

__all__ = [
    "REQUEST_KIND",
    "GraphRollout",
    "RolloutError",
    "collate",
    "parse_request",
    "rollout_request",
]

REQUEST_KIND = "tooliqa.rollout/1"
_LOG_KEYS = (
    "pred_score",
    "tool_calls",
    "tool_successes",
    "tools_used",
    "protocol",
    "rollout_error",
    "completion_text",
)


class RolloutError(RuntimeError):
    """A batch could not be rolled out (bad request, no tokens produced)."""


def rollout_request(image: str, query: str | None = None) -> list[dict[str, str]]:
    """The training prompt for one image: a conversation TRL can carry and log."""
    payload = {"kind": REQUEST_KIND, "image": str(image)}
    if query:
        payload["query"] = query
    return [{"role": "user", "content": json.dumps(payload, ensure_ascii=False)}]


def parse_request(prompt: Any) -> tuple[str, str | None]:
    """(image path, query) from a prompt made by :func:`rollout_request`."""
    try:
        message = prompt[-1] if isinstance(prompt, list) else {"content": prompt}
        content = message["content"]
        if isinstance(content, list):  # TRL may wrap text in content blocks
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        payload = json.loads(content)
        if not isinstance(payload, dict):
            raise ValueError("not a JSON object")
        if payload.get("kind") != REQUEST_KIND:
            raise ValueError(f"kind is {payload.get('kind')!r}")
        image = payload["image"]
        if not isinstance(image, str) or not image:
            raise ValueError("image must be a non-empty path")
        return image, payload.get("query")
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise RolloutError(
            f"prompt is not a rollout request ({exc}); build training prompts with "
            "tooliqa.training.rollout.rollout_request or tooliqa.training.data"
        ) from None


def collate(records: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """Records → the column dict TRL's ``rollout_func`` returns."""
    return {key: [r[key] for r in records] for key in ROLLOUT_KEYS}


@dataclass
class GraphRollout:
    """A TRL ``rollout_func``: ``rollout(prompts, trainer) -> dict of columns``.

    Args:
        make_generator: ``trainer -> Generator`` (see :mod:`.generation`); called
            once per batch, so it may read the trainer's current model.
        max_tool_rounds / enabled_tools / bbox_convention / max_pixels: the
            graph's :class:`~tooliqa.graph.Context` settings (paper: 2 rounds,
            magnifier + gamma corrector).
        max_new_tokens: cap per model turn.
        lockstep: ``trainer -> lockstep function or None`` for collective
            generation across processes (see :func:`.generation.trainer_lockstep`).
    """

    make_generator: Callable[[Any], Generator]
    max_tool_rounds: int = 2
    enabled_tools: tuple[str, ...] = ("magnifier", "gamma_corrector")
    bbox_convention: str = "rel1000"
    max_pixels: int | None = None
    max_new_tokens: int = 512
    answer_retries: int = 1
    score_range: tuple[float, float] = (1.0, 5.0)
    image_limits: ImageLimits = field(default_factory=ImageLimits)
    lockstep: Callable[[Any], Callable[[bool], bool] | None] | None = None
    #: append one JSON line per trajectory (no token ids or pixels) to this file
    log_path: str | None = None
    last_stats: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._graph = compile_graph(name="tooliqa-rollout")
        self._renderers: dict[int, ChatRenderer] = {}

    def renderer(self, processor: Any) -> ChatRenderer:
        key = id(processor)
        if key not in self._renderers:
            self._renderers[key] = ChatRenderer(processor)
        return self._renderers[key]

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, list[Any]]:
        generator = self.make_generator(trainer)
        lockstep = self.lockstep(trainer) if self.lockstep is not None else None
        records = self.run(prompts, generator, trainer.processing_class, lockstep=lockstep)
        if self.log_path:
            state = getattr(trainer, "state", None)
            self.write_log(records, prompts, step=getattr(state, "global_step", None))
        return collate(records)

    def write_log(
        self, records: Sequence[dict[str, Any]], prompts: Sequence[Any], *, step: int | None
    ) -> None:
        """One JSON line per trajectory: image, score, tools, protocol, text."""
        assert self.log_path is not None
        with open(self.log_path, "a", encoding="utf-8") as fh:
            for prompt, rec in zip(prompts, records, strict=True):
                image, query = parse_request(prompt)
                line = {
                    "step": step,
                    "image": image,
                    "query": query,
                    **{k: rec[k] for k in _LOG_KEYS},
                    "model_tokens": sum(rec["env_mask"]),
                    "images": len(rec["images"]),
                }
                fh.write(json.dumps(line, ensure_ascii=False) + "\n")

    def context(self, model: RecordingChatModel) -> Context:
        kwargs: dict[str, Any] = {}
        if self.max_pixels is not None:
            kwargs["max_pixels"] = self.max_pixels
        return Context(
            model=model,
            max_tool_rounds=self.max_tool_rounds,
            enabled_tools=tuple(self.enabled_tools),
            bbox_convention=self.bbox_convention,  # type: ignore[arg-type]
            tool_protocol="text",
            answer_retries=self.answer_retries,
            image_limits=self.image_limits,
            **kwargs,
        )

    def run(
        self,
        prompts: Sequence[Any],
        generator: Generator,
        processor: Any,
        *,
        lockstep: Callable[[bool], bool] | None = None,
    ) -> list[dict[str, Any]]:
        """Roll out one trajectory per prompt; returns the records in order."""
        requests = [parse_request(p) for p in prompts]
        renderer = self.renderer(processor)
        batcher = TurnBatcher(generator, lockstep=lockstep)
        models = [
            RecordingChatModel(
                renderer=renderer, batcher=batcher, max_new_tokens=self.max_new_tokens, order=i
            )
            for i in range(len(requests))
        ]
        session = getattr(generator, "session", contextlib.nullcontext)
        with session():
            outcomes = asyncio.run(self._run_all(requests, models, batcher))
        records = []
        for (path, _), model, outcome in zip(requests, models, outcomes, strict=True):
            records.append(self._record(path, model.ledger, outcome, renderer))
        self.last_stats = {
            "generation_calls": float(batcher.calls),
            "mean_batch": (sum(batcher.batch_sizes) / len(batcher.batch_sizes))
            if batcher.batch_sizes
            else 0.0,
        }
        return records

    async def _run_all(
        self,
        requests: list[tuple[str, str | None]],
        models: list[RecordingChatModel],
        batcher: TurnBatcher,
    ) -> list[Any]:
        coros = [
            self._one(path, query, model)
            for (path, query), model in zip(requests, models, strict=True)
        ]
        return await batcher.run(coros)

    async def _one(self, path: str, query: str | None, model: RecordingChatModel) -> Assessment:
        image = await asyncio.to_thread(read_image_bytes, path, self.image_limits)
        state = await self._graph.ainvoke(
            {"image": image, "image_name": path, "image_question": query},
            context=self.context(model),
        )
        return Assessment.model_validate(state["assessment"])

    def _record(
        self, path: str, ledger: TokenLedger, outcome: Any, renderer: ChatRenderer
    ) -> dict[str, Any]:
        if isinstance(outcome, BaseException):
            if not ledger.completion_ids:
                raise RolloutError(
                    f"{path}: the rollout produced no tokens: {outcome}"
                ) from outcome
            return rollout_record(
                ledger,
                None,
                decode=renderer.decode,
                score_range=self.score_range,
                error=f"{type(outcome).__name__}: {outcome}",
            )
        return rollout_record(ledger, outcome, decode=renderer.decode, score_range=self.score_range)
