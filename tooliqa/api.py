"""The public Python entry: ``assess(image) -> Assessment`` and the app-level graph.

Without a model or server, the embedded classic backend assesses (no GPU, no
network); with ``server=URL`` an OpenAI-compatible (vLLM) server does.

``graph`` here is the compiled assessment graph whose context defaults to the
classic backend (or to a server named in the context): it is the graph that
``langgraph.json`` serves.
"""

from __future__ import annotations

import asyncio
import functools
import io
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig
from pydantic.json_schema import SkipJsonSchema

from tooliqa.failures import BackendError, DeadlineExceeded, classify, deadline_at
from tooliqa.graph import Assessment, Context, OutputState, Usage, compile_graph
from tooliqa.graph.nodes import backend_name
from tooliqa.graph.uncertainty import from_samples
from tooliqa.tools import (
    BLOBS,
    ImageError,
    ImageLimits,
    decode_image_cached,
    env_flag,
    fetch_image_bytes,
    is_blob_ref,
    is_url,
    read_image_bytes,
    url_label,
    url_origin,
)

__all__ = [
    "DEFAULT_DEADLINE",
    "AppContext",
    "ImageInput",
    "aassess",
    "assess",
    "assess_many",
    "combine_samples",
    "graph",
    "load_image_input",
    "make_context",
    "stream_within",
]

ImageInput = str | os.PathLike[str] | bytes | np.ndarray | Any
T = TypeVar("T")

#: Seconds one image may take, all turns and samples together, before it fails as a
#: ``timeout`` (:class:`~tooliqa.failures.DeadlineExceeded`); None for no limit.
DEFAULT_DEADLINE = 600.0


def _trusted_servers() -> set[str]:
    """The origins the operator trusts with its API key (``TOOLIQA_TRUSTED_SERVERS``)."""
    listed = os.environ.get("TOOLIQA_TRUSTED_SERVERS", "")
    return {url_origin(u) for u in listed.split(",")} - {""}


@dataclass(kw_only=True)
class AppContext(Context):
    """A :class:`Context` whose model defaults to the classic backend, or to the
    OpenAI-compatible server at ``server``, all described by plain values (what a JSON
    client of the served graph sends):

    Attributes:
        server: the server's base URL (``http://host:port/v1``); None for the classic backend.
        server_model: the served model's name; None asks the server for its first model.
        api_key: the server's API key. None takes ``TOOLIQA_API_KEY``, then
            ``OPENAI_API_KEY`` from the environment where the graph runs, but only for a
            server whose origin is listed in ``TOOLIQA_TRUSTED_SERVERS`` (comma-separated,
            e.g. ``http://127.0.0.1:8000``): a client of a served graph names ``server``
            itself and must not receive the operator's key. (A key sent in a served run's
            context is stored with the run by LangGraph Server.)
            With ``TOOLIQA_ONLY_TRUSTED_SERVERS=1`` a ``server`` outside that list is refused
            (a served graph then reaches no host its operator did not name).
        request_timeout: seconds one model request may take, retries aside.
        max_retries: retries of a failed model request (connection, 429, 5xx).
    """

    server: str | None = None
    server_model: str | None = None
    api_key: str | None = field(default=None, repr=False)
    request_timeout: float = 120.0
    max_retries: int = 2
    _resolved: SkipJsonSchema[BaseChatModel | None] = field(
        default=None, init=False, repr=False, compare=False
    )
    _lock: SkipJsonSchema[Any] = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.request_timeout <= 3600:
            raise ValueError("request_timeout must be in (0, 3600] seconds")
        if not 0 <= self.max_retries <= 10:
            raise ValueError("max_retries must be between 0 and 10")
        if (
            self.server
            and env_flag("TOOLIQA_ONLY_TRUSTED_SERVERS")
            and url_origin(self.server) not in _trusted_servers()
        ):
            raise ValueError(
                "context setting server names a server this deployment does not allow "
                "(TOOLIQA_ONLY_TRUSTED_SERVERS=1: only the origins in TOOLIQA_TRUSTED_SERVERS)"
            )

    def _api_key(self) -> str:
        if self.api_key:
            return self.api_key
        if self.server and url_origin(self.server) in _trusted_servers():
            return os.environ.get("TOOLIQA_API_KEY") or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        return "EMPTY"

    async def aget_model(self) -> BaseChatModel:
        """The model, built off the event loop the first time (asking a server for its
        model name is a blocking request)."""
        if self.model is not None:
            return self.model
        if self._resolved is None:
            await asyncio.to_thread(self.get_model)
        return self.get_model()

    def get_model(self) -> BaseChatModel:
        if self.model is not None:
            return self.model
        with self._lock:  # concurrent runs sharing this context build one model
            return self._resolve()

    def _resolve(self) -> BaseChatModel:
        if self._resolved is None:
            if self.server:
                from tooliqa.backends.openai_compat import ServerConfig, make_chat_model

                self._resolved = make_chat_model(
                    ServerConfig(
                        self.server,
                        self.server_model,
                        api_key=self._api_key(),
                        timeout=self.request_timeout,
                        max_retries=self.max_retries,
                    )
                )
            else:
                from tooliqa.backends.classic import ClassicChatModel

                self._resolved = ClassicChatModel(bbox_convention=self.bbox_convention)
        return self._resolved


#: The compiled graph with :class:`AppContext` (classic backend unless told otherwise).
graph = compile_graph(context_schema=AppContext, output_schema=OutputState)
"""The graph ``langgraph.json`` serves and a parent graph embeds: the image (bytes, base64
or a data URL) in, ``{"assessment": {...}}`` out."""

#: The same graph returning its whole state (the views of the steps): what :func:`aassess` runs.
_full_graph = compile_graph(context_schema=AppContext)


def make_context(
    *,
    model: BaseChatModel | None = None,
    server: str | None = None,
    model_name: str | None = None,
    max_rounds: int = 2,
    **settings: Any,
) -> AppContext:
    """A run context: an explicit ``model`` wins, else ``server``, else the classic backend."""
    ctx = AppContext(
        model=model, server=server, server_model=model_name, max_tool_rounds=max_rounds, **settings
    )
    ctx.get_model()  # resolve now: a bad server fails here, once, with a clear message
    return ctx


class NotAnImage(ImageError, TypeError):
    """The input is no kind of image (a number, a list...)."""


def load_image_input(
    image: ImageInput, limits: ImageLimits | None = None
) -> tuple[bytes, str | None]:
    """Encoded bytes and a display name for a path, bytes, numpy array or PIL image."""
    if isinstance(image, str | os.PathLike):
        return read_image_bytes(image, limits), str(image)
    if isinstance(image, bytes | bytearray | memoryview):
        return bytes(image), None
    if isinstance(image, np.ndarray):
        from tooliqa.tools import encode_image

        arr = image if image.ndim == 3 else np.repeat(np.asarray(image)[..., None], 3, axis=2)
        if arr.dtype != np.uint8:
            raise ImageError(f"numpy images must be uint8, got {arr.dtype}")
        return encode_image(arr[..., :3]), None
    if hasattr(image, "save") and hasattr(image, "mode"):  # a PIL image
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return buf.getvalue(), getattr(image, "filename", None) or None
    raise NotAnImage(f"cannot assess an object of type {type(image).__name__}")


def _backend_error(exc: BaseException) -> BackendError | None:
    """A model-server failure raised by any chat model as a :class:`BackendError` with a
    readable reason and its kind; None for anything else."""
    if isinstance(exc, BackendError):
        return exc
    failure = classify(exc)
    return None if failure.kind in ("image", "internal") else failure.error()


async def _within(coro: Awaitable[T], deadline: float | None) -> T:
    """Await ``coro``; past ``deadline`` seconds it is cancelled and DeadlineExceeded raised."""
    if deadline is None:
        return await coro
    end = time.monotonic() + deadline
    current = deadline_at.get()
    token = deadline_at.set(end if current is None else min(current, end))
    try:
        task = asyncio.ensure_future(coro)  # the task copies the deadline with the context
    finally:
        deadline_at.reset(token)
    try:
        done, _ = await asyncio.wait({task}, timeout=deadline)
    except BaseException:  # cancelled from outside: take the work down with it, then go
        task.cancel()
        await asyncio.wait({task})
        raise
    if not done:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise DeadlineExceeded(deadline)
    return task.result()


async def stream_within(stream: AsyncIterator[T], deadline: float | None) -> AsyncIterator[T]:
    """The items of ``stream`` (e.g. ``graph.astream(...)``) while ``deadline`` seconds last
    from the first request; then the stream is closed and DeadlineExceeded raised."""
    if deadline is None:
        async for item in stream:
            yield item
        return
    end = time.monotonic() + deadline
    try:
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise DeadlineExceeded(deadline)
            try:
                item = await _within(anext(stream), left)
            except StopAsyncIteration:
                return
            except DeadlineExceeded:
                raise DeadlineExceeded(deadline) from None
            yield item
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()


async def aassess(
    image: ImageInput,
    *,
    context: Context | None = None,
    model: BaseChatModel | None = None,
    server: str | None = None,
    model_name: str | None = None,
    query: str | None = None,
    max_rounds: int = 2,
    name: str | None = None,
    config: RunnableConfig | None = None,
    samples: int = 1,
    deadline: float | None = DEFAULT_DEADLINE,
) -> Assessment:
    """Assess one image. Raises :class:`~tooliqa.tools.ImageError` for an unusable
    image and :class:`~tooliqa.failures.BackendError` when the model server fails
    (its ``kind``: ``client``, ``server``, ``timeout`` or ``model``; see
    :mod:`tooliqa.failures`), :class:`~tooliqa.failures.DeadlineExceeded` (a
    BackendError) when the whole assessment takes over ``deadline`` seconds.

    ``samples=N`` (N > 1) runs N trajectories concurrently (sample with a
    temperature above 0, e.g. ``ServerConfig(temperature=0.7)``): see
    :func:`combine_samples` for the one Assessment that comes back. A sample that raises
    (a server error) is a failed sample, counted in ``uncertainty`` and named in
    ``errors``; only when every sample raises does the call raise.
    """
    if samples < 1:
        raise ValueError("samples must be >= 1")
    if deadline is not None and not deadline > 0:
        raise ValueError("deadline must be positive (or None for no limit)")
    ctx = (
        context
        if context is not None
        else await asyncio.to_thread(
            functools.partial(
                make_context,
                model=model,
                server=server,
                model_name=model_name,
                max_rounds=max_rounds,
            )
        )
    )
    if is_url(image):  # the caller's own process: its private network is its own
        data = await fetch_image_bytes(str(image), ctx.image_limits, allow_private=True)
        default_name: str | None = url_label(str(image))
    else:
        data, default_name = await asyncio.to_thread(load_image_input, image, ctx.image_limits)
    await asyncio.to_thread(decode_image_cached, data, ctx.image_limits)  # fail early, clearly
    # the graph gets a reference: a checkpointer in ``config`` stores no pixels
    inputs = {"image": BLOBS.put(data), "image_name": name or default_name, "image_question": query}
    if samples == 1:
        return await _within(_run_once(inputs, ctx, config), deadline)
    return await _within(_sampled(inputs, ctx, config, samples, name or default_name), deadline)


async def _sampled(
    inputs: dict[str, Any],
    ctx: Context,
    config: RunnableConfig | None,
    samples: int,
    name: str | None,
) -> Assessment:
    t0 = time.perf_counter()
    outcomes = await asyncio.gather(
        *(_run_once(inputs, ctx, config) for _ in range(samples)), return_exceptions=True
    )
    runs = [o for o in outcomes if isinstance(o, Assessment)]
    raised = [o for o in outcomes if not isinstance(o, Assessment)]
    for exc in raised:
        if not isinstance(exc, Exception):  # KeyboardInterrupt, CancelledError: not a sample's
            raise exc
    if not runs:
        raise raised[0]  # every sample failed: the first failure, as with samples=1
    failures = [classify(e) for e in raised]
    runs += [Assessment.failure(f.reason, image=name, kind=f.kind) for f in failures]
    result = combine_samples(runs)
    result.timings["total_s"] = round(time.perf_counter() - t0, 6)
    return result


def combine_samples(runs: list[Assessment]) -> Assessment:
    """One Assessment from N sampled trajectories of the same image.

    The score is the mean of the scores that were produced; ``uncertainty`` holds
    their sample std, a 90% t prediction interval and the per-sample scores (see
    :func:`tooliqa.graph.uncertainty.from_samples`). Rubric, steps, rationale,
    answer and transcript are those of the first trajectory (in launch order) that
    produced a score; usage and model timings are summed over all N. A per-sample
    logprob distribution, if any, is kept under ``uncertainty["per_sample"]``.
    When no trajectory produced a score the first one is returned as it is.
    """
    scored = [a for a in runs if a.score is not None]
    if not scored:
        return runs[0]
    dist = from_samples(
        [float(a.score) for a in scored if a.score is not None], attempted=len(runs)
    )
    result = scored[0].model_copy(deep=True)
    result.score = round(dist.mean, 4)
    result.uncertainty = dist.as_dict()
    per_sample = [a.uncertainty for a in runs if a.uncertainty is not None]
    if per_sample:
        result.uncertainty["per_sample"] = per_sample
    for field_name in Usage.model_fields:
        setattr(result.usage, field_name, sum(getattr(a.usage, field_name) for a in runs))
    timings: dict[str, float] = {}
    for a in runs:
        for key, value in a.timings.items():
            timings[key] = round(timings.get(key, 0.0) + value, 6)
    result.timings = timings
    failed = [a.error for a in runs if a.score is None and a.error]
    result.errors = [*result.errors, *(f"sample failed: {e}" for e in failed)]
    if result.query_answer is not None:
        result.query_answer = _combine_answers(result.query_answer, scored, result.score)
    return result


def _combine_answers(
    first: dict[str, Any], scored: list[Assessment], mean: float | None
) -> dict[str, Any]:
    """The query answer of N samples: the first sample's text and evidence, the majority
    verdict (ties go to the first sample's), the mean focus score, and every sample's
    verdict and score."""
    answers = [a.query_answer for a in scored if a.query_answer is not None]
    out = dict(first)
    verdicts = [qa.get("verdict") for qa in answers]
    counted = [v for v in verdicts if v is not None]
    if counted:
        best = max(("yes", "no"), key=lambda v: (counted.count(v), v == first.get("verdict")))
        out["verdict"] = best
    if out.get("score_of", "overall") != "overall":
        out["score"] = mean  # the <answer> score was the focus attribute's
    else:
        values = [float(qa["score"]) for qa in answers if qa.get("score") is not None]
        out["score"] = round(sum(values) / len(values), 4) if values else None
    out["samples"] = [{"verdict": qa.get("verdict"), "score": qa.get("score")} for qa in answers]
    return out


async def _run_once(
    inputs: dict[str, Any], ctx: Context, config: RunnableConfig | None
) -> Assessment:
    """One trajectory through the graph, as an Assessment with its views attached."""
    t0 = time.perf_counter()
    try:
        state = await _full_graph.ainvoke(inputs, config=config, context=ctx)
    except Exception as exc:
        translated = _backend_error(exc)
        if translated is not None:
            raise translated from exc
        raise
    result = Assessment.model_validate(state["assessment"])
    for step, raw in zip(result.steps, state.get("steps") or [], strict=False):
        view = raw.get("view")
        if is_blob_ref(view):  # gone only if the store's hard cap was hit meanwhile
            view = BLOBS.get(view) if view in BLOBS else None
        step.view = view if isinstance(view, bytes) else None
    result.timings["total_s"] = round(time.perf_counter() - t0, 6)
    return result


def assess(image: ImageInput, **kwargs: Any) -> Assessment:
    """Synchronous :func:`aassess` (for scripts and notebooks without a running loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(aassess(image, **kwargs))
    raise RuntimeError("assess() was called inside a running event loop; use `await aassess(...)`")


async def assess_many(
    images: Iterable[ImageInput],
    *,
    context: Context | None = None,
    concurrency: int = 4,
    query: str | None = None,
    samples: int = 1,
    deadline: float | None = DEFAULT_DEADLINE,
    **kwargs: Any,
) -> AsyncIterator[tuple[int, Assessment]]:
    """Assess many images concurrently, yielding ``(index, Assessment)`` as each finishes
    (``samples``, ``deadline``: per image, see :func:`aassess`).

    One bad image never stops the others: whatever it raises, its Assessment carries
    ``error`` and ``error_kind`` (see :mod:`tooliqa.failures`).
    """
    ctx = context or make_context(**kwargs)
    label = backend_name(ctx.get_model())
    sem = asyncio.Semaphore(max(1, concurrency))

    async def one(i: int, item: ImageInput) -> tuple[int, Assessment]:
        async with sem:
            shown = str(item) if isinstance(item, str | os.PathLike) else None
            try:
                a = await aassess(
                    item, context=ctx, query=query, samples=samples, deadline=deadline
                )
            except Exception as exc:
                failure = classify(exc)
                return i, Assessment.failure(
                    failure.reason, image=shown, backend=label, kind=failure.kind
                )
            return i, a

    tasks = [asyncio.create_task(one(i, item)) for i, item in enumerate(images)]
    try:
        for fut in asyncio.as_completed(tasks):
            yield await fut
    finally:
        for task in tasks:
            task.cancel()


def _keep(found: list[Path], err: OSError) -> None:
    """A folder ``os.walk`` cannot read is kept: assessing it fails alone, with its reason."""
    if err.filename:
        found.append(Path(err.filename))


def image_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Expand directories (recursively, sorted, symbolic links to folders not followed) to
    the image files inside. A path that cannot be looked at (a symlink loop, a name too
    long) is kept as it is: assessing it then fails for that image alone, with a reason."""
    exts = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        try:
            is_dir = p.is_dir()
        except OSError:
            is_dir = False
        if not is_dir:
            out.append(p)
            continue
        found: list[Path] = []
        for folder, _, names in os.walk(
            p, onerror=functools.partial(_keep, found), followlinks=False
        ):
            for name in names:
                f = Path(folder) / name
                if f.suffix.lower() in exts:
                    found.append(f)
        out += sorted(found)
    return out
