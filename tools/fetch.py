"""Fetch an image named by an ``http(s)://`` URL, with a byte cap, a time limit and, for
URLs a client sent, no private addresses.

Used by :func:`tooliqa.aassess` for a URL given in process, and by the graph for an
``image`` URL in its input when the run's context allows it (``fetch_urls``; off by
default, since a served graph would otherwise fetch whatever its clients name).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from urllib.parse import urljoin, urlsplit

from .image_io import ImageError, ImageLimits

__all__ = ["DEFAULT_FETCH_TIMEOUT", "MAX_REDIRECTS", "fetch_image_bytes", "is_url"]

#: Seconds one fetch may take, connection, redirects and body together.
DEFAULT_FETCH_TIMEOUT = 20.0

#: Redirects followed (each target is checked like the first URL).
MAX_REDIRECTS = 3


def is_url(value: object) -> bool:
    """Whether ``value`` is text naming an ``http://`` or ``https://`` URL."""
    return isinstance(value, str) and value.strip().lower().startswith(("http://", "https://"))


def _private_allowed() -> bool:
    return os.environ.get("TOOLIQA_FETCH_PRIVATE_URLS", "").strip().lower() in ("1", "true", "yes")


async def _check_host(host: str, port: int, allow_private: bool) -> None:
    """Refuse a host that resolves to a loopback, private, link-local or reserved address
    (unless ``allow_private``): a server must not fetch its own network for a client."""
    if allow_private:
        return
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ImageError(f"cannot resolve the image URL's host {host!r}: {exc}") from None
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if not address.is_global:
            raise ImageError(
                f"the image URL's host {host!r} is a private or local address ({address}): "
                "not fetched (TOOLIQA_FETCH_PRIVATE_URLS=1 where the graph runs allows it)"
            )


async def fetch_image_bytes(
    url: str,
    limits: ImageLimits | None = None,
    *,
    timeout: float = DEFAULT_FETCH_TIMEOUT,
    allow_private: bool | None = None,
) -> bytes:
    """The body at ``url`` (http or https), at most ``limits.max_bytes`` long, fetched in
    at most ``timeout`` seconds with at most :data:`MAX_REDIRECTS` redirects.

    ``allow_private`` (default: env ``TOOLIQA_FETCH_PRIVATE_URLS``) allows hosts on
    loopback and private networks. Every failure is an :class:`ImageError` that says why.
    """
    import httpx

    limits = limits or ImageLimits()
    allow = _private_allowed() if allow_private is None else allow_private
    try:
        return await asyncio.wait_for(_fetch(url, limits, allow), timeout)
    except asyncio.TimeoutError:  # the builtin TimeoutError from 3.11 on
        raise ImageError(f"fetching the image URL took over {timeout:g} s") from None
    except httpx.HTTPError as exc:
        raise ImageError(f"cannot fetch the image URL: {type(exc).__name__}: {exc}") from None


async def _fetch(url: str, limits: ImageLimits, allow: bool) -> bytes:
    import httpx

    async with httpx.AsyncClient(follow_redirects=False, trust_env=False) as client:
        for _ in range(MAX_REDIRECTS + 1):
            parts = urlsplit(url.strip())
            if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
                raise ImageError("an image URL must be http:// or https:// with a host")
            default_port = 443 if parts.scheme.lower() == "https" else 80
            await _check_host(parts.hostname, parts.port or default_port, allow)
            async with client.stream(
                "GET", url, headers={"accept": "image/*", "accept-encoding": "identity"}
            ) as reply:
                if reply.is_redirect and "location" in reply.headers:
                    url = urljoin(url, reply.headers["location"])
                    continue
                if reply.status_code != 200:
                    raise ImageError(f"the image URL answered HTTP {reply.status_code}")
                declared = reply.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > limits.max_bytes:
                    raise ImageError(
                        f"the image at the URL is {int(declared)} bytes, over the "
                        f"limit of {limits.max_bytes}"
                    )
                body = bytearray()
                async for chunk in reply.aiter_raw():
                    body += chunk
                    if len(body) > limits.max_bytes:
                        raise ImageError(
                            f"the image at the URL is over the limit of {limits.max_bytes} bytes"
                        )
                return bytes(body)
        raise ImageError(f"the image URL redirected more than {MAX_REDIRECTS} times")
