"""The evaluation runner against real vLLM servers: concurrency > 1 over two replicas."""

from __future__ import annotations

import asyncio
import io
import sqlite3

import numpy as np
import pytest
from PIL import Image

from tooliqa.backends.openai_compat import ServerConfig, make_chat_model
from tooliqa.eval.datasets import Dataset, Sample
from tooliqa.eval.runner import run_dataset
from tooliqa.eval.store import ResultStore
from tooliqa.graph import Context

pytestmark = pytest.mark.integration


def toy_dataset(root, n: int = 8) -> Dataset:
    rng = np.random.default_rng(11)
    samples = []
    for i in range(n):
        img = np.clip(rng.normal(100 + 12 * i, 35, (96, 128, 3)), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        (root / f"s{i}.png").write_bytes(buf.getvalue())
        samples.append(
            Sample(image=f"s{i}.png", mos=float(i % 5), std=None, split="test", ref=None)
        )
    return Dataset(
        name="toy",
        root=root,
        samples=samples,
        mos_range=(0.0, 4.0),
        higher_better=True,
        problems=[],
    )


def constrained(base_url: str, model: str) -> Context:
    chat = make_chat_model(ServerConfig(base_url, model, max_tokens=200, timeout=300))
    return Context(
        model=chat, max_tool_rounds=1, enabled_tools=("gamma_corrector",), tool_choice="gamma_corrector",
        strict_tools=True, structured_output=True, max_pixels=256 * 256,
    )  # fmt: skip


def test_runner_spreads_over_two_replicas(vllm_server, vllm_replica, tmp_path):
    ds = toy_dataset(tmp_path)
    contexts = {
        vllm_server.base_url: constrained(vllm_server.base_url, vllm_server.model),
        vllm_replica.base_url: constrained(vllm_replica.base_url, vllm_replica.model),
    }
    db = tmp_path / "runs.sqlite"
    with ResultStore(db) as store:
        summary = asyncio.run(
            run_dataset(store, ds, contexts, method="tiny", concurrency=4, progress=False)
        )
        rows = store.rows()
    assert summary.assessed == 8 and summary.failed == 0
    assert all(n >= 2 for n in summary.per_endpoint.values()) and len(summary.per_endpoint) == 2
    assert {r["endpoint"] for r in rows} == set(contexts)
    assert all(
        r["score"] is not None and r["tool_calls"] == 1 and r["output_tokens"] > 0 for r in rows
    )
    con = sqlite3.connect(db)
    assert con.execute("SELECT COUNT(DISTINCT image) FROM results").fetchone()[0] == 8


def test_eval_cli_with_two_servers_and_a_report(vllm_server, vllm_replica, tmp_path, capsys):
    from tooliqa.cli import main

    toy_dataset(tmp_path, n=4)
    labels = tmp_path / "labels.csv"
    labels.write_text("image,mos\n" + "".join(f"s{i}.png,{i}\n" for i in range(4)))
    code = main([
        "eval", "--dataset", f"toy={labels}", "--server", vllm_server.base_url, "--server", vllm_replica.base_url,
        "--db", str(tmp_path / "runs.sqlite"), "--concurrency", "2", "--max-tokens", "48", "--max-rounds", "1",
        "--no-progress", "--report", str(tmp_path / "report"),
    ])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    assert "4 assessed" in err and (tmp_path / "report" / "report.md").exists()
    con = sqlite3.connect(tmp_path / "runs.sqlite")
    endpoints = {r[0] for r in con.execute("SELECT endpoint FROM results")}
    assert endpoints == {vllm_server.base_url, vllm_replica.base_url}
