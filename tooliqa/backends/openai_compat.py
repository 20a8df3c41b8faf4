"""OpenAI-compatible backend: a vLLM server hosting Qwen3-VL or Tool-IQA-8B.

Reached with :class:`langchain_openai.ChatOpenAI` (a thin subclass labels it and
keeps vLLM's extra response fields). Images travel as data URLs within the
graph's pixel budget; tool views go back in a user turn after the tool message.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import openai
from langchain_openai import ChatOpenAI
from pydantic import PrivateAttr

from tooliqa.failures import BackendError, Failure, classify, retry_delay, time_left
from tooliqa.tools import url_origin

from .limits import MAX_RESPONSE_BYTES, capped_event_hooks

__all__ = [
    "BackendError",
    "OpenAICompatibleChat",
    "ServerConfig",
    "check_server",
    "make_chat_model",
]


class _MalformedReply(ValueError):
    """A reply body that could be read as JSON but not as a chat completion."""


#: What a malformed reply body raises: ours (from :meth:`_create_chat_result`), or the
#: client's JSON decoding of a body that is no JSON at all.
_MALFORMED = (_MalformedReply, json.JSONDecodeError)


class OpenAICompatibleChat(ChatOpenAI):
    """ChatOpenAI labelled for Assessments; vLLM's logprobs stay in ``response_metadata``.

    A JSON-schema ``response_format`` is sent in the request body as it is, through
    the plain completions call: ChatOpenAI would otherwise use the client's
    ``parse`` helper, which raises on a reply cut at ``max_tokens`` instead of
    returning the text (the graph turns such text into a defined outcome).
    """

    backend_name: str = "openai"
    #: Our retries of one request on a transient failure (HTTP 5xx/408/409/429, a lost
    #: connection, a timeout), with jittered backoff or the server's ``Retry-After``. The
    #: OpenAI client's own retries are off, so this is the whole count.
    retries: int = 2
    retry_backoff: float = 1.0
    #: The largest response body read from the server (see :mod:`.limits`).
    max_response_bytes: int = MAX_RESPONSE_BYTES

    _client_loop: Any = PrivateAttr(default=None)

    def _client_for_running_loop(self) -> None:
        """Give the async client an HTTP connection pool of the running event loop.

        LangChain shares one cached pool per base URL process-wide; its
        connections belong to the loop that opened them, so a second
        ``asyncio.run`` (e.g. two ``tooliqa.assess`` calls) would fail with
        "Event loop is closed".
        """
        loop = asyncio.get_running_loop()
        if self._client_loop is loop:
            return
        root = self.root_async_client
        hooks = capped_event_hooks(self.max_response_bytes)
        self.root_async_client = root.with_options(
            max_retries=0,
            http_client=openai.DefaultAsyncHttpxClient(timeout=root.timeout, event_hooks=hooks),
        )
        self.async_client = self.root_async_client.chat.completions
        self._client_loop = loop

    def _wall_clock(self) -> float | None:
        """The whole-request time limit: the client's timeout bounds each read, so a server
        that trickles one byte a second would never trip it; this bounds the request."""
        t = self.request_timeout
        return (
            float(t) if isinstance(t, int | float) and not isinstance(t, bool) and t > 0 else None
        )

    async def _agenerate(
        self, messages: Any, stop: list[str] | None = None, run_manager: Any = None, **kwargs: Any
    ) -> Any:
        """One chat request, retried on transient failures; every failure comes out as a
        :class:`BackendError` whose ``kind`` says what went wrong."""
        self._client_for_running_loop()
        limit = self._wall_clock()
        attempt = 0
        while True:
            try:
                call = super()._agenerate(messages, stop=stop, run_manager=run_manager, **kwargs)
                return await (asyncio.wait_for(call, limit) if limit else call)
            except Exception as exc:
                failure = classify(exc)
                if isinstance(exc, asyncio.TimeoutError | TimeoutError) and limit:
                    failure = Failure("timeout", f"no complete reply within {limit:g} s")
                elif failure.kind == "internal" and isinstance(exc, _MALFORMED):
                    # raised while reading the reply (``choices: null``, a wrong type): its fault
                    failure = Failure(
                        "model", f"malformed reply from the model server: {failure.reason}"
                    )
                elif failure.kind == "internal":
                    raise
                if not failure.transient or attempt >= self.retries:
                    raise self._at_server(failure).error() from exc
                attempt += 1
                wait = retry_delay(attempt, self.retry_backoff, failure.retry_after)
                left = time_left()
                if left is not None and wait >= left:  # the image's deadline comes first
                    raise self._at_server(failure).error() from exc
                await asyncio.sleep(wait)

    def _at_server(self, failure: Failure) -> Failure:
        """``failure`` with the server it came from in its reason (no credentials), so that a
        remote client of a served graph reads which server failed."""
        where = url_origin(str(self.openai_api_base or ""))
        if not where or where in failure.reason:
            return failure
        return dataclasses.replace(failure, reason=f"{failure.reason} [server {where}]")

    def _create_chat_result(self, response: Any, generation_info: dict | None = None) -> Any:
        """ChatOpenAI's result, plus the thinking a vLLM reasoning parser returns beside
        the content (``reasoning_content`` or ``reasoning``), kept in ``additional_kwargs``
        so the protocol sees that the model thought first."""
        try:
            result = super()._create_chat_result(response, generation_info)
            raw = response if isinstance(response, dict) else response.model_dump()
        except Exception as exc:  # ``choices: null``, a message that is a string, ...
            raise _MalformedReply(f"{type(exc).__name__}: {exc}") from exc
        if not result.generations:  # ``choices: []``: nothing to read (later code indexes [0])
            raise _MalformedReply("the reply has no choices")
        for choice, generation in zip(raw.get("choices") or [], result.generations, strict=False):
            message = (choice or {}).get("message") or {}
            for key in ("reasoning_content", "reasoning"):
                value = message.get(key)
                if isinstance(value, str) and value.strip():
                    generation.message.additional_kwargs["reasoning_content"] = value
                    break
        return result

    def _get_request_payload(
        self, input_: Any, *, stop: list[str] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        payload = super()._get_request_payload(input_, stop=stop, **kwargs)
        fmt = payload.get("response_format")
        if isinstance(fmt, dict):
            del payload["response_format"]
            payload["extra_body"] = {**(payload.get("extra_body") or {}), "response_format": fmt}
        return payload


@dataclass(frozen=True)
class ServerConfig:
    """How to reach an OpenAI-compatible server and sample from it.

    ``base_url`` is the API root, e.g. ``http://127.0.0.1:8000/v1`` (``/v1`` is
    appended when missing). ``model=None`` takes the server's first model.
    """

    base_url: str
    model: str | None = None
    api_key: str = field(default="EMPTY", repr=False)
    temperature: float = 0.0
    top_p: float | None = None
    max_tokens: int | None = 1024
    timeout: float = 120.0
    max_retries: int = 2
    backoff: float = 1.0
    seed: int | None = None
    logprobs: bool = False
    extra_body: dict[str, Any] = field(default_factory=dict)

    @property
    def api_root(self) -> str:
        """``base_url`` ending in ``/v1``; :class:`BackendError` unless an http(s) URL."""
        return _http_api_root(self.base_url)


#: URL schemes refused without a "did you mean http://" hint (they are not a host name).
_OTHER_SCHEMES = frozenset({"file", "ftp", "data", "javascript", "mailto", "ws", "wss"})

#: The largest ``/models`` reply read (a model list is a few kilobytes).
_MODELS_MAX_BYTES = 1024 * 1024


def _http_api_root(base_url: str) -> str:
    """The API root (``/v1`` appended when missing) of an http(s) URL with a host;
    :class:`BackendError` for anything else (``file:``, ``ftp:``, ``data:``, no scheme)."""
    from urllib.parse import urlsplit

    url = base_url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        shown = url if len(url) <= 80 else url[:79] + "…"
        hint = ""
        if "://" not in url and parts.scheme.lower() not in _OTHER_SCHEMES:
            hint = f"; did you mean {'http://' + shown!r}?"
        raise BackendError(
            "the server URL must start with http:// or https:// "
            f"(e.g. http://127.0.0.1:8000/v1), not {shown!r}{hint}",
            kind="client",
        )
    return url if url.endswith("/v1") else url + "/v1"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are answered as the HTTP error they are (urllib would follow ``ftp:`` too)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _read_models(root: str, api_key: str, timeout: float, deadline: float) -> bytes:
    """The body of ``GET {root}/models`` (urllib, no redirects, at most 1 MiB)."""
    req = urllib.request.Request(root + "/models", headers={"Authorization": f"Bearer {api_key}"})
    body = bytearray()
    try:
        with urllib.request.build_opener(_NoRedirect).open(req, timeout=timeout) as resp:
            while chunk := resp.read1(64 * 1024):
                body += chunk
                if len(body) > _MODELS_MAX_BYTES:
                    raise BackendError(
                        f"server at {root} sent over {_MODELS_MAX_BYTES} bytes for /models",
                        kind="model",
                    )
                if time.monotonic() > deadline:
                    raise TimeoutError
    except urllib.error.HTTPError as exc:
        exc.close()
        raise BackendError(
            f"server at {root} answered HTTP {exc.code} for /models",
            kind="client" if 400 <= exc.code < 500 else "server",
            status=exc.code,
        ) from None
    except (TimeoutError, urllib.error.URLError, ConnectionError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(exc, TimeoutError) or isinstance(reason, TimeoutError):
            raise BackendError(
                f"no answer from a model server at {root} within {timeout:g} s", kind="timeout"
            ) from None
        raise BackendError(f"cannot reach a model server at {root}: {reason}") from None
    return bytes(body)


def check_server(base_url: str, *, api_key: str = "EMPTY", timeout: float = 10.0) -> list[str]:
    """The model names a server offers (``GET /v1/models``); raises :class:`BackendError`
    with a readable reason when it cannot be reached.

    Only http(s) URLs are requested and no redirect is followed; the whole check,
    headers and reading included, ends within ``timeout`` seconds (a server that
    trickles is left to a background thread); a reply over 1 MiB or not a JSON model
    list is refused, and no reply text is repeated in the error.
    """
    root = _http_api_root(base_url)
    outcome: dict[str, Any] = {}

    def fetch() -> None:
        try:
            outcome["body"] = _read_models(root, api_key, timeout, time.monotonic() + timeout)
        except BaseException as exc:  # handed to the caller
            outcome["error"] = exc

    worker = threading.Thread(target=fetch, name="tooliqa-check-server", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise BackendError(
            f"no answer from a model server at {root} within {timeout:g} s", kind="timeout"
        )
    if "error" in outcome:
        raise outcome["error"]
    try:
        payload = json.loads(outcome["body"].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BackendError(
            f"server at {root} did not return JSON for /models", kind="model"
        ) from None
    data = payload.get("data") if isinstance(payload, dict) else None
    models = [m["id"] for m in data or [] if isinstance(m, dict) and isinstance(m.get("id"), str)]
    models = [m for m in models if m.strip()]
    if not models:
        raise BackendError(f"server at {root} lists no models", kind="model")
    return models


def make_chat_model(config: ServerConfig) -> OpenAICompatibleChat:
    """A LangChain chat model for the server (``ChatOpenAI`` subclass labelled ``openai``)."""
    model = config.model
    if model is None:
        model = check_server(config.base_url, api_key=config.api_key)[0]
    kwargs: dict[str, Any] = {
        "base_url": config.api_root,
        "api_key": config.api_key,
        "model": model,
        "temperature": config.temperature,
        "timeout": config.timeout,
        "max_retries": 0,  # ours: OpenAICompatibleChat.retries
        "retries": config.max_retries,
        "retry_backoff": config.backoff,
        "disable_streaming": True,
    }
    if config.top_p is not None:
        kwargs["top_p"] = config.top_p
    if config.max_tokens is not None:
        kwargs["max_tokens"] = config.max_tokens
    if config.seed is not None:
        kwargs["seed"] = config.seed
    if config.logprobs:
        kwargs["logprobs"] = True
    if config.extra_body:
        kwargs["extra_body"] = dict(config.extra_body)
    return OpenAICompatibleChat(**kwargs)
