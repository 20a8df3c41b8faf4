"""Pixels kept out of graph state: a bounded in-process store of encoded images, named
by content digest.

A run's state (and so every checkpoint of a thread) holds a short reference such as
``tooliqa-blob:sha256:9f86d0...`` where it would otherwise hold the input image, the image sent to
the model or a tool view: a checkpoint is then kilobytes, whatever the image. The node that
calls the model swaps references for ``data:`` URLs just before the call
(:func:`with_pixels`), so the model, and anything recording what it saw, gets the pixels.

The store lives in the process that runs the graph and forgets the least recently used
images beyond its byte budget (``TOOLIQA_BLOB_CACHE_MB``, default 512, at least 256),
sparing images used in the last ten minutes up to twice the budget. A reference whose
pixels are gone (another process, a restart, a long-idle thread) is a clear
:class:`~tooliqa.tools.ImageError` asking for the image again, never a wrong image.
"""

from __future__ import annotations

import base64
import hashlib
import math
import os
import re
import time
from collections import OrderedDict
from threading import Lock
from typing import Any

from .image_io import ImageError

__all__ = [
    "BLOBS",
    "SCHEME",
    "BlobStore",
    "blob_data_url",
    "is_blob_ref",
    "sniff_mime",
    "with_pixels",
]

#: What a reference starts with (not ``blob:``, which browsers read as their own URLs).
SCHEME = "tooliqa-blob:sha256:"

_REF = re.compile(re.escape(SCHEME) + r"([0-9a-f]{64})\Z")

_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF8", "image/gif"),
    (b"BM", "image/bmp"),
)


def sniff_mime(data: bytes) -> str:
    """The MIME type of encoded image bytes from their first bytes (PNG when unknown)."""
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    return "image/png"


def is_blob_ref(value: Any) -> bool:
    """Whether ``value`` is a reference made by :meth:`BlobStore.put`."""
    return isinstance(value, str) and _REF.match(value) is not None


class BlobStore:
    """A thread-safe LRU of encoded images keyed by SHA-256.

    Beyond ``max_bytes`` the least recently used images go, except those used in the last
    ``keep_seconds`` (a run under way: its input, model image and views); beyond
    ``2 * max_bytes`` the least recently used go whatever their age, so memory stays
    bounded. The newest image always stays.
    """

    def __init__(self, max_bytes: int, *, keep_seconds: float = 600.0) -> None:
        self.max_bytes = max_bytes
        self.keep_seconds = keep_seconds
        self._items: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._held = 0
        self._lock = Lock()

    def put(self, data: bytes) -> str:
        """Keep ``data`` and return its reference (the same bytes give the same one)."""
        digest = hashlib.sha256(data).hexdigest()
        now = time.monotonic()
        with self._lock:
            if digest in self._items:
                self._items[digest] = (self._items[digest][0], now)
                self._items.move_to_end(digest)
            else:
                self._items[digest] = (bytes(data), now)
                self._held += len(data)
                self._evict(now)
        return f"{SCHEME}{digest}"

    def _evict(self, now: float) -> None:
        for digest in list(self._items):
            if len(self._items) <= 1 or self._held <= self.max_bytes:
                return
            data, used = self._items[digest]
            if now - used < self.keep_seconds and self._held <= 2 * self.max_bytes:
                return  # the rest are as recent: a run under way keeps its images
            del self._items[digest]
            self._held -= len(data)

    def get(self, ref: str) -> bytes:
        """The bytes behind ``ref``; :class:`ImageError` when they are no longer held."""
        match = _REF.match(ref) if isinstance(ref, str) else None
        if match is None:
            raise ImageError(f"not an image reference ({SCHEME}<64 hex digits>)")
        with self._lock:
            item = self._items.get(match[1])
            data = None if item is None else item[0]
            if data is not None:
                self._items[match[1]] = (data, time.monotonic())
                self._items.move_to_end(match[1])
        if data is None:
            raise ImageError(
                "the image this run refers to is no longer held by this process (state keeps "
                "references, not pixels): assess the image again"
            )
        return data

    def __contains__(self, ref: object) -> bool:
        match = _REF.match(ref) if isinstance(ref, str) else None
        with self._lock:
            return match is not None and match[1] in self._items

    @property
    def held_bytes(self) -> int:
        return self._held

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._held = 0


#: The smallest budget: twice the default image byte cap, so one run always fits.
MIN_BUDGET_MB = 256.0


def _budget() -> int:
    try:
        mb = float(os.environ.get("TOOLIQA_BLOB_CACHE_MB", "512"))
    except ValueError:
        mb = 512.0
    if not math.isfinite(mb):
        mb = 512.0
    return int(max(MIN_BUDGET_MB, mb) * 1024 * 1024)


#: The process's store (see the module docs).
BLOBS = BlobStore(_budget())


def blob_data_url(ref: str, store: BlobStore | None = None) -> str:
    """The ``data:`` URL of the image behind ``ref``."""
    data = (store or BLOBS).get(ref)
    return f"data:{sniff_mime(data)};base64,{base64.b64encode(data).decode('ascii')}"


def _resolve_part(part: Any, store: BlobStore) -> Any:
    if isinstance(part, dict) and part.get("type") == "image_url":
        image_url = part.get("image_url")
        url = image_url.get("url") if isinstance(image_url, dict) else image_url
        if isinstance(url, str) and is_blob_ref(url):
            inner = dict(image_url) if isinstance(image_url, dict) else {}
            inner["url"] = blob_data_url(url, store)
            return {**part, "image_url": inner}
    return part


def with_pixels(messages: list[Any], store: BlobStore | None = None) -> list[Any]:
    """``messages`` with every image reference in an ``image_url`` part replaced by the
    image's ``data:`` URL (copies of the messages that had one; the rest as they are)."""
    store = store or BLOBS
    out = []
    for message in messages:
        content = getattr(message, "content", None)
        if isinstance(content, list) and any(
            isinstance(p, dict) and p.get("type") == "image_url" for p in content
        ):
            message = message.model_copy(
                update={"content": [_resolve_part(p, store) for p in content]}
            )
        out.append(message)
    return out
