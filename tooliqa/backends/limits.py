"""A byte cap on what a model server may send back, at the HTTP transport.

A server that answers with a 50 MB body would otherwise be read whole, parsed,
stored and sent back in the next turn. :class:`CappedTransport` wraps httpx's
transport: a declared ``Content-Length`` over the cap is refused before the body
is read, and a body that streams past the cap is cut there with
:class:`ReplyTooLarge`.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
from collections.abc import AsyncIterator
from types import ModuleType
from typing import Any

__all__ = ["MAX_RESPONSE_BYTES", "CappedTransport", "ReplyTooLarge", "http_module", "http_modules"]

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


class CappedTransport:
    """The OpenAI client's async HTTP transport with every response body capped at
    ``max_bytes`` (duck-typed: it serves httpx and httpx2 clients alike)."""

    def __init__(self, max_bytes: int = MAX_RESPONSE_BYTES, **kwargs: Any) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.max_bytes = max_bytes
        self._inner = http_module().AsyncHTTPTransport(**kwargs)

    async def __aenter__(self) -> CappedTransport:
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._inner.__aexit__(*exc)

    async def handle_async_request(self, request: Any) -> Any:
        response = await self._inner.handle_async_request(request)
        url = (
            f"{request.url.scheme}://{request.url.host}:{request.url.port or ''}{request.url.path}"
        )
        declared = response.headers.get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > self.max_bytes:
            await response.aclose()
            raise ReplyTooLarge(
                f"reply from {url} declares {int(declared)} bytes, over the limit of "
                f"{self.max_bytes} bytes"
            )
        response.stream = _capped_stream()(response.stream, self.max_bytes, url)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()
