"""A local OpenAI-compatible server that answers chat requests with pathologies.

Each chat request draws one pathology: a well-formed answer or tool call, or one
of the ways servers and models fail in the wild: malformed bodies (``choices: null``,
truncated JSON, an HTML page), empty or non-text content, unknown tools, absurd boxes and
scores, HTTP 4xx/5xx (with and without ``Retry-After``), a reset connection, a body that
trickles one byte at a time, a body over the client's byte cap, lone UTF-16 surrogates,
terminal escape codes and HTML in tool names. Standard library only; 127.0.0.1.

    with FuzzServer(seed=3) as server:          # a random mix
    with FuzzServer(only=["http_404"]) as s:    # one pathology for every request
        ... server.base_url ... server.drawn (pathology names, in arrival order)
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import random
import socket
import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["PATHOLOGIES", "FuzzServer"]

GOOD_ANSWER = (
    "<thinking>Sharp edges, little noise, exposure fine.</thinking>\n"
    "<answer>3.5</answer>\n"
    "sharpness: high. noise: low. exposure: normal."
)


def _message(content: Any, tool_calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        msg["tool_calls"] = tool_calls
    return msg


def _call(name: str, arguments: Any) -> list[dict[str, Any]]:
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return [{"id": "call_1", "type": "function", "function": {"name": name, "arguments": args}}]


def _completion(
    message: dict[str, Any], finish: str = "stop", model: str = "fuzz"
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fuzz",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


def _json(payload: Any) -> tuple[int, dict[str, str], bytes]:
    return 200, {"Content-Type": "application/json"}, json.dumps(payload).encode()


def _status(
    code: int, retry_after: str | None = None
) -> Callable[[], tuple[int, dict[str, str], bytes]]:
    def reply() -> tuple[int, dict[str, str], bytes]:
        headers = {"Content-Type": "application/json"}
        if retry_after is not None:
            headers["Retry-After"] = retry_after
        body = json.dumps({"error": {"message": f"<b>status {code}</b>\x1b[31m", "code": code}})
        return code, headers, body.encode()

    return reply


@functools.cache
def _bomb() -> bytes:
    """200 KB of gzip that expands to a 20 MB chat completion."""
    return gzip.compress(json.dumps(_completion(_message("x" * 20_000_000))).encode())


#: Special replies the handler acts out instead of sending a body.
RESET, TRICKLE = "reset", "trickle"

#: name -> (weight in the random mix, reply). A reply is (status, headers, body) or a
#: special action.
PATHOLOGIES: dict[str, tuple[float, Any]] = {
    "good_answer": (14.0, lambda: _json(_completion(_message(GOOD_ANSWER)))),
    "good_tool_call": (
        4.0,
        lambda: _json(
            _completion(
                _message("", _call("magnifier", {"bbox_2d": [100, 100, 600, 600]})), "tool_calls"
            )
        ),
    ),
    "answer_in_prose": (
        2.0,
        lambda: _json(_completion(_message("Overall I'd rate it 4 out of 5."))),
    ),
    "choices_null": (1.0, lambda: _json({"id": "x", "object": "chat.completion", "choices": None})),
    "choices_empty": (1.0, lambda: _json({"id": "x", "object": "chat.completion", "choices": []})),
    "content_null": (1.0, lambda: _json(_completion(_message(None)))),
    "content_number": (1.0, lambda: _json(_completion(_message(123)))),
    "empty_content": (1.0, lambda: _json(_completion(_message("")))),
    "unknown_tool": (
        1.0,
        lambda: _json(_completion(_message("", _call("rm_rf", {})), "tool_calls")),
    ),
    "arguments_not_json": (
        1.0,
        lambda: _json(_completion(_message("", _call("magnifier", "{bbox")), "tool_calls")),
    ),
    "absurd_box": (
        1.0,
        lambda: _json(
            _completion(
                _message("", _call("magnifier", {"bbox_2d": [0, 0, 1e308, 1e308]})), "tool_calls"
            )
        ),
    ),
    "absurd_gamma": (
        1.0,
        lambda: _json(
            _completion(
                _message("", _call("gamma_corrector", {"gamma": -1e308, "mode": "<x>"})),
                "tool_calls",
            )
        ),
    ),
    "exponent_score": (1.0, lambda: _json(_completion(_message("<answer>1e5</answer>")))),
    "boolean_score": (1.0, lambda: _json(_completion(_message('{"score": true}')))),
    "nan_score": (1.0, lambda: _json(_completion(_message("<answer>NaN</answer>")))),
    "range_score": (1.0, lambda: _json(_completion(_message("<answer>3-4</answer>")))),
    "nested_answer": (
        1.0,
        lambda: _json(_completion(_message("<answer><answer>3</answer></answer>"))),
    ),
    "cut_at_length": (1.0, lambda: _json(_completion(_message("<answer>3."), "length"))),
    "surrogate": (
        1.0,
        lambda: (
            200,
            {"Content-Type": "application/json"},
            b'{"choices": [{"index": 0, "finish_reason": "stop", "message": '
            b'{"role": "assistant", "content": "\\ud800 bad \\udfff <answer>3</answer>"}}]}',
        ),
    ),
    "escape_codes": (
        1.0,
        lambda: _json(_completion(_message("\x1b[2J\x1b[31m<answer>2.5</answer>\x07"))),
    ),
    "html_tool_name": (
        1.0,
        lambda: _json(
            _completion(
                _message("", _call("<img src=x onerror=alert(1)>\x1b[31m", {})), "tool_calls"
            )
        ),
    ),
    "big_reply": (
        1.0,
        lambda: _json(_completion(_message("blah " * 40_000 + "<answer>3</answer>"))),
    ),
    "huge_reply": (1.0, lambda: _json(_completion(_message("x" * (10 * 1024 * 1024))))),
    "html_page": (
        1.0,
        lambda: (200, {"Content-Type": "text/html"}, b"<html><body>Bad gateway</body></html>"),
    ),
    "gzip_bomb": (
        1.0,
        lambda: (200, {"Content-Type": "application/json", "Content-Encoding": "gzip"}, _bomb()),
    ),
    "truncated_json": (
        1.0,
        lambda: (200, {"Content-Type": "application/json"}, b'{"choices": [{"mess'),
    ),
    "wrong_types": (
        1.0,
        lambda: _json({"choices": [{"message": "hello", "index": "a"}], "usage": "abc"}),
    ),
    "http_400": (1.0, _status(400)),
    "http_401": (1.0, _status(401)),
    "http_404": (1.0, _status(404)),
    "http_422": (1.0, _status(422)),
    "http_429": (1.0, _status(429, "1")),
    "http_500": (1.0, _status(500)),
    "http_502": (1.0, _status(502)),
    "http_503": (1.0, _status(503, "Wed, 21 Oct 2015 07:28:00 GMT")),
    "reset": (1.0, lambda: RESET),
    "trickle": (1.0, lambda: TRICKLE),
}


class FuzzServer:
    """A threaded local server; ``drawn`` lists the pathology of each chat request."""

    def __init__(
        self, seed: int = 0, only: Sequence[str] | None = None, trickle_s: float = 0.5
    ) -> None:
        names = list(only) if only else list(PATHOLOGIES)
        unknown = [n for n in names if n not in PATHOLOGIES]
        if unknown:
            raise ValueError(f"unknown pathologies {unknown}")
        self._names = names
        self._weights = [PATHOLOGIES[n][0] for n in names]
        self._seed = seed
        self._seen: dict[str, int] = {}
        self._lock = threading.Lock()
        self.drawn: list[str] = []
        self.trickle_s = trickle_s
        fuzz = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    self._send(*_json({"object": "list", "data": [{"id": "fuzz"}]}))
                else:
                    self._send(*_status(404)())

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                name = fuzz.draw(body)
                reply = PATHOLOGIES[name][1]()
                try:
                    if reply == RESET:
                        self.connection.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                        )
                        self.close_connection = True
                        self.connection.close()
                    elif reply == TRICKLE:
                        body = json.dumps(_completion(_message(GOOD_ANSWER))).encode()
                        self.send_response(200)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(body)))
                        self.end_headers()
                        for i in range(len(body)):
                            self.wfile.write(body[i : i + 1])
                            self.wfile.flush()
                            time.sleep(fuzz.trickle_s)
                    else:
                        self._send(*reply)
                except OSError:  # the client gave up (a timeout): nothing more to say
                    self.close_connection = True

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def draw(self, body: bytes = b"") -> str:
        digest = hashlib.sha256(body).hexdigest()
        with self._lock:
            repeat = self._seen.get(digest, 0)
            self._seen[digest] = repeat + 1
            rng = random.Random(f"{self._seed}:{digest}:{repeat}")
            name = rng.choices(self._names, self._weights)[0]
            self.drawn.append(name)
            return name

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> FuzzServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
