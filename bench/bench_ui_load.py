"""Load check of the demo page: N concurrent API sessions, one assessment each.

Starts the page (classic backend) in this process on a free port, then opens N
``gradio_client.Client`` sessions at once; each runs the page's ``/assess``
endpoint (the streaming handler the Assess button calls) on a bundled example.
Prints each session's completion time, whether all completed, and the median
and worst latency.

    python bench/bench_ui_load.py [--sessions 8]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

try:
    import tooliqa  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(REPO))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per session")
    args = parser.parse_args(argv)

    from gradio_client import Client, handle_file

    from tooliqa.ui.app import CLASSIC, TOOLS, build_app

    images = sorted(EXAMPLES.glob("*.jpg"))
    if not images:
        print("no example images found", file=sys.stderr)
        return 2
    app = build_app()
    port = _free_port()
    app.queue().launch(
        server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True
    )
    url = f"http://127.0.0.1:{port}/"
    results: dict[int, tuple[float, str]] = {}
    lock = threading.Lock()
    start = threading.Barrier(args.sessions)

    def session(i: int) -> None:
        image = images[i % len(images)]
        try:
            client = Client(url, verbose=False)
            start.wait(timeout=60)
            t0 = time.perf_counter()
            job = client.submit(
                handle_file(str(image)), CLASSIC, "", "", 2, list(TOOLS), "", api_name="/assess"
            )
            out = job.result(timeout=args.timeout)
            elapsed = time.perf_counter() - t0
            score = out[1]
            outcome = f"score {score:.2f}" if score is not None else f"no score: {out[0]}"
        except Exception as exc:  # a failed session is reported, not raised
            elapsed, outcome = float("nan"), f"failed: {type(exc).__name__}: {exc}"
        with lock:
            results[i] = (elapsed, f"{image.name}: {outcome}")

    try:
        threads = [threading.Thread(target=session, args=(i,)) for i in range(args.sessions)]
        wall0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - wall0
    finally:
        app.close()

    ok = []
    for i in sorted(results):
        elapsed, text = results[i]
        print(f"session {i + 1}: {elapsed:6.2f} s  {text}")
        if elapsed == elapsed and text.split(": ", 1)[1].startswith("score"):
            ok.append(elapsed)
    complete = len(ok) == args.sessions
    print(f"all complete: {'yes' if complete else 'no'} ({len(ok)}/{args.sessions})")
    if ok:
        print(f"median latency: {statistics.median(ok):.2f} s")
        print(f"worst latency: {max(ok):.2f} s")
    print(f"wall time (including client set-up): {wall:.2f} s")
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
