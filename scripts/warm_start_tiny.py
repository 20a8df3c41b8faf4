#!/usr/bin/env python
"""Teach the tiny random Qwen3-VL the assessment protocol (a short cold-start SFT).

A random model never writes a rubric note, a tool call or an ``<answer>`` tag,
so GRPO smoke runs on it would see only failed trajectories. This script runs
the REAL assessment graph with a scripted teacher (through the rollout bridge,
so the token ids are exactly what rollouts produce), then fits the tiny model
on the teacher's tokens for a few hundred steps. The result follows the
protocol often enough that sampled groups contain both tool-using and
tool-free trajectories with parseable scores; its scores mean nothing.

    .venv/bin/python scripts/warm_start_tiny.py [--base .cache/tiny-qwen3vl] [--out DIR]

Deterministic: fixed seeds, deterministic torch kernels, and the rollout
bridge hands the teacher its turns in conversation order, so two builds on the
same machine kind give the same weights (the training smoke tests sample from
them). An output dir holding a complete build of the same recipe is left as it is. The output dir is printed on the last line.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RECIPE_VERSION = 5
MARKER = "warm_start.json"
LEVELS = {
    "Sharpness": ["High", "Medium", "Low"],
    "Noise": ["None", "Slight", "Heavy"],
    "Artifacts": ["None", "Minor", "Severe"],
    "Exposure": ["Good", "Fair", "Poor"],
    "Saliency Visibility": ["Clear", "Partial", "Obscured"],
}


#: Few, fixed replies: a 0.5 M-parameter model can learn them in a few hundred steps.
TOOL_CALLS = [
    '<tool_call>{"name": "gamma_corrector", "arguments": {"mode": "brighten"}}</tool_call>',
    '<tool_call>{"name": "magnifier", "arguments": {"bbox": [0, 0, 500, 500]}}</tool_call>',
]
RUBRICS = [
    "<thinking>look</thinking>\n<answer>\n"
    + "\n".join(f"{k}: [{v[i]}] - ok" for k, v in LEVELS.items())
    + "\n</answer>"
    for i in range(2)
]


class Teacher:
    """Protocol-following replies, chosen from the last user turn."""

    def __init__(self, rng: random.Random, tool_rate: float = 0.75):
        self.rng = rng
        self.tool_rate = tool_rate

    def reply(self, last_user: str) -> str:
        r = self.rng
        if "Single-Action per Turn" in last_user and r.random() < self.tool_rate:
            return r.choice(TOOL_CALLS)
        if "Single-Action per Turn" not in last_user and "final" not in last_user.lower():
            return r.choice(RUBRICS)
        return f"<thinking>done</thinking> <answer>{r.uniform(1.0, 5.0):.2f}</answer>"


def is_complete(out: Path) -> bool:
    try:
        return json.loads((out / MARKER).read_text())["recipe"] == RECIPE_VERSION
    except (OSError, ValueError, KeyError):
        return False


def images(n: int, seed: int) -> list[Path]:
    """Small synthetic images of varied brightness and blur, written to a temp dir."""
    import numpy as np
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(seed)
    folder = Path(tempfile.mkdtemp(prefix="warm-start-"))
    paths = []
    for i in range(n):
        base = rng.integers(0, 255, (8, 8, 3)).astype(np.uint8)
        img = Image.fromarray(base).resize((96, 80), Image.Resampling.BICUBIC)
        gain = float(rng.uniform(0.4, 1.6))
        arr = np.asarray(img, dtype=np.float32) * gain
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
        if i % 3 == 0:
            img = img.filter(ImageFilter.GaussianBlur(2))
        path = folder / f"img{i:03d}.png"
        img.save(path)
        paths.append(path)
    return paths


def build(base: Path, out: Path, *, steps: int, conversations: int, force: bool) -> Path:
    import torch
    from transformers import AutoProcessor, Qwen3VLForConditionalGeneration

    from tooliqa.training.rollout import GraphRollout, rollout_request
    from tooliqa.training.testing import ScriptedGenerator

    if is_complete(out) and not force:
        return out
    random.seed(0)
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    processor = AutoProcessor.from_pretrained(base)
    model = Qwen3VLForConditionalGeneration.from_pretrained(base, dtype=torch.float32)
    tok = processor.tokenizer
    teacher = ScriptedGenerator(tok, Teacher(random.Random(0)).reply)
    rollout = GraphRollout(make_generator=lambda _t: teacher, max_new_tokens=128)
    paths = images(16, seed=0)
    prompts = [rollout_request(str(paths[i % len(paths)])) for i in range(conversations)]
    t0 = time.perf_counter()
    records = rollout.run(prompts, teacher, processor)
    print(f"recorded {len(records)} teacher conversations in {time.perf_counter() - t0:.1f}s")
    used = sum(1 for r in records if r["tool_calls"])
    print(
        f"  {used} with tool calls, scores parsed in {sum(r['pred_score'] is not None for r in records)}"
    )

    batches = []
    for r in records:
        ids = torch.tensor([r["prompt_ids"] + r["completion_ids"]])
        labels = ids.clone()
        mask = torch.tensor([0] * len(r["prompt_ids"]) + r["env_mask"])
        labels[0, mask == 0] = -100
        vis = processor.image_processor(images=r["images"], return_tensors="pt")
        pad = tok.convert_tokens_to_ids("<|image_pad|>")
        batches.append(
            {
                "input_ids": ids,
                "labels": labels,
                "attention_mask": torch.ones_like(ids),
                "pixel_values": vis["pixel_values"],
                "image_grid_thw": vis["image_grid_thw"],
                "mm_token_type_ids": (ids == pad).long(),
            }
        )
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=2e-4)
    model.train()
    t0 = time.perf_counter()
    for step in range(steps):
        batch = batches[step % len(batches)]
        loss = model(**batch).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 50 == 0 or step == steps - 1:
            print(f"  step {step:4d} loss {loss.item():.3f}")
    print(f"trained {steps} steps in {time.perf_counter() - t0:.1f}s")
    tmp = Path(tempfile.mkdtemp(prefix=".warm-", dir=out.parent))
    for f in base.iterdir():
        if f.is_file() and f.name not in ("model.safetensors", "tiny_build.json"):
            shutil.copy2(f, tmp / f.name)
    model.save_pretrained(tmp)
    (tmp / MARKER).write_text(json.dumps({"recipe": RECIPE_VERSION, "base": str(base.name)}))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", type=Path, default=REPO / ".cache" / "tiny-qwen3vl")
    ap.add_argument("--out", type=Path, default=REPO / ".cache" / "tiny-qwen3vl-warm")
    ap.add_argument("--steps", type=int, default=360)
    ap.add_argument("--conversations", type=int, default=48)
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)
    if not (args.base / "config.json").is_file():
        print(
            f"{args.base}: no tiny model; run scripts/build_tiny_qwen3vl.py first", file=sys.stderr
        )
        return 2
    out = build(
        args.base, args.out, steps=args.steps, conversations=args.conversations, force=args.force
    )
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
