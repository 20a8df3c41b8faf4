"""Start and stop ``langgraph dev`` (the in-memory LangGraph server) serving this checkout.

Importable without pytest (the benchmarks use it too). The server runs in a temporary
"clean copy" of the checkout: its tracked files (``git ls-files``, without ``shared/``),
so it never sees the virtual environments, caches and artifacts of the working tree.
The ``tooliqa`` packages it imports besides ``tooliqa/`` itself (``tooliqa.graph``,
``tooliqa.tools``...) come from the editable install, that is from the checkout.

The server gets ``TOOLIQA_ALLOW_IMAGE_FILES=1`` (so a local path may be sent as the
image), no LangSmith tracing and no CLI analytics; it listens on 127.0.0.1 on a free
port (never 2024, the default, which something else may hold).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from vllm_server import REPO_ROOT, _tail, find_free_port, spawn_in_group, stop_process_group

__all__ = [
    "GRAPH_ID",
    "SERVER_ENV",
    "LangGraphDev",
    "clean_copy",
    "langgraph_executable",
    "start_langgraph_dev",
]

GRAPH_ID = "tooliqa"  # the graph's name in langgraph.json

SERVER_ENV = {
    "LANGSMITH_TRACING": "false",
    "LANGGRAPH_CLI_NO_ANALYTICS": "1",
    "TOOLIQA_ALLOW_IMAGE_FILES": "1",
}


def langgraph_executable() -> Path:
    """The ``langgraph`` CLI of the running interpreter's environment (may not exist)."""
    return Path(sys.executable).parent / "langgraph"


def clean_copy(dest: str | os.PathLike[str], repo: Path = REPO_ROOT) -> Path:
    """Copy the tracked files of ``repo`` (without ``shared/``) into ``dest``; return it.
    A tracked file deleted from the working tree is skipped."""
    out = Path(dest)
    listed = subprocess.run(
        ["git", "-C", str(repo), "ls-files", "-z"], capture_output=True, check=True
    ).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        if rel == "shared" or rel.startswith("shared/"):
            continue
        src = repo / rel
        if not src.is_file():
            continue
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    return out


@dataclass
class LangGraphDev:
    """A running ``langgraph dev`` server (its own process group) and its clean copy."""

    process: subprocess.Popen[bytes]
    host: str
    port: int
    workdir: Path
    log_path: Path
    owns_workdir: bool = False
    started_at: float = field(default_factory=time.monotonic)
    ready_after_s: float | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def is_running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, n_chars: int = 6000) -> str:
        return _tail(self.log_path, n_chars)

    def wait_ready(self, timeout: float = 90.0, interval: float = 0.25) -> float:
        """Poll ``GET /ok`` until it answers ``{"ok": true}``; return seconds since start."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                tail = self.log_tail()
                self.stop()
                raise RuntimeError(
                    f"langgraph dev exited with code {self.process.returncode} before it was "
                    f"ready; log tail ({self.log_path}):\n{tail}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/ok", timeout=5) as resp:
                    if resp.status == 200 and json.loads(resp.read()).get("ok") is True:
                        self.ready_after_s = time.monotonic() - self.started_at
                        return self.ready_after_s
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                raise TimeoutError(
                    f"langgraph dev not ready after {timeout:.0f} s; log tail "
                    f"({self.log_path}):\n{tail}"
                )
            time.sleep(interval)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL what is left; remove an owned copy."""
        stop_process_group(self.process, grace)
        if self.owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LangGraphDev:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_langgraph_dev(
    port: int | None = None,
    *,
    log_path: str | os.PathLike[str] | None = None,
    workdir: str | os.PathLike[str] | None = None,
    host: str = "127.0.0.1",
    env: dict[str, str] | None = None,
    wait: bool = True,
    timeout: float = 90.0,
) -> LangGraphDev:
    """Copy the checkout into ``workdir`` (default: a new temporary folder, removed on
    stop) and run ``langgraph dev`` there, in its own process group, logging to
    ``log_path`` (default: ``server.log`` beside the copy); by default wait for ``/ok``."""
    exe = langgraph_executable()
    if not exe.exists():
        raise FileNotFoundError(f"no langgraph CLI next to {sys.executable}: {exe}")
    owns = workdir is None
    base = Path(tempfile.mkdtemp(prefix="tooliqa-langgraph-")) if owns else Path(workdir)
    copy = clean_copy(base / "checkout" if owns else base)
    log = Path(log_path) if log_path is not None else base / "server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    port = port or find_free_port(host)
    cmd = [str(exe), "dev", "--host", host, "--port", str(port), "--no-browser", "--no-reload"]
    full_env = {**os.environ, **SERVER_ENV, **(env or {})}
    with open(log, "wb") as out:
        proc = spawn_in_group(cmd, out, full_env, copy)
    server = LangGraphDev(
        process=proc, host=host, port=port, workdir=base, log_path=log, owns_workdir=owns
    )
    if wait:
        server.wait_ready(timeout=timeout)
    return server
