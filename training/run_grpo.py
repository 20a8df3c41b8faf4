#!/usr/bin/env python
"""GRPO training of a Tool-IQA policy on the assessment graph's own trajectories.

    python training/run_grpo.py --config training/configs/kadid_qwen3vl8b.yaml
    accelerate launch --config_file training/accelerate/zero3.yaml \\
        training/run_grpo.py --config training/configs/kadid_qwen3vl8b.yaml
    tooliqa train --config training/configs/tiny_cpu.yaml --dry-run

Settings come from TRL's parser: ``GRPOConfig`` and ``ModelConfig`` fields plus
:class:`tooliqa.training.config.ToolIQAArguments`, from the YAML file and then
the command line (``--learning_rate 1e-6`` overrides the file). ``--dry-run``
prints the resolved plan (processes, batch arithmetic, schedule, rewards) and
exits without loading a model.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

if __name__ == "__main__" and __package__ in (None, ""):
    # Run as a script: drop training/ from sys.path (its modules are imported
    # through the installed package, tooliqa.training).
    here = str(Path(__file__).resolve().parent)
    sys.path[:] = [p for p in sys.path if str(Path(p or ".").resolve()) != here]

__all__ = ["build_trainer", "main", "parse_args", "resolve_config"]


CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def resolve_config(name: str) -> Path:
    """A config path as given, or a shipped config by name (``kadid_qwen3vl8b``)."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = CONFIG_DIR / (name if name.endswith(".yaml") else f"{name}.yaml")
    if shipped.is_file():
        return shipped
    known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
    raise SystemExit(f"error: no config {name!r} (a YAML path, or one of: {known})")


def _has_gpu() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def parse_args(argv: list[str] | None = None) -> tuple[Any, Any, Any]:
    """(ToolIQAArguments, GRPOConfig, ModelConfig) from ``--config`` YAML + overrides."""
    from trl import GRPOConfig, ModelConfig, TrlParser

    from tooliqa.training.config import ToolIQAArguments

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--config" in argv:
        i = argv.index("--config") + 1
        if i < len(argv):
            argv[i] = str(resolve_config(argv[i]))
    argv = ["--dry_run" if a == "--dry-run" else a for a in argv]
    if "--dry_run" in argv and not _has_gpu():
        # The plan needs no device; without a GPU, transformers refuses bf16 at parse time.
        argv += ["--bf16", "false", "--use_cpu", "true"]
    parser = TrlParser((ToolIQAArguments, GRPOConfig, ModelConfig))  # type: ignore[arg-type]
    tool_args, grpo_args, model_args = parser.parse_args_and_config(argv)
    return tool_args, grpo_args, model_args


def make_rewards(tool_args: Any) -> list[Any]:
    from tooliqa.training import rewards as R

    table = {
        "fidelity": lambda: R.FidelityReward(),
        "bate": lambda: R.BATEReward(
            tau=tool_args.bate_tau,
            base=tool_args.bate_base,
            margin=tool_args.bate_margin,
            strength=tool_args.bate_strength,
            target=tool_args.tool_rate_target,
        ),
        "format": lambda: R.FormatReward(),
    }
    unknown = [r for r in tool_args.rewards if r not in table]
    if unknown:
        raise SystemExit(f"unknown reward(s) {unknown}; choose from {sorted(table)}")
    return [table[name]() for name in tool_args.rewards]


def beta_schedule(tool_args: Any, grpo_args: Any) -> list[tuple[int, float]]:
    schedule = [(0, float(grpo_args.beta))]
    if tool_args.beta_late is not None and grpo_args.max_steps > 0:
        start = round(grpo_args.max_steps * tool_args.beta_late_from)
        if start > 0:
            schedule.append((start, float(tool_args.beta_late)))
        else:
            schedule = [(0, float(tool_args.beta_late))]
    return schedule


def _generator_factory(tool_args: Any) -> Any:
    def make(trainer: Any) -> Any:
        from tooliqa.training.generation import TransformersGenerator, TRLVLLMGenerator

        if trainer.use_vllm:
            return TRLVLLMGenerator(trainer)
        from trl.models import unwrap_model_for_generation

        args = trainer.args

        def unwrap() -> Any:
            return unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator)

        return TransformersGenerator(
            trainer.model,
            trainer.processing_class,
            temperature=args.temperature,
            top_p=args.top_p,
            top_k=args.top_k or 0,
            unwrap=unwrap,
        )

    return make


def build_rollout(tool_args: Any) -> Any:
    from tooliqa.training.generation import trainer_lockstep
    from tooliqa.training.rollout import GraphRollout

    return GraphRollout(
        make_generator=_generator_factory(tool_args),
        max_tool_rounds=tool_args.max_tool_rounds,
        enabled_tools=tuple(tool_args.enabled_tools),
        bbox_convention=tool_args.bbox_convention,
        max_pixels=tool_args.max_pixels,
        max_new_tokens=tool_args.max_new_tokens_per_turn,
        lockstep=trainer_lockstep,
        log_path=tool_args.rollout_log,
    )


def build_trainer(tool_args: Any, grpo_args: Any, model_args: Any, rows: list[dict]) -> Any:
    from trl import get_peft_config

    from tooliqa.training.data import to_hf_dataset
    from tooliqa.training.trainer import BetaSchedule, ToolIQAGRPOTrainer

    if grpo_args.model_init_kwargs is None:
        grpo_args.model_init_kwargs = {}
    if model_args.dtype and "dtype" not in grpo_args.model_init_kwargs:
        grpo_args.model_init_kwargs["dtype"] = model_args.dtype
    if model_args.attn_implementation:
        grpo_args.model_init_kwargs.setdefault(
            "attn_implementation", model_args.attn_implementation
        )
    trainer = ToolIQAGRPOTrainer(
        model=model_args.model_name_or_path,
        reward_funcs=make_rewards(tool_args),
        args=grpo_args,
        train_dataset=to_hf_dataset(rows),
        rollout_func=build_rollout(tool_args),
        peft_config=get_peft_config(model_args),
    )
    trainer.add_callback(BetaSchedule(trainer, beta_schedule(tool_args, grpo_args)))
    return trainer


def report_data(data: Any, output_dir: str | None) -> None:
    """Print the data summary (split protocol included) and save it as
    ``<output_dir>/data_split.json``; on the main process only."""
    if os.environ.get("RANK", "0") != "0":
        return
    for line in data.summary_lines():
        print(line)
    if output_dir:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "data_split.json").write_text(json.dumps(data.record(), indent=2) + "\n")


def print_plan(tool_args: Any, grpo_args: Any, model_args: Any, data: Any) -> int:
    from tooliqa.training.config import resolve_plan

    n_images = len(data.rows)
    plan = resolve_plan(grpo_args, processes=tool_args.plan_processes, dataset_images=n_images)
    print(f"model                     {model_args.model_name_or_path}")
    print(f"labels                    {tool_args.train_dataset}")
    for line in data.summary_lines():
        print(line)
    gen = (
        f"vLLM ({grpo_args.vllm_mode})"
        if grpo_args.use_vllm
        else "transformers (model.generate on the training processes)"
    )
    print(f"generation                {gen}; temperature {grpo_args.temperature}")
    print(
        f"graph                     {tool_args.max_tool_rounds} tool rounds, tools "
        f"{', '.join(tool_args.enabled_tools)}, {tool_args.max_new_tokens_per_turn} tokens/turn"
    )
    weights = grpo_args.reward_weights or [1.0] * len(tool_args.rewards)
    print(
        "rewards                   "
        + ", ".join(f"{n} x {w:g}" for n, w in zip(tool_args.rewards, weights, strict=False))
    )
    sched = ", ".join(f"{b:g} from step {s}" for s, b in beta_schedule(tool_args, grpo_args))
    print(f"beta (KL)                 {sched}")
    print(
        f"optimizer                 lr {grpo_args.learning_rate:g}, warmup "
        f"{grpo_args.warmup_steps:g}, importance sampling {grpo_args.importance_sampling_level}"
    )
    for line in plan.lines():
        print(line)
    return 2 if plan.errors else 0


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    try:
        tool_args, grpo_args, model_args = parse_args(argv)
    except ValueError as exc:  # TRL/transformers validate the settings while parsing
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not tool_args.train_dataset:
        print("error: set train_dataset (NAME=LABELS[:ROOT]) in the config", file=sys.stderr)
        return 2
    if not model_args.model_name_or_path:
        print("error: set model_name_or_path in the config", file=sys.stderr)
        return 2
    from tooliqa.eval.datasets import DatasetError
    from tooliqa.training.data import load_training_rows

    try:
        data = load_training_rows(
            tool_args.train_dataset,
            split=tool_args.train_split,
            protocol=tool_args.split_protocol,
            fractions=tool_args.split_fractions,
            seed=tool_args.split_seed,
            split_file=tool_args.split_file,
            limit=tool_args.max_train_samples,
            query=tool_args.query,
        )
    except (DatasetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if tool_args.dry_run:
        return print_plan(tool_args, grpo_args, model_args, data)
    report_data(data, grpo_args.output_dir)
    trainer = build_trainer(tool_args, grpo_args, model_args, data.rows)
    trainer.train(resume_from_checkpoint=grpo_args.resume_from_checkpoint)
    trainer.save_model(grpo_args.output_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
