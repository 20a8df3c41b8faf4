"""Start and stop a real vLLM OpenAI-compatible server (CPU build) for tests.

Importable without pytest. The server runs from a separate virtual
environment (see ``scripts/setup_vllm_cpu.sh``) and hosts the tiny Qwen3-VL
built by ``scripts/build_tiny_qwen3vl.py``.

``RecordingProxy`` sits between a client and the server and records every
request (path and parsed JSON body), so tests can assert on exactly what the
server received.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_VENV = REPO_ROOT / ".venv-vllm"
DEFAULT_MODEL_DIR = REPO_ROOT / ".cache" / "tiny-qwen3vl"
SERVED_MODEL_NAME = "tiny-qwen3vl"
SETUP_SCRIPT = REPO_ROOT / "scripts" / "setup_vllm_cpu.sh"
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build_tiny_qwen3vl.py"

SERVER_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB of KV cache
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}


def vllm_venv(venv: str | os.PathLike[str] | None = None) -> Path:
    """The vLLM venv: ``venv``, else env ``TOOLIQA_VLLM_VENV``, else ``<repo>/.venv-vllm``."""
    if venv is not None:
        return Path(venv)
    env = os.environ.get("TOOLIQA_VLLM_VENV")
    return Path(env) if env else DEFAULT_VENV


def venv_python(venv: str | os.PathLike[str] | None = None) -> Path:
    return vllm_venv(venv) / "bin" / "python"


def find_free_port(host: str = "127.0.0.1") -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def build_tiny_model(
    out: str | os.PathLike[str] | None = None,
    venv: str | os.PathLike[str] | None = None,
    timeout: float = 600,
) -> Path:
    """Build (or reuse) the tiny Qwen3-VL with the venv's python; return its dir."""
    cmd = [str(venv_python(venv)), str(BUILD_SCRIPT)]
    if out is not None:
        cmd += ["--out", str(out)]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"building the tiny model failed (rc={proc.returncode}):\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
        )
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    return Path(lines[-1].strip())


def spawn_in_group(
    cmd: list[str], out: Any, env: dict[str, str], cwd: Path
) -> subprocess.Popen[bytes]:
    """Start a server in a process group of its own (so :func:`stop_process_group` stops
    its children too), stdout and stderr to ``out``, no stdin."""
    return subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=str(cwd),
        start_new_session=True,
    )


def stop_process_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM a server's process group, wait ``grace`` seconds, then SIGKILL what is left
    (children, such as vLLM's engine core, may outlive the leader); reap the leader."""
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        pgid = None
    if pgid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    elif proc.poll() is None:
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def _tail(path: Path | None, n_chars: int = 6000) -> str:
    if path is None or not path.exists():
        return "(no log)"
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - n_chars))
        return f.read().decode("utf-8", "replace")


@dataclass
class VLLMServer:
    """A running vLLM server process (its own process group)."""

    process: subprocess.Popen[bytes]
    host: str
    port: int
    model: str
    model_dir: Path
    log_path: Path | None
    command: list[str] = field(default_factory=list)
    started_at: float = field(default_factory=time.monotonic)
    ready_after_s: float | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def pid(self) -> int:
        return self.process.pid

    def is_running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, n_chars: int = 6000) -> str:
        return _tail(self.log_path, n_chars)

    def rss_bytes(self) -> int:
        """Resident memory of the server's process group (all its processes), Linux only."""
        total = 0
        try:
            pgid = os.getpgid(self.pid)
        except ProcessLookupError:
            return 0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if os.getpgid(int(entry.name)) != pgid:
                    continue
                for line in (entry / "status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
            except (OSError, ValueError, ProcessLookupError):
                continue
        return total

    def wait_ready(self, timeout: float = 240.0, interval: float = 0.5) -> float:
        """Poll ``/health`` until it answers 200; return seconds since start."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"vLLM server exited with code {self.process.returncode} before it was "
                    f"ready; log tail:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=5) as resp:
                    if resp.status == 200:
                        self.ready_after_s = time.monotonic() - self.started_at
                        return self.ready_after_s
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(
                    f"vLLM server not ready after {timeout:.0f} s; log tail:\n{self.log_tail()}"
                )
            time.sleep(interval)

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM the process group, then SIGKILL what is left; wait for the leader."""
        stop_process_group(self.process, grace)

    def __enter__(self) -> VLLMServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def server_command(
    model_dir: str | os.PathLike[str],
    port: int,
    *,
    venv: str | os.PathLike[str] | None = None,
    host: str = "127.0.0.1",
    served_model_name: str = SERVED_MODEL_NAME,
    max_model_len: int = 4096,
    max_images: int = 4,
    extra_args: Iterable[str] = (),
) -> list[str]:
    # `python -m ...`: the `vllm` console script fails because the package
    # metadata is named vllm-cpu.
    return [
        str(venv_python(venv)),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--served-model-name",
        served_model_name,
        "--host",
        host,
        "--port",
        str(port),
        "--max-model-len",
        str(max_model_len),
        "--dtype",
        "float32",
        "--enforce-eager",
        "--enable-auto-tool-choice",
        "--tool-call-parser",
        "hermes",
        "--limit-mm-per-prompt",
        json.dumps({"image": max_images, "video": 0}),
        *extra_args,
    ]


def start_vllm_server(
    model_dir: str | os.PathLike[str],
    port: int | None = None,
    *,
    venv: str | os.PathLike[str] | None = None,
    log_path: str | os.PathLike[str] | None = None,
    extra_args: Sequence[str] = (),
    host: str = "127.0.0.1",
    served_model_name: str = SERVED_MODEL_NAME,
    max_model_len: int = 4096,
    max_images: int = 4,
    env: dict[str, str] | None = None,
    wait: bool = True,
    timeout: float = 240.0,
) -> VLLMServer:
    """Launch the server in its own process group; by default wait for ``/health``."""
    py = venv_python(venv)
    if not py.exists():
        raise FileNotFoundError(f"no python in the vLLM venv: {py} (run {SETUP_SCRIPT})")
    port = port or find_free_port(host)
    cmd = server_command(
        model_dir,
        port,
        venv=venv,
        host=host,
        served_model_name=served_model_name,
        max_model_len=max_model_len,
        max_images=max_images,
        extra_args=extra_args,
    )
    full_env = {**os.environ, **SERVER_ENV, **(env or {})}
    # Keep the caller's venv off the server's path.
    full_env.pop("VIRTUAL_ENV", None)
    full_env.pop("PYTHONPATH", None)
    log = Path(log_path) if log_path is not None else None
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        out = open(log, "wb")  # noqa: SIM115 - handed to the child
    else:
        out = subprocess.DEVNULL  # type: ignore[assignment]
    try:
        proc = spawn_in_group(cmd, out, full_env, REPO_ROOT)
    finally:
        if log is not None:
            out.close()
    server = VLLMServer(
        process=proc,
        host=host,
        port=port,
        model=served_model_name,
        model_dir=Path(model_dir),
        log_path=log,
        command=cmd,
    )
    if wait:
        server.wait_ready(timeout=timeout)
    return server


@dataclass
class RecordedRequest:
    method: str
    path: str
    body: Any  # parsed JSON, or None when the body was empty / not JSON
    raw: bytes
    status: int | None = None


class RecordingProxy:
    """A threaded HTTP proxy on 127.0.0.1 that forwards to ``target`` and records requests.

    ``target`` is the upstream origin (``http://127.0.0.1:PORT``, a ``/v1``
    suffix is ignored). Point clients at ``proxy.base_url``. Responses are
    streamed back chunk by chunk, so server-sent events work.
    """

    def __init__(self, target: str, host: str = "127.0.0.1", port: int = 0) -> None:
        parts = urlsplit(target)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None
                rec = RecordedRequest(self.command, self.path, body, raw)
                with proxy._lock:
                    proxy.requests.append(rec)
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in {"host", "connection", "keep-alive", "accept-encoding"}
                }
                conn = http.client.HTTPConnection(
                    proxy.upstream_host, proxy.upstream_port, timeout=600
                )
                try:
                    conn.request(self.command, self.path, body=raw or None, headers=headers)
                    resp = conn.getresponse()
                    rec.status = resp.status
                    self.send_response(resp.status)
                    chunked = resp.getheader("Transfer-Encoding", "").lower() == "chunked"
                    for k, v in resp.getheaders():
                        if k.lower() in {"transfer-encoding", "connection", "content-length"}:
                            continue
                        self.send_header(k, v)
                    if chunked or resp.getheader("Content-Length") is None:
                        self.send_header("Transfer-Encoding", "chunked")
                        self.send_header("Connection", "close")
                        self.end_headers()
                        while True:
                            chunk = resp.read1(65536)
                            if not chunk:
                                break
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                            self.wfile.flush()
                        self.wfile.write(b"0\r\n\r\n")
                        self.wfile.flush()
                        self.close_connection = True
                    else:
                        data = resp.read()
                        self.send_header("Content-Length", str(len(data)))
                        self.end_headers()
                        self.wfile.write(data)
                except (ConnectionError, OSError) as exc:
                    if rec.status is None:
                        msg = json.dumps({"error": f"proxy: upstream failed: {exc}"}).encode()
                        rec.status = 502
                        self.send_response(502)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(msg)))
                        self.end_headers()
                        self.wfile.write(msg)
                    else:
                        self.close_connection = True
                finally:
                    conn.close()

            do_GET = _forward
            do_POST = _forward
            do_PUT = _forward
            do_DELETE = _forward
            do_PATCH = _forward

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        addr = self._server.server_address
        self.host: str = str(addr[0])
        self.port: int = int(addr[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def start(self) -> RecordingProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def bodies(self, path_suffix: str = "/chat/completions") -> list[Any]:
        """Parsed JSON bodies of recorded requests whose path ends with ``path_suffix``."""
        with self._lock:
            return [r.body for r in self.requests if r.path.split("?")[0].endswith(path_suffix)]

    def __enter__(self) -> RecordingProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def constrained_context(
    base_url: str,
    model: str,
    *,
    tool: str = "gamma_corrector",
    max_tokens: int = 200,
    **overrides: Any,
) -> Any:
    """A graph Context whose every turn the server keeps well-formed, for a random model:
    one forced, strict tool call (``tool``), JSON-schema rubric and answer, small images."""
    from tooliqa.backends.openai_compat import ServerConfig, make_chat_model
    from tooliqa.graph import Context

    chat = make_chat_model(
        ServerConfig(base_url, model, temperature=0.0, max_tokens=max_tokens, timeout=300)
    )
    settings: dict[str, Any] = {
        "model": chat,
        "max_tool_rounds": 1,
        "enabled_tools": (tool,),
        "tool_choice": tool,
        "strict_tools": True,
        "structured_output": True,
        "max_pixels": 256 * 256,
    }
    settings.update(overrides)
    return Context(**settings)
