"""The served graph vs in process: response size and latency of one assessment.

Starts ``langgraph dev`` on a clean copy of the checkout (as the integration tests do,
``tests/integration/langgraph_dev.py``), then for one image with the classic backend and
``max_tool_rounds`` 1 prints:

* ``served_response_bytes``: the size of the served run's output (``json.dumps``);
* ``served_wait_ms``: median ``runs.wait`` latency (base64 image in, no thread);
* ``inprocess_ms``: median :func:`tooliqa.api.aassess` latency (the image as bytes);
* ``served_over_inprocess``: their ratio;
* ``checkpoint_bytes_reference`` / ``checkpoint_bytes_bytes``: what a SQLite checkpointer
  stores for one in-process assessment, the image given as a reference or as bytes.

Medians of ``--repeat`` runs after one warm-up each.

    python bench/bench_served.py [--image examples/coffee_blurred.jpg] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))

from langgraph_sdk import get_client  # noqa: E402

from tooliqa.api import aassess, make_context  # noqa: E402

from langgraph_dev import GRAPH_ID, start_langgraph_dev  # noqa: E402

MAX_TOOL_ROUNDS = 1


async def amedian_ms(fn: Callable[[], Awaitable[object]], repeat: int) -> float:
    """Median wall time of ``await fn()`` in milliseconds over ``repeat`` runs, after one
    warm-up (the async twin of ``_timing.median_ms``)."""
    await fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        await fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


async def bench(url: str, image: Path, repeat: int) -> None:
    client = get_client(url=url)
    data = image.read_bytes()
    run_input = {"image": base64.b64encode(data).decode()}
    context = {"max_tool_rounds": MAX_TOOL_ROUNDS}

    async def served() -> dict[str, object]:
        out = await client.runs.wait(
            None, GRAPH_ID, input=run_input, context=context, raise_error=False
        )
        if not isinstance(out, dict) or "assessment" not in out:
            raise RuntimeError(f"the served run failed: {out}")
        return out

    out = await served()
    print(f"served_response_bytes {len(json.dumps(out))}")
    print(f"served_score {out['assessment']['score']}")  # type: ignore[index]
    served_ms = await amedian_ms(served, repeat)
    print(f"served_wait_ms {served_ms:.1f}")

    ctx = make_context(max_rounds=MAX_TOOL_ROUNDS)
    local_ms = await amedian_ms(lambda: aassess(data, context=ctx), repeat)
    print(f"inprocess_score {(await aassess(data, context=ctx)).score}")
    print(f"inprocess_ms {local_ms:.1f}")
    print(f"served_over_inprocess {served_ms / local_ms:.2f}")
    await checkpoint_bytes(data)


async def checkpoint_bytes(data: bytes) -> None:
    """Bytes a real SQLite checkpointer stores for one assessment (checkpoints and writes),
    with the image given as a reference (what ``aassess`` passes) and as raw bytes."""
    import sqlite3
    import tempfile

    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    from tooliqa.api import AppContext
    from tooliqa.graph import compile_graph
    from tooliqa.tools import BLOBS

    for label, image in (("reference", BLOBS.put(data)), ("bytes", data)):
        with tempfile.TemporaryDirectory() as tmp:
            db = str(Path(tmp) / "checkpoints.sqlite")
            async with AsyncSqliteSaver.from_conn_string(db) as saver:
                g = compile_graph(context_schema=AppContext, checkpointer=saver)
                config = {"configurable": {"thread_id": "bench"}}
                ctx = AppContext(max_tool_rounds=MAX_TOOL_ROUNDS)
                await g.ainvoke({"image": image}, config=config, context=ctx)
            with sqlite3.connect(db) as con:
                stored = [r[0] for r in con.execute("select checkpoint from checkpoints")]
                stored += [r[0] for r in con.execute("select value from writes")]
        print(f"checkpoint_bytes_{label} {sum(map(len, stored))}  (image {len(data)} bytes)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--image", type=Path, default=REPO / "examples" / "coffee_blurred.jpg")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    t0 = time.perf_counter()
    with start_langgraph_dev() as server:
        print(f"server_ready_s {time.perf_counter() - t0:.1f}")
        try:
            asyncio.run(bench(server.url, args.image.resolve(), args.repeat))
        except BaseException:
            sys.stderr.write(f"\nlanggraph dev log tail ({server.log_path}):\n")
            sys.stderr.write(server.log_tail() + "\n")
            raise


if __name__ == "__main__":
    main()
