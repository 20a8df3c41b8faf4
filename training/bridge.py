"""Token-in/token-out chat model for rollouts: the graph talks to it like any
LangChain chat model, and it records exactly which tokens the policy saw and
produced.

Why a bridge: an OpenAI-style server re-renders and re-tokenises the whole
history at every turn, and decode→encode does not round-trip (merges differ
at turn boundaries, image placeholders are expanded server-side). For policy
gradients the trained tokens must be the sampled tokens. So the bridge keeps a
:class:`TokenLedger` per conversation:

* the first call renders the system + user turn with the processor's chat
  template (images expanded to their ``<|image_pad|>`` runs) → ``prompt_ids``;
* each reply's sampled ids and their log-probabilities are appended as they
  were generated (mask 1);
* each later turn (tool response, observation, gate prompt, view image) is
  rendered ALONE — the difference between a template render with and without
  it — and appended (mask 0). The history is never re-tokenised.

Generation goes through a :class:`Generator` (transformers on CPU/GPU, or
TRL's vLLM integration, see :mod:`tooliqa.training.generation`), scheduled by a
:class:`TurnBatcher` that batches the pending turns of every concurrent
trajectory into one call.
"""

from __future__ import annotations

import asyncio
import base64
import io
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.outputs import ChatGeneration, ChatResult
from PIL import Image
from pydantic import ConfigDict, Field

from tooliqa.tools import BLOBS, ImageError, is_blob_ref

__all__ = [
    "BridgeError",
    "ChatRenderer",
    "GenerationRequest",
    "GenerationResult",
    "Generator",
    "RecordingChatModel",
    "TokenLedger",
    "TurnBatcher",
    "to_hf_messages",
]

_DATA_URL = re.compile(r"^data:(?P<mime>[\w/+.-]+);base64,(?P<data>.*)$", re.DOTALL)
_DUMMY_USER = "\u2063u\u2063"
_DUMMY_REPLY = "\u2063a\u2063"


class BridgeError(RuntimeError):
    """The conversation cannot be continued token-exactly (history edited, bad image...)."""


@dataclass
class GenerationRequest:
    """One turn to generate: the full token history and every image in it, in order.

    ``vision`` holds the processor's tensors for those images (``pixel_values``,
    ``image_grid_thw``), computed once when each image was tokenised.
    """

    input_ids: list[int]
    images: list[Image.Image]
    max_new_tokens: int
    vision: dict[str, Any] | None = None


@dataclass
class GenerationResult:
    """The sampled ids, their log-probabilities under the sampling distribution,
    and whether generation stopped on a stop token (not on the length cap)."""

    token_ids: list[int]
    logprobs: list[float]
    finished: bool


class Generator(Protocol):
    """Generates one reply per request (a batch: implementations may batch them)."""

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]: ...


def _decode_data_url(url: str) -> Image.Image:
    """The image of a ``data:`` URL (what a model call gets) or of a ``tooliqa-blob:sha256:...``
    reference (what the graph's state holds)."""
    if is_blob_ref(url):
        try:
            raw = BLOBS.get(url)
        except ImageError as exc:
            raise BridgeError(f"an image in the conversation is gone: {exc}") from exc
    else:
        m = _DATA_URL.match(url)
        if m is None:
            raise BridgeError(
                f"image parts must be base64 data URLs or image references (got {url[:40]!r}...)"
            )
        raw = base64.b64decode(m["data"])
    try:
        img = Image.open(io.BytesIO(raw))
        img.load()
    except Exception as exc:  # any decode failure is the same error to the caller
        raise BridgeError(f"an image in the conversation could not be decoded: {exc}") from exc
    return img.convert("RGB")


def _content_parts(content: str | list[Any]) -> tuple[list[dict[str, Any]], list[Image.Image]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}], []
    parts: list[dict[str, Any]] = []
    images: list[Image.Image] = []
    for part in content:
        if isinstance(part, str):
            parts.append({"type": "text", "text": part})
        elif part.get("type") == "text":
            parts.append({"type": "text", "text": part.get("text", "")})
        elif part.get("type") == "image_url":
            url = (
                part["image_url"]["url"]
                if isinstance(part["image_url"], dict)
                else part["image_url"]
            )
            images.append(_decode_data_url(url))
            parts.append({"type": "image"})
        elif part.get("type") == "image" and isinstance(part.get("image"), Image.Image):
            images.append(part["image"].convert("RGB"))
            parts.append({"type": "image"})
        else:
            raise BridgeError(f"unsupported message part {part.get('type')!r}")
    return parts, images


def to_hf_messages(
    messages: Sequence[BaseMessage],
) -> tuple[list[dict[str, Any]], list[Image.Image]]:
    """LangChain messages → chat-template dicts (images as ``{"type": "image"}``) and the
    decoded images in order of appearance."""
    out: list[dict[str, Any]] = []
    images: list[Image.Image] = []
    for msg in messages:
        if isinstance(msg, SystemMessage):
            role = "system"
        elif isinstance(msg, HumanMessage):
            role = "user"
        elif isinstance(msg, AIMessage):
            role = "assistant"
        elif isinstance(msg, ToolMessage):
            role = "tool"
        else:
            raise BridgeError(f"unsupported message type {type(msg).__name__}")
        parts, imgs = _content_parts(msg.content)
        images += imgs
        if role in ("system", "assistant", "tool") and not imgs:
            out.append({"role": role, "content": "".join(p["text"] for p in parts)})
        else:
            out.append({"role": role, "content": parts})
    return out, images


class ChatRenderer:
    """Tokenises a conversation incrementally with a Hugging Face processor.

    Works with any prefix-preserving chat template (Qwen's are): a later turn
    renders to the same text whether or not the earlier turns are present.
    """

    def __init__(self, processor: Any, *, chat_template_kwargs: dict[str, Any] | None = None):
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.kwargs = dict(chat_template_kwargs or {})
        base = self._render(
            [
                {"role": "user", "content": _DUMMY_USER},
                {"role": "assistant", "content": _DUMMY_REPLY},
            ],
            generation_prompt=False,
        )
        if _DUMMY_REPLY not in base:
            raise BridgeError("the chat template does not render assistant turns verbatim")
        self._base = base
        #: text that closes an assistant turn (``<|im_end|>\n`` for Qwen)
        self.turn_close = base[base.rindex(_DUMMY_REPLY) + len(_DUMMY_REPLY) :]
        self.image_pad_id = self._token_id("<|image_pad|>")
        eos = self.tokenizer.eos_token_id
        self.stop_ids: set[int] = {eos} if isinstance(eos, int) else set(eos or [])
        end = self._token_id("<|im_end|>")
        if end is not None:
            self.stop_ids.add(end)

    def _token_id(self, token: str) -> int | None:
        tid = self.tokenizer.convert_tokens_to_ids(token)
        return tid if isinstance(tid, int) and tid != self.tokenizer.unk_token_id else None

    def _render(
        self,
        messages: list[dict[str, Any]],
        *,
        generation_prompt: bool,
        tools: list[dict[str, Any]] | None = None,
    ) -> str:
        return str(
            self.processor.apply_chat_template(
                messages,
                tools=tools or None,
                add_generation_prompt=generation_prompt,
                tokenize=False,
                **self.kwargs,
            )
        )

    def _encode(self, text: str, images: list[Image.Image]) -> tuple[list[int], dict[str, Any]]:
        if images:
            enc = self.processor(
                text=[text], images=images, return_tensors="pt", add_special_tokens=False
            )
            vision = {k: enc[k] for k in ("pixel_values", "image_grid_thw") if k in enc}
            return enc["input_ids"][0].tolist(), vision
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return list(ids), {}

    def prompt(
        self,
        messages: list[dict[str, Any]],
        images: list[Image.Image],
        tools: list[dict[str, Any]] | None = None,
    ) -> tuple[list[int], dict[str, Any]]:
        """The first prompt (everything up to and including the generation prompt)."""
        return self._encode(self._render(messages, generation_prompt=True, tools=tools), images)

    def continuation(
        self, new_messages: list[dict[str, Any]], images: list[Image.Image], *, closed: bool
    ) -> tuple[list[int], dict[str, Any]]:
        """Tokens appended after the last reply: the end of that assistant turn
        (only what the model did not generate itself when ``closed``), the new
        turns and the next generation prompt."""
        dummy = [
            {"role": "user", "content": _DUMMY_USER},
            {"role": "assistant", "content": _DUMMY_REPLY},
        ]
        full = self._render(dummy + new_messages, generation_prompt=True)
        if not full.startswith(self._base):
            raise BridgeError(
                "the chat template is not prefix-preserving: appending turns changed earlier text"
            )
        suffix = full[len(self._base) :]
        ids, vision = self._encode(suffix, images)
        close_ids = self.tokenizer(self.turn_close, add_special_tokens=False)["input_ids"]
        if closed and close_ids and close_ids[0] in self.stop_ids:
            close_ids = close_ids[1:]
        return list(close_ids) + ids, vision

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=False))


@dataclass
class TokenLedger:
    """The token-level record of one conversation.

    ``completion_mask`` is 1 on tokens the policy sampled and 0 on tokens that
    came from outside (turn ends, tool responses, observation prompts, view
    images); ``logprobs`` holds the sampling log-probability of each sampled
    token and 0.0 on outside tokens (they are masked out of the loss).
    """

    prompt_ids: list[int] = field(default_factory=list)
    completion_ids: list[int] = field(default_factory=list)
    completion_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    images: list[Image.Image] = field(default_factory=list)
    vision: list[dict[str, Any]] = field(default_factory=list)
    #: how many messages of the graph's conversation are already in the ledger
    messages_seen: int = 0
    last_finished: bool = True
    replies: list[str] = field(default_factory=list)
    truncated_turns: int = 0

    @property
    def started(self) -> bool:
        return bool(self.prompt_ids)

    def all_ids(self) -> list[int]:
        return self.prompt_ids + self.completion_ids

    def add_env(self, ids: list[int]) -> None:
        self.completion_ids += ids
        self.completion_mask += [0] * len(ids)
        self.logprobs += [0.0] * len(ids)

    def add_model(self, result: GenerationResult) -> None:
        if len(result.logprobs) != len(result.token_ids):
            raise BridgeError("generator returned a logprob count that differs from its tokens")
        self.completion_ids += list(result.token_ids)
        self.completion_mask += [1] * len(result.token_ids)
        self.logprobs += [float(x) for x in result.logprobs]
        self.last_finished = result.finished
        if not result.finished:
            self.truncated_turns += 1


class TurnBatcher:
    """Runs many graph conversations at once and batches their model turns.

    Each pending turn waits until every still-running conversation has asked
    for its next turn (or finished); then all of them go to the generator in
    one call. With ``lockstep`` (a function ``local_has_work -> any_rank_has_work``,
    e.g. an all-reduce) a process whose conversations are done keeps joining
    empty generation calls until every process is done, because TRL's vLLM
    server mode gathers prompts collectively.

    Each batch goes out sorted by the callers' ``order`` keys (a conversation's
    index), not by which conversation happened to ask first: thread timing
    (image reads, tool nodes) then cannot change what a seeded generator or a
    scripted teacher gives to which conversation.
    """

    def __init__(
        self, generator: Generator, *, lockstep: Callable[[bool], bool] | None = None
    ) -> None:
        self.generator = generator
        self.lockstep = lockstep
        self._pending: list[tuple[int, GenerationRequest, asyncio.Future[GenerationResult]]] = []
        self._active = 0
        self._wake: asyncio.Event | None = None
        self.calls = 0
        self.batch_sizes: list[int] = []

    async def generate(self, request: GenerationRequest, order: int = 0) -> GenerationResult:
        """Queue one turn; ``order`` places it in its batch (ties keep arrival order)."""
        if self._wake is None:
            raise BridgeError("TurnBatcher.generate called outside TurnBatcher.run")
        future: asyncio.Future[GenerationResult] = asyncio.get_running_loop().create_future()
        self._pending.append((order, request, future))
        self._wake.set()
        return await future

    async def _wrap(self, coro: Awaitable[Any]) -> Any:
        try:
            return await coro
        finally:
            self._active -= 1
            assert self._wake is not None
            self._wake.set()

    async def run(self, coros: Sequence[Awaitable[Any]]) -> list[Any]:
        """Run the conversations; returns their results (or exceptions) in order."""
        self._wake = asyncio.Event()
        self._active = len(coros)
        tasks = [asyncio.ensure_future(self._wrap(c)) for c in coros]
        try:
            while True:
                while self._active > 0 and len(self._pending) < self._active:
                    self._wake.clear()
                    await self._wake.wait()
                batch = [(r, f) for _, r, f in sorted(self._pending, key=lambda p: p[0])]
                self._pending = []
                if self.lockstep is not None:
                    if not self.lockstep(bool(batch)):
                        if batch:
                            raise BridgeError("lockstep ended the rollout with turns pending")
                        break
                elif not batch:
                    break
                requests = [r for r, _ in batch]
                try:
                    results = await asyncio.to_thread(self.generator.generate, requests)
                    if len(results) != len(requests):
                        raise BridgeError(
                            f"generator returned {len(results)} results for {len(requests)} requests"
                        )
                except BaseException as exc:
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                self.calls += 1
                self.batch_sizes.append(len(requests))
                for (_, fut), res in zip(batch, results, strict=True):
                    if not fut.done():
                        fut.set_result(res)
            return list(await asyncio.gather(*tasks, return_exceptions=True))
        finally:
            for t in tasks:
                t.cancel()
            self._wake = None


class RecordingChatModel(BaseChatModel):
    """A LangChain chat model over a :class:`Generator` that records every token.

    Use one instance per conversation (its :attr:`ledger` is that conversation).
    Replies are plain text; ``<tool_call>`` blocks in them are read by the
    graph's own parser, so run the graph with ``tool_protocol="text"`` (the tools
    are listed in the system prompt in Qwen's format). Tools bound with
    ``bind_tools`` are rendered by the chat template instead.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    renderer: Any
    batcher: Any
    max_new_tokens: int = 512
    ledger: TokenLedger = Field(default_factory=TokenLedger)
    #: This conversation's place in each generation batch (see :class:`TurnBatcher`).
    order: int = 0
    backend_name: str = "rollout"
    model_name: str | None = None

    @property
    def _llm_type(self) -> str:
        return "tooliqa-rollout"

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: Any = None, **kwargs: Any) -> Any:
        return self.bind(tools=list(tools), **kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        raise BridgeError("RecordingChatModel is async-only: run the graph with ainvoke")

    def _request(self, messages: list[BaseMessage], tools: list[dict[str, Any]] | None) -> None:
        """Append the turns the ledger has not seen yet."""
        ledger = self.ledger
        if not ledger.started:
            hf, images = to_hf_messages(messages)
            ids, vision = self.renderer.prompt(hf, images, tools)
            ledger.prompt_ids = ids
            ledger.images += images
            ledger.vision.append(vision)
            ledger.messages_seen = len(messages)
            return
        seen = ledger.messages_seen
        if len(messages) <= seen or not isinstance(messages[seen], AIMessage):
            raise BridgeError(
                "the conversation does not continue the recorded one (expected the last reply "
                f"at position {seen}); the bridge needs one model instance per conversation"
            )
        said = [m.text.strip() for m in messages[: seen + 1] if isinstance(m, AIMessage)]
        if said != [r.strip() for r in ledger.replies]:
            raise BridgeError(
                "a reply in the conversation differs from what was generated (history edited?)"
            )
        hf, images = to_hf_messages(messages[seen + 1 :])
        ids, vision = self.renderer.continuation(hf, images, closed=ledger.last_finished)
        ledger.add_env(ids)
        ledger.images += images
        if vision:
            ledger.vision.append(vision)
        ledger.messages_seen = len(messages)

    def _vision(self) -> dict[str, Any] | None:
        parts = [v for v in self.ledger.vision if v]
        if not parts:
            return None
        import torch

        return {k: torch.cat([p[k] for p in parts], dim=0) for k in parts[0]}

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        if kwargs.get("response_format") is not None:
            raise BridgeError("structured output is not available in rollouts; train on free text")
        self._request(messages, kwargs.get("tools"))
        max_new = int(kwargs.get("max_tokens") or self.max_new_tokens)
        request = GenerationRequest(
            input_ids=self.ledger.all_ids(),
            images=list(self.ledger.images),
            max_new_tokens=max_new,
            vision=self._vision(),
        )
        result = await self.batcher.generate(request, order=self.order)
        self.ledger.add_model(result)
        ids = list(result.token_ids)
        while ids and ids[-1] in self.renderer.stop_ids:
            ids.pop()
        text = str(self.renderer.tokenizer.decode(ids, skip_special_tokens=True))
        self.ledger.replies.append(text)
        n_in, n_out = len(request.input_ids), len(result.token_ids)
        message = AIMessage(
            content=text,
            usage_metadata={
                "input_tokens": n_in,
                "output_tokens": n_out,
                "total_tokens": n_in + n_out,
            },
            response_metadata={"finish_reason": "stop" if result.finished else "length"},
        )
        return ChatResult(generations=[ChatGeneration(message=message)])
