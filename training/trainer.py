"""``GRPOTrainer`` for graph rollouts whose tool views must reach the loss.

TRL 1.16's ``rollout_func`` path keeps only the dataset's images: the images a
rollout adds mid-conversation (our magnifier and gamma views) never reach the
forward passes that compute the old, reference and current log-probabilities,
so the ``<|image_pad|>`` runs in the completion have no pixels behind them.
TRL's own tool loop has a branch that handles exactly this (images from the
completion → ``image_processor`` → ``pixel_values``/``image_grid_thw``, and
``mm_token_type_ids`` rebuilt over prompt + completion). This subclass:

* replaces ``_generate`` for the rollout path: it calls the rollout function,
  returns every image of each trajectory (original first, then the views),
  the ``env_mask`` as the tool mask, and logs tool-use metrics;
* routes ``_generate_and_score_completions`` through TRL's tool-image branch.

It depends on TRL internals, so it is pinned: :func:`check_trl_internals`
verifies the version and the source lines it relies on and raises
:class:`TRLCompatibilityError` naming what moved (also run by the test suite).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
import trl
from packaging.version import Version
from transformers import TrainerCallback
from trl import GRPOTrainer

__all__ = [
    "TRL_VERSION_RANGE",
    "BetaSchedule",
    "TRLCompatibilityError",
    "ToolIQAGRPOTrainer",
    "check_trl_internals",
]

#: The TRL versions whose internals this module was written against.
TRL_VERSION_RANGE = ("1.16.0", "1.17.0")

#: GRPOTrainer method → source fragments the subclass relies on.
_REQUIRED_SOURCE = {
    "_generate_and_score_completions": (
        "= self._generate(prompts)",
        "if self.tools and any(imgs for imgs in tool_images) and self._is_vlm:",
        "self.processing_class.image_processor(images=flat_images",
        'forward_kwargs["mm_token_type_ids"] = mm_ids',
        "if images is None:",
        "num_images = [len(img_list) if img_list else 0 for img_list in images]",
    ),
    "_generate": (
        "output = self.rollout_func(prompts, self)",
        "return prompt_ids, completion_ids, tool_mask, completions, logprobs, extra_fields, images, tool_images",
    ),
    "_compute_loss": (
        'pixel_values=inputs.get("pixel_values")',
        'image_grid_thw=inputs.get("image_grid_thw")',
        'num_images=inputs.get("num_images")',
        'mm_token_type_ids=inputs.get("mm_token_type_ids")',
    ),
}


class TRLCompatibilityError(RuntimeError):
    """The installed TRL differs from the internals this trainer was written for."""


def check_trl_internals(version: str | None = None) -> None:
    """Raise :class:`TRLCompatibilityError` unless TRL's internals are as expected."""
    version = version or trl.__version__
    lo, hi = TRL_VERSION_RANGE
    if not Version(lo) <= Version(version) < Version(hi):
        raise TRLCompatibilityError(
            f"tooliqa's GRPO trainer is written against TRL >={lo},<{hi}; found {version}. "
            "Install the pinned version (pip install 'tooliqa[train]') or port "
            "tooliqa/training/trainer.py to the new internals."
        )
    missing = []
    for name, fragments in _REQUIRED_SOURCE.items():
        source = inspect.getsource(getattr(GRPOTrainer, name))
        missing += [f"GRPOTrainer.{name}: {f!r}" for f in fragments if f not in source]
    if missing:
        raise TRLCompatibilityError(
            "TRL's GRPOTrainer internals moved; the tool-view image path would silently break:\n  "
            + "\n  ".join(missing)
        )


def _trajectory_images() -> None:
    """Stand-in entry of ``self.tools`` while scoring (selects TRL's tool-image branch)."""


class ToolIQAGRPOTrainer(GRPOTrainer):
    """GRPO on graph rollouts (see the module docstring).

    The rollout function must return, besides TRL's ``prompt_ids``,
    ``completion_ids`` and ``logprobs``: ``env_mask`` (1 on sampled tokens),
    ``images`` (every image of each trajectory in order of appearance) and the
    reward columns (``pred_score``, ``tool_calls``, ``tool_successes``,
    ``protocol``...); ``completion_text`` is used for logs.
    """

    def __init__(self, *args: Any, rollout_func: Callable[..., dict[str, Any]], **kwargs: Any):
        check_trl_internals()
        if rollout_func is None:
            raise ValueError("ToolIQAGRPOTrainer needs a rollout_func (e.g. a GraphRollout)")
        if kwargs.get("tools") or kwargs.get("environment_factory"):
            raise ValueError("tools/environment_factory do not apply: the graph runs the tools")
        super().__init__(*args, rollout_func=rollout_func, **kwargs)  # type: ignore[misc]
        if not self._is_vlm:
            raise ValueError("ToolIQAGRPOTrainer trains vision-language models only")

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        saved = self.tools
        self.tools = [_trajectory_images]
        try:
            return super()._generate_and_score_completions(inputs)
        finally:
            self.tools = saved

    def _generate(self, prompts: list[Any]) -> tuple[Any, ...]:
        device = self.accelerator.device
        model: Any = self.model
        mode = "train" if model.training else "eval"
        if self.use_vllm and self.state.global_step != self._last_loaded_step:
            self.vllm_generation.sync_weights()
            self._last_loaded_step = self.state.global_step
        rollout: Any = self.rollout_func
        output = dict(rollout(prompts, self))
        missing = {"prompt_ids", "completion_ids", "logprobs", "env_mask", "images"} - output.keys()
        if missing:
            raise ValueError(f"rollout_func must return {sorted(missing)} as well")
        prompt_ids = output.pop("prompt_ids")
        completion_ids = output.pop("completion_ids")
        logprobs = output.pop("logprobs")
        tool_mask = output.pop("env_mask")
        images = [list(imgs) or None for imgs in output.pop("images")]
        texts = output.get("completion_text") or [""] * len(completion_ids)
        completions = [[{"role": "assistant", "content": t}] for t in texts]
        extra_fields = output

        model_tokens = torch.tensor([sum(m) for m in tool_mask], device=device, dtype=torch.float)
        lengths = self.accelerator.gather(model_tokens)
        n_prompt = torch.tensor([len(p) for p in prompt_ids], device=device, dtype=torch.float)
        total = self.accelerator.gather(n_prompt).sum() + lengths.sum()
        if mode == "train":
            self.state.num_input_tokens_seen += int(total.item())
        metrics = self._metrics[mode]
        metrics["num_tokens"] = [self.state.num_input_tokens_seen]
        metrics["completions/mean_length"].append(lengths.mean().item())
        metrics["completions/min_length"].append(lengths.min().item())
        metrics["completions/max_length"].append(lengths.max().item())

        def gathered(key: str, fn: Callable[[Any], float]) -> torch.Tensor:
            vals = [fn(v) for v in extra_fields.get(key, [0] * len(prompt_ids))]
            return self.accelerator.gather(torch.tensor(vals, device=device, dtype=torch.float))

        calls = gathered("tool_calls", float)
        ok = gathered("tool_successes", float)
        scored = gathered("pred_score", lambda s: 0.0 if s is None else 1.0)
        errors = gathered("rollout_error", lambda e: 0.0 if e is None else 1.0)
        metrics["tools/call_frequency"].append(calls.mean().item())
        metrics["tools/use_rate"].append((calls > 0).float().mean().item())
        metrics["tools/failure_frequency"].append(
            ((calls.sum() - ok.sum()) / calls.sum()).item() if calls.sum() > 0 else 0.0
        )
        metrics["rollout/score_parsed"].append(scored.mean().item())
        metrics["rollout/errors"].append(errors.mean().item())
        metrics["beta"].append(float(self.beta))
        # Every image (original + views) goes through TRL's tool-image branch.
        tool_images = images
        return (
            prompt_ids,
            completion_ids,
            tool_mask,
            completions,
            logprobs,
            extra_fields,
            images,
            tool_images,
        )


class BetaSchedule(TrainerCallback):
    """Piecewise-constant KL coefficient: ``[(from_step, beta), ...]`` (paper: 0.04,
    then 0.06 from the halfway step). The first entry must start at step 0 and its
    beta must be non-zero if any later one is (TRL only builds a reference model
    when the initial beta is non-zero)."""

    def __init__(self, trainer: GRPOTrainer, schedule: list[tuple[int, float]]):
        schedule = sorted(schedule)
        if not schedule or schedule[0][0] != 0:
            raise ValueError("the beta schedule must start at step 0")
        if any(b < 0 for _, b in schedule):
            raise ValueError("beta must be >= 0")
        if schedule[0][1] == 0 and any(b for _, b in schedule):
            raise ValueError("a schedule that turns the KL term on later needs beta > 0 at step 0")
        self.trainer = trainer
        self.schedule = sorted(schedule)

    def beta_at(self, step: int) -> float:
        beta = self.schedule[0][1]
        for start, value in self.schedule:
            if step >= start:
                beta = value
        return beta

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.trainer.beta = self.beta_at(state.global_step)

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        if logs is not None:
            logs["beta"] = self.trainer.beta
