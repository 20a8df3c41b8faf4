"""A byte cap on what a model server may send back, at the HTTP client.

A server that answers with a 50 MB body would otherwise be read whole, parsed,
stored and sent back in the next turn. :func:`capped_event_hooks` gives the OpenAI
client's HTTP client two hooks: requests ask for an uncompressed reply (a
compressed one could expand past any cap), and a reply that declares a
``Content-Length`` over the cap, or comes compressed anyway, is refused before its
body is read; a body that streams past the cap is cut there. Both raise
:class:`ReplyTooLarge`. Hooks leave the client's own transport (and so its proxy
settings) as they are.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
from collections.abc import AsyncIterator
from types import ModuleType
from typing import Any

__all__ = [
    "MAX_RESPONSE_BYTES",
    "ReplyTooLarge",
    "capped_event_hooks",
    "http_module",
    "http_modules",
]

#: The largest response body accepted from a model server (a 1,024-token reply with
#: top-5 logprobs is well under 1 MB).
MAX_RESPONSE_BYTES = 8 * 1024 * 1024


@functools.cache
def http_module() -> ModuleType:
    """The HTTP client package the OpenAI client is built on (``httpx``, or its successor
    ``httpx2`` in newer releases)."""
    import openai

    for cls in type.mro(openai.DefaultAsyncHttpxClient):
        if cls.__name__ == "AsyncClient":
            return importlib.import_module(cls.__module__.split(".")[0])
    return importlib.import_module("httpx")  # pragma: no cover


@functools.cache
def http_modules() -> tuple[ModuleType, ...]:
    """Every installed HTTP client package whose errors may reach us."""
    found = []
    for name in ("httpx", "httpx2"):
        with contextlib.suppress(ImportError):
            found.append(importlib.import_module(name))
    return tuple(found)


class ReplyTooLarge(Exception):
    """The server's response body is over the byte cap."""


@functools.cache
def _capped_stream() -> type:
    """A response stream class of the client's own package (it checks the type)."""

    class CappedStream(http_module().AsyncByteStream):  # type: ignore[misc]
        def __init__(self, inner: Any, cap: int, url: str) -> None:
            self._inner, self._cap, self._url = inner, cap, url

        async def __aiter__(self) -> AsyncIterator[bytes]:
            seen = 0
            async for chunk in self._inner:
                seen += len(chunk)
                if seen > self._cap:
                    raise ReplyTooLarge(
                        f"reply from {self._url} is over the limit of {self._cap} bytes"
                    )
                yield chunk

        async def aclose(self) -> None:
            await self._inner.aclose()

    return CappedStream


def _where(url: Any) -> str:
    return f"{url.scheme}://{url.host}:{url.port or ''}{url.path}"


def capped_event_hooks(max_bytes: int = MAX_RESPONSE_BYTES) -> dict[str, list[Any]]:
    """``event_hooks`` for an async httpx(2) client that cap every response body at
    ``max_bytes`` (see the module docstring)."""
    if max_bytes <= 0:
        raise ValueError("max_bytes must be positive")

    async def on_request(request: Any) -> None:
        request.headers["Accept-Encoding"] = "identity"

    async def on_response(response: Any) -> None:
        url = _where(response.request.url)
        encoding = response.headers.get("content-encoding", "").strip().lower()
        if encoding not in ("", "identity"):
            raise ReplyTooLarge(
                f"reply from {url} is compressed ({encoding[:20]}) although an uncompressed "
                "one was asked for; refused, as it could expand past the size limit"
            )
        declared = response.headers.get("content-length", "").strip()
        if declared.isdigit() and int(declared) > max_bytes:
            raise ReplyTooLarge(
                f"reply from {url} declares {int(declared)} bytes, over the limit of "
                f"{max_bytes} bytes"
            )
        response.stream = _capped_stream()(response.stream, max_bytes, url)

    return {"request": [on_request], "response": [on_response]}
