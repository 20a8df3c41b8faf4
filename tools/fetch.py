"""Fetch an image named by an ``http(s)://`` URL, with a byte cap, a time limit and, for
URLs a client sent, no private addresses.

Used by :func:`tooliqa.aassess` for a URL given in process, and by the graph for an
``image`` URL in its input when the run's context allows it (``fetch_urls``; off by
default, since a served graph would otherwise fetch whatever its clients name).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urljoin, urlsplit

from .env import env_flag
from .image_io import ImageError, ImageLimits

__all__ = [
    "DEFAULT_FETCH_TIMEOUT",
    "MAX_REDIRECTS",
    "fetch_image_bytes",
    "is_url",
    "url_label",
    "url_origin",
]

#: Seconds one fetch may take, connection, redirects and body together.
DEFAULT_FETCH_TIMEOUT = 20.0

#: Redirects followed (each target is checked like the first URL).
MAX_REDIRECTS = 3


def is_url(value: object) -> bool:
    """Whether ``value`` is text naming an ``http://`` or ``https://`` URL."""
    return isinstance(value, str) and value.strip().lower().startswith(("http://", "https://"))


def url_label(url: str, limit: int = 300) -> str:
    """A URL fit for reports: ``scheme://host[:port]/path``, without credentials, query or
    fragment (a signed URL's token stays out), on one bounded line."""
    from .text import one_line

    parts = urlsplit(url.strip())
    host = parts.netloc.rpartition("@")[2]
    return one_line(f"{parts.scheme}://{host}{parts.path}", limit)


def url_origin(url: str) -> str:
    """``scheme://host[:port]`` of a URL, lower-cased, without credentials or path; "" when
    it has no host (or an impossible port)."""
    try:
        parts = urlsplit(url.strip())
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return ""
    if not parts.hostname:
        return ""
    return f"{parts.scheme.lower()}://{parts.hostname.lower()}{port}"


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 form carries (mapped, 6to4, Teredo, NAT64, compatible)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    value = int(address)
    if value >> 32 == 0x0064FF9B << 64 or value >> 32 == 0:  # 64:ff9b::/96, ::a.b.c.d
        return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    return None


def _is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        inner = _embedded_ipv4(address)
        if inner is not None:
            return inner.is_global and address.is_global
    return address.is_global


async def _checked_address(host: str, port: int, allow_private: bool) -> str | None:
    """The address to connect to for ``host``: refused when any address it resolves to is
    loopback, private, link-local or reserved, also inside an IPv6 form (unless
    ``allow_private``: then None, connect by name). A server must not fetch its own network
    for a client, and connecting to the address checked (not a second lookup) keeps a
    rebinding DNS answer from switching it."""
    if allow_private:
        return None
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ImageError(f"cannot resolve the image URL's host {host!r}: {exc}") from None
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    for address in addresses:
        if not _is_public(address):
            raise ImageError(
                f"the image URL's host {host!r} is a private or local address ({address}): "
                "not fetched (TOOLIQA_FETCH_PRIVATE_URLS=1 where the graph runs allows it)"
            )
    if not addresses:
        raise ImageError(f"cannot resolve the image URL's host {host!r}")
    return str(addresses[0])


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
    allow = env_flag("TOOLIQA_FETCH_PRIVATE_URLS") if allow_private is None else allow_private
    try:
        return await asyncio.wait_for(_fetch(url.strip(), limits, allow), timeout)
    except asyncio.TimeoutError:  # the builtin TimeoutError from 3.11 on
        raise ImageError(f"fetching the image URL took over {timeout:g} s") from None
    except (httpx.HTTPError, httpx.InvalidURL, ValueError, UnicodeError) as exc:
        if isinstance(exc, ImageError):
            raise
        reason = f"{type(exc).__name__}: {exc}"
        raise ImageError(f"cannot fetch the image URL: {reason[:300]}") from None


async def _fetch(url: str, limits: ImageLimits, allow: bool) -> bytes:
    import httpx

    async with httpx.AsyncClient(follow_redirects=False, trust_env=False) as client:
        for _ in range(MAX_REDIRECTS + 1):
            parts = urlsplit(url.strip())
            if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
                raise ImageError("an image URL must be http:// or https:// with a host")
            default_port = 443 if parts.scheme.lower() == "https" else 80
            port = parts.port or default_port
            address = await _checked_address(parts.hostname, port, allow)
            headers = {"accept": "image/*", "accept-encoding": "identity"}
            target, extensions = url, {}
            if address is not None:  # connect to the address checked, name the host
                shown = f"[{address}]" if ":" in address else address
                target = parts._replace(netloc=f"{shown}:{port}").geturl()
                headers["host"] = parts.netloc.rpartition("@")[2]
                extensions = {"sni_hostname": parts.hostname}
            async with client.stream(
                "GET", target, headers=headers, extensions=extensions
            ) as reply:
                if reply.is_redirect and "location" in reply.headers:
                    url = urljoin(url, reply.headers["location"]).strip()
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
