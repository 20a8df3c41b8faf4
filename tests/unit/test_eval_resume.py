"""A running evaluation killed with SIGKILL resumes: nothing lost, nothing assessed twice."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np

from _support import png_bytes

N_IMAGES = 40


def rows_in(db) -> int:
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(db, timeout=5)
        try:
            return int(con.execute("SELECT COUNT(*) FROM results").fetchone()[0])
        finally:
            con.close()
    except sqlite3.OperationalError:
        return 0


def test_sigkill_then_resume(tmp_path):
    rng = np.random.default_rng(5)
    images = tmp_path / "images"
    images.mkdir()
    lines = ["image,mos"]
    for i in range(N_IMAGES):
        img = np.clip(rng.normal(128, 40, (320, 320, 3)), 0, 255).astype(np.uint8)
        (images / f"img_{i:03d}.png").write_bytes(png_bytes(img))
        lines.append(f"img_{i:03d}.png,{1 + (i % 9) * 0.5}")
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join(lines) + "\n")
    db = tmp_path / "runs.sqlite"
    cmd = [
        sys.executable, "-m", "tooliqa.cli", "eval", "--dataset", f"toy={labels}:{images}",
        "--db", str(db), "--concurrency", "1", "--no-progress",
    ]  # fmt: skip

    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while rows_in(db) < 8:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the evaluation made no progress"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    kept = rows_in(db)
    assert 8 <= kept < N_IMAGES, "kill the run before it finishes"

    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    match = re.search(r"(\d+) assessed, (\d+) already done", done.stderr)
    assert match, done.stderr
    assessed, skipped = int(match.group(1)), int(match.group(2))
    assert skipped == kept and assessed == N_IMAGES - kept

    con = sqlite3.connect(db)
    images_stored = [r[0] for r in con.execute("SELECT image FROM results")]
    assert len(images_stored) == N_IMAGES == len(set(images_stored))
    assert con.execute("SELECT COUNT(*) FROM results WHERE score IS NULL").fetchone()[0] == 0
    assert con.execute("SELECT MAX(attempts) FROM results").fetchone()[0] == 1
