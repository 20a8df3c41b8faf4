"""The pinned GRPOTrainer subclass: tool views reach the loss forward pass."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from tooliqa.training import trainer as trainer_mod
from tooliqa.training.rollout import GraphRollout, rollout_request
from tooliqa.training.testing import ScriptedGenerator
from tooliqa.training.trainer import (
    ToolIQAGRPOTrainer,
    TRLCompatibilityError,
    check_trl_internals,
)

from _support import two_tools_then_answer


def test_trl_internals_are_the_ones_the_subclass_was_written_for():
    check_trl_internals()  # the installed, pinned TRL


def test_a_different_trl_version_is_refused():
    with pytest.raises(TRLCompatibilityError, match=r"1\.16"):
        check_trl_internals("1.17.0")


def test_moved_internals_fail_loudly(monkeypatch):
    moved = dict(trainer_mod._REQUIRED_SOURCE)
    moved["_generate"] = (*moved["_generate"], "a line TRL never had")
    monkeypatch.setattr(trainer_mod, "_REQUIRED_SOURCE", moved)
    with pytest.raises(TRLCompatibilityError, match="a line TRL never had"):
        check_trl_internals()


def _images(tmp_path, n=2):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 80, (80, 112, 3)).astype(np.uint8)).save(p)
        paths.append(str(p))
    return paths


def _trainer(cls, model_dir, tmp_path, rollout, rows):
    from datasets import Dataset
    from trl import GRPOConfig

    from tooliqa.training.rewards import FidelityReward, FormatReward

    args = GRPOConfig(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        num_generations=2,
        max_steps=1,
        beta=0.04,
        use_cpu=True,
        report_to="none",
        logging_steps=1,
        save_strategy="no",
    )
    return cls(
        model=str(model_dir),
        reward_funcs=[FidelityReward(), FormatReward()],
        args=args,
        train_dataset=Dataset.from_list(rows),
        rollout_func=rollout,
    )


def _rows(paths):
    return [
        {"prompt": rollout_request(p), "mos": 1.0 + i, "group": p, "image_path": p}
        for i, p in enumerate(paths)
    ]


def test_tool_views_reach_the_pixel_inputs_of_the_training_batch(
    tiny_model_dir, processor, tmp_path
):
    gen = ScriptedGenerator(processor, two_tools_then_answer)
    rollout = GraphRollout(make_generator=lambda _t: gen, max_new_tokens=64)
    rows = _rows(_images(tmp_path))
    trainer = _trainer(ToolIQAGRPOTrainer, tiny_model_dir, tmp_path, rollout, rows)
    inputs = [rows[0], rows[0], rows[1], rows[1]]
    out = trainer._generate_and_score_completions([dict(x) for x in inputs])

    # every trajectory: the original + 2 views (gamma, magnifier)
    assert out["num_images"] == [3, 3, 3, 3]
    grid = out["image_grid_thw"]
    assert grid.shape[0] == 12
    assert out["pixel_values"].shape[0] == int(grid.prod(-1).sum())
    merge = processor.image_processor.merge_size**2
    pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
    assert int((ids == pad).sum()) == int(grid.prod(-1).sum()) // merge
    assert int(out["mm_token_type_ids"].sum()) == int((ids == pad).sum())
    # the views' pad tokens are in the completion, masked out of the loss
    completion_pads = out["completion_ids"] == pad
    assert completion_pads.any()
    assert not (out["tool_mask"].bool() & completion_pads).any()
    # and the loss forward pass runs on them
    loss = trainer.compute_loss(trainer.model, out)
    assert math.isfinite(loss.item())


def test_plain_trl_trainer_drops_the_views(tiny_model_dir, processor, tmp_path):
    """Why the subclass exists: TRL's rollout_func path keeps only dataset images."""
    from trl import GRPOTrainer

    gen = ScriptedGenerator(processor, two_tools_then_answer)
    rollout = GraphRollout(make_generator=lambda _t: gen, max_new_tokens=64)
    rows = _rows(_images(tmp_path))
    trainer = _trainer(GRPOTrainer, tiny_model_dir, tmp_path, rollout, rows)
    inputs = [rows[0], rows[0], rows[1], rows[1]]
    try:
        out = trainer._generate_and_score_completions([dict(x) for x in inputs])
    except Exception:  # the image tokens without pixels break the forward pass
        return
    assert "pixel_values" not in out  # or the views silently never reach the model
