"""Failure classification and the retry policy (tooliqa.failures)."""

from __future__ import annotations

import asyncio
import email.utils
import time

import httpx
import openai
import pytest

from tooliqa.backends.limits import ReplyTooLarge, http_module
from tooliqa.failures import (
    RETRY_AFTER_CAP,
    BackendError,
    DeadlineExceeded,
    classify,
    retry_delay,
)
from tooliqa.tools import ImageError


def _status_error(code: int, headers: dict[str, str] | None = None) -> openai.APIStatusError:
    mod = http_module()
    request = mod.Request("POST", "http://127.0.0.1:1/v1/chat/completions")
    response = mod.Response(code, headers=headers or {}, request=request)
    body = {"message": "<b>nope</b>\x1b[31m", "code": code}
    cls = {400: openai.BadRequestError, 401: openai.AuthenticationError,
           404: openai.NotFoundError, 409: openai.ConflictError,
           422: openai.UnprocessableEntityError, 429: openai.RateLimitError}.get(
        code, openai.InternalServerError)  # fmt: skip
    return cls(f"Error code: {code}", response=response, body=body)


@pytest.mark.parametrize(
    ("code", "kind"),
    [(400, "client"), (401, "client"), (404, "client"), (422, "client"),
     (408, "server"), (409, "server"), (429, "server"), (500, "server"), (503, "server")],
)  # fmt: skip
def test_http_statuses(code, kind):
    f = classify(_status_error(code))
    assert f.kind == kind and f"HTTP {code}" in f.reason
    assert f.transient == (kind == "server")
    assert "\x1b" not in f.reason and "nope" in f.reason  # the server's text, made printable


def test_retry_after_seconds_and_dates_are_capped():
    assert classify(_status_error(429, {"retry-after": "3"})).retry_after == 3.0
    assert classify(_status_error(503, {"retry-after": "100000"})).retry_after == RETRY_AFTER_CAP
    soon = email.utils.formatdate(time.time() + 5, usegmt=True)
    assert 2.0 <= classify(_status_error(503, {"retry-after": soon})).retry_after <= 6.0
    assert classify(_status_error(503, {"retry-after": "Wed, 21 Oct 2015"})).retry_after in (
        0.0,
        None,
    )
    assert classify(_status_error(503, {"retry-after": "soon"})).retry_after is None
    assert classify(_status_error(503, {"retry-after-ms": "250"})).retry_after == 0.25
    for bad in ("nan", "inf", "-inf"):  # never a sleep that does not end
        assert classify(_status_error(503, {"retry-after-ms": bad})).retry_after is None
        assert classify(_status_error(503, {"retry-after": bad})).retry_after is None


def test_other_failures():
    request = httpx.Request("POST", "http://127.0.0.1:1/v1")
    assert classify(ImageError("bad")).kind == "image"
    assert classify(openai.APIConnectionError(request=request)).kind == "server"
    assert classify(openai.APITimeoutError(request=request)).kind == "timeout"
    assert classify(asyncio.TimeoutError()).kind == "timeout"
    assert classify(DeadlineExceeded(5)).kind == "timeout"
    assert classify(BackendError("x", kind="client", status=404)).status == 404
    wrapped = openai.APIConnectionError(request=request)
    wrapped.__cause__ = ReplyTooLarge("over the limit")
    assert classify(wrapped).kind == "model"  # the same request would get the same reply
    bug = classify(KeyError("oops"))
    assert bug.kind == "internal" and bug.reason == "KeyError: 'oops'" and not bug.transient


def test_reasons_are_bounded_and_printable():
    f = classify(BackendError("\ud800" + "x" * 10_000))
    assert len(f.reason) <= 500 and "\ud800" not in f.reason


def test_retry_delay_backs_off_with_jitter_and_honours_retry_after():
    delays = [retry_delay(3, 1.0) for _ in range(200)]
    assert min(delays) >= 2.0 and max(delays) <= 6.0 and len(set(delays)) > 100
    assert retry_delay(1, 1.0, retry_after=7.0) == 7.0
    assert retry_delay(1, 1.0, retry_after=1e9) == RETRY_AFTER_CAP
    assert all(retry_delay(n, 1.0) <= RETRY_AFTER_CAP for n in range(1, 200))
    assert retry_delay(1, 1.0, retry_after=float("nan")) <= 1.5
