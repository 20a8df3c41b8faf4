"""Nothing a server sends stops a run: ``tooliqa eval`` and ``tooliqa assess`` against a
real local HTTP server answering with random pathologies (see :mod:`fuzz_server`), and
single pathologies whose handling is exact (4xx final, 5xx retried a bounded number of
times, a trickling server cut by the per-request time limit, a body over the byte cap).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tooliqa.failures import KINDS

from fuzz_server import FuzzServer

pytestmark = pytest.mark.integration

N_IMAGES = 40


def _dataset(tmp_path: Path, n: int = N_IMAGES) -> tuple[Path, Path]:
    root = tmp_path / "imgs"
    root.mkdir()
    rng = np.random.default_rng(0)
    lines = ["image,mos"]
    for i in range(n):
        base = np.linspace(30, 220, 96, dtype=np.float32)[None, :, None]
        arr = np.clip(base + rng.normal(0, 4 + 3 * (i % 7), (96, 96, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(root / f"im{i:02d}.png")
        lines.append(f"im{i:02d}.png,{1 + 4 * i / max(n - 1, 1):.3f}")
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join(lines) + "\n")
    return labels, root


def _tooliqa(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tooliqa.cli", *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def _eval(
    url: str, labels: Path, root: Path, db: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    return _tooliqa(
        "eval", "--dataset", f"fuzz={labels}:{root}", "--server", url, "--model", "<i>fuzz</i>",
        "--db", str(db), "--no-progress", "--concurrency", "4", "--timeout", "2",
        "--deadline", "30", "--retries", "1", "--backoff", "0.05", *extra,
    )  # fmt: skip


def _rows(db: Path) -> list[dict]:
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return [dict(r) for r in con.execute("SELECT * FROM results")]
    finally:
        con.close()


def test_eval_under_random_pathologies_records_every_image(tmp_path):
    labels, root = _dataset(tmp_path)
    db = tmp_path / "runs.sqlite"
    with FuzzServer(seed=12) as server:
        proc = _eval(server.base_url, labels, root, db, "--report", str(tmp_path / "report"))
        drawn = set(server.drawn)
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    rows = _rows(db)
    assert sorted(r["image"] for r in rows) == [f"im{i:02d}.png" for i in range(N_IMAGES)]
    scored = [r for r in rows if r["score"] is not None]
    failed = [r for r in rows if r["score"] is None]
    assert all(1.0 <= r["score"] <= 5.0 and r["error_kind"] is None for r in scored)
    assert all(r["error_kind"] in KINDS and r["error"] for r in failed)
    assert scored and failed, (len(scored), len(failed))
    assert not [r for r in failed if r["error_kind"] == "internal"], [r["error"] for r in failed]
    assert proc.returncode == 1, proc.stderr[-2000:]  # some images failed: not 0, not a crash (2)
    assert f"{len(failed)} of {N_IMAGES} image(s) have no score" in proc.stderr
    assert len(drawn) > 20  # the mix really was a mix
    # the report renders the untrusted names inert
    md = (tmp_path / "report" / "report.md").read_text()
    assert "<i>fuzz</i>" not in md and "\x1b" not in md

    # the same images through `tooliqa assess --json`: one JSON line per image, no crash
    with FuzzServer(seed=5) as server:
        out = _tooliqa(
            "assess", str(root), "--server", server.base_url, "--model", "fuzz", "--json",
            "--timeout", "2", "--deadline", "30", "--retries", "1",
        )  # fmt: skip
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert len(lines) == N_IMAGES
    records = [json.loads(line) for line in lines]
    assert sorted(Path(r["image"]).name for r in records) == sorted(p.name for p in root.iterdir())
    assert all((r["score"] is None) == bool(r["error"]) for r in records)
    assert out.returncode == (1 if any(r["score"] is None for r in records) else 0)


@pytest.mark.parametrize("status", ["http_400", "http_401", "http_404", "http_422"])
def test_client_errors_are_final_and_not_retried_on_resume(tmp_path, status):
    labels, root = _dataset(tmp_path, n=3)
    db = tmp_path / "runs.sqlite"
    with FuzzServer(only=[status]) as server:
        first = _eval(server.base_url, labels, root, db)
        after_first = len(server.drawn)
        second = _eval(server.base_url, labels, root, db)
        after_second = len(server.drawn)
        third = _eval(server.base_url, labels, root, db, "--retry-failed")
        after_third = len(server.drawn)
    assert after_first == 3  # one request per image: a 4xx is not retried
    assert after_second == 3  # ... nor on resume
    assert after_third == 6  # unless asked
    assert first.returncode == second.returncode == third.returncode == 1
    rows = _rows(db)
    assert {r["error_kind"] for r in rows} == {"client"} and all(r["attempts"] == 2 for r in rows)
    assert f"HTTP {status[-3:]}" in rows[0]["error"] and "\x1b" not in first.stderr


def test_server_errors_cost_retries_plus_one_requests_and_are_retried_on_resume(tmp_path):
    labels, root = _dataset(tmp_path, n=3)
    db = tmp_path / "runs.sqlite"
    with FuzzServer(only=["http_500"]) as server:
        first = _eval(server.base_url, labels, root, db, "--retries", "2")
        after_first = len(server.drawn)
        _eval(server.base_url, labels, root, db, "--retries", "2")
        after_second = len(server.drawn)
    assert after_first == 3 * 3  # 1 + 2 retries per image, the client library's own are off
    assert after_second == 2 * after_first  # transient: tried again on resume
    assert first.returncode == 1 and "3 server" in first.stderr
    assert {r["error_kind"] for r in _rows(db)} == {"server"}


def _assess_one(
    server: FuzzServer, root: Path, *args: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """``tooliqa assess --json`` of the one image in ``root`` against ``server``: the
    process and its one record."""
    out = _tooliqa(
        "assess", str(root), "--server", server.base_url, "--model", "fuzz", "--json", *args
    )
    (record,) = [json.loads(line) for line in out.stdout.splitlines()]
    return out, record


def test_a_trickling_server_is_cut_by_the_request_time_limit(tmp_path):
    _labels, root = _dataset(tmp_path, n=1)
    with FuzzServer(only=["trickle"], trickle_s=1.0) as server:
        t0 = time.perf_counter()
        out, record = _assess_one(server, root, "--timeout", "1.5", "--retries", "0")
        took = time.perf_counter() - t0
    assert record["error_kind"] == "timeout" and "1.5 s" in record["error"]
    assert took < 30 and out.returncode == 1


def test_the_per_image_deadline_covers_every_turn(tmp_path):
    _labels, root = _dataset(tmp_path, n=1)
    # each reply takes about 1.5 s, well within --timeout; together they pass the deadline
    with FuzzServer(only=["trickle"], trickle_s=0.004) as server:
        t0 = time.perf_counter()
        _out, record = _assess_one(server, root, "--timeout", "100", "--deadline", "2.5")
        took = time.perf_counter() - t0
        requests = len(server.drawn)
    assert record["error_kind"] == "timeout" and "deadline of 2.5 s" in record["error"]
    assert requests >= 2 and took < 30


def test_a_reply_over_the_byte_cap_is_refused_not_read(tmp_path):
    _labels, root = _dataset(tmp_path, n=1)
    with FuzzServer(only=["huge_reply"]) as server:
        _out, record = _assess_one(server, root)
        requests = len(server.drawn)
    assert record["error_kind"] == "model" and "over the limit" in record["error"]
    assert requests == 1  # not retried: the same request would get the same reply


def test_a_compressed_reply_is_refused_not_expanded(tmp_path):
    _labels, root = _dataset(tmp_path, n=1)
    with FuzzServer(only=["gzip_bomb"]) as server:
        _out, record = _assess_one(server, root)
    assert record["error_kind"] == "model" and "compressed" in record["error"]


def test_model_requests_go_through_the_proxy_the_environment_names(tmp_path):
    """The byte cap is a client hook, not a transport: HTTP(S)_PROXY still applies."""
    import os

    from chat_stub import ChatStub, StubReply

    _labels, root = _dataset(tmp_path, n=1)
    replies = [StubReply("<answer>Sharpness: [High]</answer>"), StubReply("<answer>4</answer>")]
    with ChatStub(replies, model="behind-proxy") as proxy:
        env = {**os.environ, "HTTP_PROXY": proxy.base_url.rsplit("/v1", 1)[0], "NO_PROXY": ""}
        out = subprocess.run(
            [sys.executable, "-m", "tooliqa.cli", "assess", str(root), "--json", "--server",
             "http://model-host.invalid:8000/v1", "--model", "m", "--max-rounds", "0"],
            capture_output=True, text=True, timeout=120, env=env, check=False,
        )  # fmt: skip
    (record,) = [json.loads(line) for line in out.stdout.splitlines()]
    assert record["score"] == 4.0, out.stderr[-2000:]
    assert len(proxy.requests) == 2


def test_a_server_check_is_bounded_even_when_headers_trickle():
    import socket
    import threading

    from tooliqa.backends.openai_compat import BackendError, check_server

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n":
                if stop.is_set():
                    return
                conn.sendall(bytes([byte]))
                time.sleep(0.3)

    threading.Thread(target=trickle, daemon=True).start()
    t0 = time.perf_counter()
    with pytest.raises(BackendError, match=r"within 1\.5 s") as info:
        check_server(f"http://127.0.0.1:{listener.getsockname()[1]}/v1", timeout=1.5)
    took = time.perf_counter() - t0
    stop.set()
    listener.close()
    assert info.value.kind == "timeout" and took < 3.0


def test_two_concurrent_evals_of_one_run_never_assess_an_image_twice(tmp_path):
    labels, root = _dataset(tmp_path, n=8)
    db = tmp_path / "runs.sqlite"
    with FuzzServer(only=["trickle"], trickle_s=0.0005) as server:
        args = [
            sys.executable, "-m", "tooliqa.cli", "eval", "--dataset", f"fuzz={labels}:{root}",
            "--server", server.base_url, "--model", "fuzz", "--db", str(db), "--no-progress",
            "--concurrency", "2", "--max-rounds", "0",
        ]  # fmt: skip
        procs = [subprocess.Popen(args, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        errs = [p.communicate(timeout=240)[1] for p in procs]
        requests = len(server.drawn)
    assert all(p.returncode == 0 for p in procs), errs
    rows = _rows(db)
    assert len(rows) == 8 and all(r["score"] is not None and r["attempts"] == 1 for r in rows)
    assert requests == 8 * 2  # rubric + answer per image, each image once
