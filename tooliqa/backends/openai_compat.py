"""OpenAI-compatible backend: a vLLM server hosting Qwen3-VL or Tool-IQA-8B.

Reached with :class:`langchain_openai.ChatOpenAI` (a thin subclass labels it and
keeps vLLM's extra response fields). Images travel as data URLs within the
graph's pixel budget; tool views go back in a user turn after the tool message.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import openai
from langchain_openai import ChatOpenAI
from pydantic import PrivateAttr

__all__ = [
    "BackendError",
    "OpenAICompatibleChat",
    "ServerConfig",
    "check_server",
    "make_chat_model",
]


class OpenAICompatibleChat(ChatOpenAI):
    """ChatOpenAI labelled for Assessments; vLLM's logprobs stay in ``response_metadata``.

    A JSON-schema ``response_format`` is sent in the request body as it is, through
    the plain completions call: ChatOpenAI would otherwise use the client's
    ``parse`` helper, which raises on a reply cut at ``max_tokens`` instead of
    returning the text (the graph turns such text into a defined outcome).
    """

    backend_name: str = "openai"

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
        self.root_async_client = root.with_options(
            http_client=openai.DefaultAsyncHttpxClient(timeout=root.timeout)
        )
        self.async_client = self.root_async_client.chat.completions
        self._client_loop = loop

    async def _agenerate(
        self, messages: Any, stop: list[str] | None = None, run_manager: Any = None, **kwargs: Any
    ) -> Any:
        self._client_for_running_loop()
        return await super()._agenerate(messages, stop=stop, run_manager=run_manager, **kwargs)

    def _create_chat_result(self, response: Any, generation_info: dict | None = None) -> Any:
        """ChatOpenAI's result, plus the thinking a vLLM reasoning parser returns beside
        the content (``reasoning_content`` or ``reasoning``), kept in ``additional_kwargs``
        so the protocol sees that the model thought first."""
        result = super()._create_chat_result(response, generation_info)
        raw = response if isinstance(response, dict) else response.model_dump()
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


class BackendError(RuntimeError):
    """The model server cannot be used (unreachable, wrong model, bad reply)."""


@dataclass(frozen=True)
class ServerConfig:
    """How to reach an OpenAI-compatible server and sample from it.

    ``base_url`` is the API root, e.g. ``http://127.0.0.1:8000/v1`` (``/v1`` is
    appended when missing). ``model=None`` takes the server's first model.
    """

    base_url: str
    model: str | None = None
    api_key: str = "EMPTY"
    temperature: float = 0.0
    top_p: float | None = None
    max_tokens: int | None = 1024
    timeout: float = 120.0
    max_retries: int = 2
    seed: int | None = None
    logprobs: bool = False
    extra_body: dict[str, Any] = field(default_factory=dict)

    @property
    def api_root(self) -> str:
        url = self.base_url.rstrip("/")
        return url if url.endswith("/v1") else url + "/v1"


def check_server(base_url: str, *, api_key: str = "EMPTY", timeout: float = 10.0) -> list[str]:
    """The model names a server offers (``GET /v1/models``); raises :class:`BackendError`
    with a readable reason when it cannot be reached."""
    root = ServerConfig(base_url).api_root
    req = urllib.request.Request(root + "/models", headers={"Authorization": f"Bearer {api_key}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            payload = json.loads(resp.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        raise BackendError(f"server at {root} answered HTTP {exc.code} for /models") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise BackendError(f"cannot reach a model server at {root}: {reason}") from None
    except json.JSONDecodeError:
        raise BackendError(f"server at {root} did not return JSON for /models") from None
    models = [str(m["id"]) for m in payload.get("data", []) if isinstance(m, dict) and m.get("id")]
    if not models:
        raise BackendError(f"server at {root} lists no models")
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
        "max_retries": config.max_retries,
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
