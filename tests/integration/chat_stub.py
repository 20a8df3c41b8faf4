"""A local OpenAI-compatible chat server that replies the way OTHER models and servers do.

The graph's own tests speak its dialect (the scripted model, the warm-started tiny model);
this server sends what a real Qwen3-VL, Tool-IQA-8B or Qwen2.5-VL behind vLLM sends: thinking
that names tags, hermes-parsed ``tool_calls`` beside the text, ``reasoning_content`` split off
by a reasoning parser, prose scores. Each chat request takes the next scripted reply; every
request body is recorded. Standard library only; binds 127.0.0.1 on a free port.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["ChatStub", "StubReply"]


@dataclass
class StubReply:
    """One assistant message: text, native tool calls ``(name, arguments dict)``, and
    thinking returned apart from the content (``reasoning_content``)."""

    content: str | None = ""
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    reasoning_content: str | None = None

    def message(self, index: int) -> dict[str, Any]:
        msg: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            msg["tool_calls"] = [
                {
                    "id": f"call_{index}_{i}",
                    "type": "function",
                    "function": {"name": name, "arguments": json.dumps(args)},
                }
                for i, (name, args) in enumerate(self.tool_calls)
            ]
        if self.reasoning_content is not None:
            msg["reasoning_content"] = self.reasoning_content
        return msg


class ChatStub:
    """``with ChatStub(replies) as stub: ... stub.base_url ...``; ``stub.requests`` holds the
    JSON bodies of the chat requests, in order. Runs out of replies: HTTP 500."""

    def __init__(self, replies: Iterable[StubReply | str], model: str = "stub-vl") -> None:
        self.replies = [r if isinstance(r, StubReply) else StubReply(r) for r in replies]
        self.model = model
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": stub.model}]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with stub._lock:
                    index = len(stub.requests)
                    stub.requests.append(body)
                    reply = stub.replies[index] if index < len(stub.replies) else None
                if reply is None:
                    self._send(500, {"error": {"message": "the stub ran out of replies"}})
                    return
                self._send(
                    200,
                    {
                        "id": f"chatcmpl-{index}",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": stub.model,
                        "choices": [
                            {
                                "index": 0,
                                "message": reply.message(index),
                                "finish_reason": "tool_calls" if reply.tool_calls else "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                    },
                )

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> ChatStub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
