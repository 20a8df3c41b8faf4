"""CPU smoke run: ``training/run_grpo.py`` does 2 GRPO steps on the tiny warm-started Qwen3-VL."""

from __future__ import annotations

import ast
import json
import math
import os
import subprocess
import sys
from collections import defaultdict

import numpy as np
import pytest
from PIL import Image, ImageFilter

from _support import REPO

pytestmark = pytest.mark.timeout(2400)


def _dataset(root, n=8):
    rng = np.random.default_rng(5)
    lines = ["image,mos"]
    for i in range(n):
        base = rng.integers(0, 255, (8, 8, 3)).astype(np.uint8)
        img = Image.fromarray(base).resize((96, 80), Image.Resampling.BICUBIC)
        if i % 2:
            img = img.filter(ImageFilter.GaussianBlur(2))
        img.save(root / f"im{i}.png")
        lines.append(f"im{i}.png,{1 + 0.5 * i}")
    labels = root / "labels.csv"
    labels.write_text("\n".join(lines) + "\n")
    return labels


def _logged(stdout: str) -> list[dict]:
    out = []
    for line in stdout.splitlines():
        start = line.find("{'loss'")
        if start >= 0:
            out.append(ast.literal_eval(line[start : line.index("}", start) + 1]))
    return out


def test_two_grpo_steps_with_tool_using_and_tool_free_trajectories(warm_model_dir, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    labels = _dataset(root)
    log = tmp_path / "rollouts.jsonl"
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        str(REPO / "training" / "run_grpo.py"),
        "--config",
        str(REPO / "training" / "configs" / "tiny_cpu.yaml"),
        "--model_name_or_path",
        str(warm_model_dir),
        "--train_dataset",
        f"toy={labels}:{root}",
        "--output_dir",
        str(out),
        "--rollout_log",
        str(log),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(
        cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=1100, check=False
    )
    assert proc.returncode == 0, proc.stderr[-4000:]

    steps = _logged(proc.stdout + proc.stderr)
    assert len(steps) == 2
    for s in steps:
        assert math.isfinite(float(s["loss"]))
        for key in ("rewards/fidelity/mean", "rewards/bate/mean", "rewards/format/mean"):
            assert math.isfinite(float(s[key]))
        assert 0.0 <= float(s["tools/use_rate"]) <= 1.0
        assert 0.0 <= float(s["tools/rate"]) <= 1.0
    assert [float(s["beta"]) for s in steps] == [0.04, 0.06]  # raised at the halfway step

    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(records) == 16  # 2 steps x 2 images x 4 generations
    groups = defaultdict(list)
    for r in records:
        groups[(r["step"], r["image"])].append(r["tool_calls"] > 0)
    mixed = [g for g, used in groups.items() if any(used) and not all(used)]
    assert mixed, f"no group mixed tool-using and tool-free trajectories: {dict(groups)}"
    assert any(r["tool_successes"] > 0 and r["images"] > 1 for r in records)
    assert (out / "model.safetensors").is_file()
