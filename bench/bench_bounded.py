"""Bounded memory and bounded requests: what a huge image and a failing server cost.

1. Peak RSS of ``tooliqa assess`` (classic backend, one child process each) on
   * a 79 MP PNG (8,888 x 8,888, smooth gradients: about 1.2 MB on disk, just under the
     80 MP header cap),
   * a 100 MP JPEG (10,000 x 10,000 photo-like noise and gradients),
   * a 12 MP JPEG (4,000 x 3,000), for scale.
   The child's peak RSS comes from ``wait4``; the baseline (``tooliqa assess --help``)
   is printed beside it.
2. Requests per image when the model server answers every chat request with HTTP 500
   (and, second, with HTTP 400): ``tooliqa eval --retries 2`` over ``--images`` images,
   run twice (the second run is a resume). A local stdlib server counts the requests.

Run: python bench/bench_bounded.py [--images 4] [--skip-memory] [--skip-requests]
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

TOOLIQA = [sys.executable, "-m", "tooliqa.cli"]


def peak_rss_mb(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """Run ``argv``; its peak RSS (MB), exit status and the last line of its stderr."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        lines = err.read().decode(errors="replace").strip().splitlines()
    return usage.ru_maxrss / 1024.0, proc.returncode, (lines[-1] if lines else "")


def make_images(folder: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    out = {}
    side = 8888
    y = np.linspace(0, 255, side, dtype=np.float32)
    grad = (y[:, None] * 0.5 + y[None, :] * 0.5).astype(np.uint8)
    png = np.stack([grad, grad[::-1], grad.T], axis=2)
    out["79 MP PNG"] = folder / "huge79.png"
    Image.fromarray(png).save(out["79 MP PNG"], optimize=False, compress_level=9)
    del png, grad
    for name, (w, h) in {"100 MP JPEG": (10000, 10000), "12 MP JPEG": (4000, 3000)}.items():
        base = np.linspace(40, 215, w, dtype=np.float32)[None, :, None]
        arr = base + rng.normal(0, 12, (h, w, 1)).astype(np.float32)
        arr = np.clip(np.repeat(arr, 3, axis=2), 0, 255).astype(np.uint8)
        out[name] = folder / f"{name.split()[0]}mp.jpg"
        Image.fromarray(arr).save(out[name], quality=90)
        del arr
    return out


def memory(folder: Path) -> None:
    # the images are made in a child: a child's peak RSS starts at its parent's RSS at fork
    code = "import sys; from pathlib import Path; sys.path.insert(0, 'bench'); import bench_bounded as b; "
    code += f"print(repr({{k: str(v) for k, v in b.make_images(Path({str(folder)!r})).items()}}))"
    made = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    images = {k: Path(v) for k, v in ast.literal_eval(made.stdout).items()}
    base, _, _ = peak_rss_mb([*TOOLIQA, "assess", "--help"])
    print(f"baseline (tooliqa assess --help): peak RSS {base:.0f} MB")
    for name, path in images.items():
        rss, rc, last = peak_rss_mb([*TOOLIQA, "assess", "--json", str(path)])
        size = path.stat().st_size / 1e6
        print(f"{name} ({size:.2f} MB file): peak RSS {rss:.0f} MB, exit {rc}  [{last[:100]}]")


class _Counting(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, status: int) -> None:
        self.status, self.count, self.lock = status, 0, threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._send(200, {"object": "list", "data": [{"id": "m"}]})

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with server.lock:
                    server.count += 1
                self._send(server.status, {"error": {"message": f"status {server.status}"}})

        server = self
        super().__init__(("127.0.0.1", 0), Handler)


def requests(folder: Path, n: int) -> None:
    imgs = folder / "imgs"
    imgs.mkdir(exist_ok=True)
    rng = np.random.default_rng(1)
    with open(folder / "labels.csv", "w") as f:
        f.write("image,mos\n")
        for i in range(n):
            arr = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
            Image.fromarray(arr).save(imgs / f"i{i}.png")
            f.write(f"i{i}.png,{1 + 4 * i / max(n - 1, 1):.2f}\n")
    for status in (500, 400):
        server = _Counting(status)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        db = folder / f"runs{status}.sqlite"
        for attempt in ("first run", "resume"):
            before = server.count
            t0 = time.perf_counter()
            proc = subprocess.run(
                [*TOOLIQA, "eval", "--dataset", f"stub={folder / 'labels.csv'}:{imgs}",
                 "--server", url, "--model", "m", "--retries", "2", "--db", str(db),
                 "--no-progress"],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            per = (server.count - before) / n
            print(
                f"HTTP {status}, {attempt}: {per:.1f} requests per image, exit {proc.returncode}, "
                f"{time.perf_counter() - t0:.1f} s"
            )
        server.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-requests", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_memory:
            memory(Path(tmp))
        if not args.skip_requests:
            requests(Path(tmp), args.images)


if __name__ == "__main__":
    main()
