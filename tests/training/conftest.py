"""Fixtures for the training tests: the tiny Qwen3-VL (random, then warm-started).

These tests need the ``train`` extra (torch, transformers, trl). They are
skipped when it is missing, except under CI (``CI`` set), where a missing
extra is an error: the CI setup installs it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from _support import REPO

for _mod in ("torch", "transformers", "trl"):
    try:
        __import__(_mod)
    except ImportError:  # pragma: no cover - depends on the environment
        if os.environ.get("CI"):
            raise
        pytest.skip(f"the train extra is not installed ({_mod})", allow_module_level=True)

CACHE = REPO / ".cache"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _run(script: str, *args: str, timeout: float = 1500) -> Path:
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{script} failed (rc={proc.returncode}):\n{proc.stderr[-5000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The tiny random Qwen3-VL (built once, reused from .cache)."""
    return _run("build_tiny_qwen3vl.py", "--out", str(CACHE / "tiny-qwen3vl"))


@pytest.fixture(scope="session")
def warm_model_dir(tiny_model_dir: Path) -> Path:
    """The tiny model after the protocol warm start (built once, reused from .cache)."""
    return _run(
        "warm_start_tiny.py",
        "--base",
        str(tiny_model_dir),
        "--out",
        str(CACHE / "tiny-qwen3vl-warm"),
    )


@pytest.fixture(scope="session")
def processor(tiny_model_dir: Path):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_model_dir)


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.training)
            if item.get_closest_marker("timeout") is None:
                # the first test may build and warm-start the tiny model (minutes)
                item.add_marker(pytest.mark.timeout(2400))
