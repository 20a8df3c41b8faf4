"""Why an image got no score: one classification for every failure, and the retry policy.

Every exception that ends an assessment is mapped by :func:`classify` to a
:class:`Failure` of one :data:`KINDS` kind, with a readable, sanitised reason:

* ``image``: the image cannot be used (unreadable, too large, not a regular file);
* ``model``: the model's output was unusable (no valid score after the repair prompt,
  a malformed or oversized reply body);
* ``client``: the server refused the request (HTTP 4xx other than 408/409/429: a wrong
  model name, a bad key, a request too large): permanent, never retried by itself;
* ``server``: the server failed or could not be reached (HTTP 5xx, 408/409/429, a
  connection refused or reset): transient, retried;
* ``timeout``: a request or the whole image ran out of time: transient, retried;
* ``internal``: anything else, i.e. a bug here: logged with its traceback.

:func:`retry_delay` is the backoff between attempts: exponential with full jitter,
or the server's ``Retry-After`` (capped at :data:`RETRY_AFTER_CAP` seconds).
"""

from __future__ import annotations

import asyncio
import contextvars
import email.utils
import math
import random
import time
from dataclasses import dataclass
from typing import Any, Literal

from tooliqa.tools import ImageError, one_line

__all__ = [
    "KINDS",
    "MAX_REASON_CHARS",
    "RETRIED_ON_RESUME",
    "RETRY_AFTER_CAP",
    "BackendError",
    "DeadlineExceeded",
    "Failure",
    "FailureKind",
    "classify",
    "deadline_at",
    "retry_delay",
    "time_left",
]

FailureKind = Literal["image", "model", "client", "server", "timeout", "internal"]

#: The failure kinds, in the order summaries list them.
KINDS: tuple[FailureKind, ...] = ("image", "model", "client", "server", "timeout", "internal")

#: Kinds a resumed evaluation assesses again (``backend``: rows written by older versions).
RETRIED_ON_RESUME = frozenset({"server", "timeout", "backend"})

#: The longest ``Retry-After`` honoured, in seconds; a longer one is cut to this.
RETRY_AFTER_CAP = 60.0

#: Reasons are cut to this many characters (a server's error text is untrusted and unbounded).
MAX_REASON_CHARS = 500

#: HTTP statuses that say "try again later" although they are 4xx.
_TRANSIENT_4XX = frozenset({408, 409, 429})


class BackendError(RuntimeError):
    """The model server cannot be used (unreachable, refused the request, bad reply).

    ``kind`` is its :data:`KINDS` class (``client``, ``server``, ``timeout`` or
    ``model``), ``status`` the HTTP status when there was one, ``retry_after`` the
    server's ``Retry-After`` in seconds when it sent one.
    """

    def __init__(
        self,
        message: str,
        *,
        kind: FailureKind = "server",
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind: FailureKind = kind
        self.status = status
        self.retry_after = retry_after


class DeadlineExceeded(BackendError):
    """The whole assessment of one image ran past its wall-clock deadline."""

    def __init__(self, seconds: float) -> None:
        super().__init__(
            f"no result within the per-image deadline of {seconds:g} s", kind="timeout"
        )
        self.seconds = seconds


@dataclass(frozen=True)
class Failure:
    """A classified failure: its kind, a readable reason, and whether retrying may help."""

    kind: FailureKind
    reason: str
    status: int | None = None
    retry_after: float | None = None

    @property
    def transient(self) -> bool:
        return self.kind in ("server", "timeout")

    def error(self) -> BackendError:
        """This failure as the :class:`BackendError` a model call raises."""
        return BackendError(
            self.reason, kind=self.kind, status=self.status, retry_after=self.retry_after
        )


#: When (``time.monotonic()``) the assessment under way must be done; None for no deadline.
#: Set by :func:`tooliqa.api.aassess` for the tasks of one image, read by the retry loop
#: so that it never sleeps past it.
deadline_at: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "tooliqa_deadline_at", default=None
)


def time_left() -> float | None:
    """Seconds until the current assessment's deadline (None without one)."""
    end = deadline_at.get()
    return None if end is None else end - time.monotonic()


def _reason(text: str) -> str:
    return one_line(text, MAX_REASON_CHARS)


def _retry_after(headers: Any) -> float | None:
    """``Retry-After`` (seconds or an HTTP date) in seconds, capped; None when absent or bad."""
    try:
        raw = headers.get("retry-after-ms")
        if raw is not None:
            ms = float(raw)
            return min(max(ms / 1000.0, 0.0), RETRY_AFTER_CAP) if math.isfinite(ms) else None
        raw = headers.get("retry-after")
    except Exception:
        return None
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except (TypeError, ValueError):
        try:
            when = email.utils.parsedate_to_datetime(str(raw))
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - time.time()
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP)


def _status_failure(status: int, message: str, headers: Any = None) -> Failure:
    wait = _retry_after(headers) if headers is not None else None
    if status >= 500 or status in _TRANSIENT_4XX:
        return Failure("server", _reason(f"server error (HTTP {status}): {message}"), status, wait)
    if 400 <= status < 500:
        return Failure(
            "client", _reason(f"server refused the request (HTTP {status}): {message}"), status
        )
    return Failure(
        "server", _reason(f"unexpected HTTP {status} from the server: {message}"), status
    )


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen and len(out) < 16:
        seen.add(id(cur))
        out.append(cur)
        cur = cur.__cause__ or cur.__context__
    return out


def classify(exc: BaseException) -> Failure:
    """The :class:`Failure` for an exception that ended an assessment."""
    import openai

    from tooliqa.backends.limits import ReplyTooLarge, http_modules

    transport = tuple(m.TransportError for m in http_modules())
    timeouts = tuple(m.TimeoutException for m in http_modules())

    for e in _chain(exc):
        if isinstance(e, ReplyTooLarge):
            return Failure("model", _reason(str(e)))
    if isinstance(exc, ImageError):
        return Failure("image", _reason(str(exc)))
    if isinstance(exc, BackendError):
        return Failure(exc.kind, _reason(str(exc)), exc.status, exc.retry_after)
    if isinstance(exc, openai.APITimeoutError | asyncio.TimeoutError | TimeoutError):
        return Failure("timeout", _reason(f"the model server did not answer in time: {exc}"))
    if isinstance(exc, openai.APIStatusError):
        headers = getattr(exc.response, "headers", None)
        body = exc.body.get("message") if isinstance(exc.body, dict) else None
        return _status_failure(exc.status_code, str(body or exc.message), headers)
    if isinstance(exc, (openai.APIConnectionError, ConnectionError, *transport)):
        if isinstance(exc, timeouts):
            return Failure("timeout", _reason(f"the model server did not answer in time: {exc}"))
        cause = exc.__cause__ or exc.__context__
        detail = f"{exc}" + (f" ({type(cause).__name__}: {cause})" if cause else "")
        return Failure("server", _reason(f"model server unreachable or connection lost: {detail}"))
    if isinstance(exc, openai.APIResponseValidationError | openai.APIError):
        return Failure("model", _reason(f"malformed reply from the model server: {exc}"))
    return Failure("internal", _reason(f"{type(exc).__name__}: {exc}"))


def retry_delay(attempt: int, backoff: float, retry_after: float | None = None) -> float:
    """Seconds to wait before retry number ``attempt`` (1, 2, ...): the server's
    ``Retry-After`` when given (capped), else ``backoff * 2**(attempt-1)`` with full
    jitter (uniform in [0.5, 1.5] times that), itself capped at :data:`RETRY_AFTER_CAP`."""
    if retry_after is not None and math.isfinite(retry_after):
        return min(max(retry_after, 0.0), RETRY_AFTER_CAP)
    base = backoff * 2 ** min(max(attempt - 1, 0), 30)
    wait = base * random.uniform(0.5, 1.5)
    return min(wait, RETRY_AFTER_CAP) if math.isfinite(wait) and wait > 0 else 0.0
