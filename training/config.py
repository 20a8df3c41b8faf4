"""Settings of a training run beyond TRL's (``GRPOConfig``, ``ModelConfig``), and
the resolved plan that ``--dry-run`` prints.

Everything is parsed by TRL's ``TrlParser`` from one YAML file
(``--config training/configs/<name>.yaml``) plus command-line overrides.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal

from .rewards import BATE_MARGIN, SHAPING_STRENGTH

__all__ = ["Plan", "ToolIQAArguments", "resolve_plan"]


@dataclass
class ToolIQAArguments:
    """The graph, data, reward and schedule settings of a GRPO run."""

    train_dataset: str | None = field(
        default=None,
        metadata={"help": "NAME=LABELS[:ROOT], as for `tooliqa eval` (e.g. KADID-10k=...)"},
    )
    train_split: str = field(default="train", metadata={"help": "split to train on"})
    split_fractions: list[float] = field(
        default_factory=lambda: [0.6, 0.2, 0.2],
        metadata={"help": "train/val/test fractions when the labels carry no split (by reference)"},
    )
    split_seed: int = field(default=42, metadata={"help": "seed of the reference split"})
    split_protocol: Literal["auto", "given", "seeded", "file", "whole"] = field(
        default="auto",
        metadata={
            "help": "how the training split is made (tooliqa.eval.splits): 'given' the label "
            "file's split column; 'seeded' by reference with split_fractions and split_seed; "
            "'file' the images split_file names; 'whole' every image; 'auto' file if split_file "
            "is set, else given if the labels carry a split, else seeded. A label file that is "
            "already a split is never split again"
        },
    )
    split_file: str | None = field(
        default=None,
        metadata={
            "help": "a published train list (e.g. VisualQuality-R1's KADID-10K list, `name mos` "
            "lines): its images, matched by file name in train_dataset, are the train split"
        },
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "use the first N images"})
    query: str | None = field(default=None, metadata={"help": "a question asked with every image"})
    max_tool_rounds: int = field(default=2, metadata={"help": "tool rounds per trajectory"})
    enabled_tools: list[str] = field(
        default_factory=lambda: ["magnifier", "gamma_corrector"],
        metadata={"help": "view tools the policy may call"},
    )
    bbox_convention: str = field(default="rel1000", metadata={"help": "rel1000, pixel or unit"})
    max_pixels: int | None = field(default=None, metadata={"help": "image budget (graph default)"})
    max_new_tokens_per_turn: int = field(default=512, metadata={"help": "cap per model turn"})
    beta_late: float | None = field(
        default=0.06, metadata={"help": "KL coefficient from `beta_late_from` on (paper: 0.06)"}
    )
    beta_late_from: float = field(
        default=0.5, metadata={"help": "fraction of max_steps where beta_late starts"}
    )
    rewards: list[str] = field(
        default_factory=lambda: ["fidelity", "bate", "format"],
        metadata={"help": "reward functions, in the order of reward_weights"},
    )
    bate_tau: float = field(default=0.1, metadata={"help": "BATE duel temperature"})
    bate_base: Literal["duel", "literal", "centred"] = field(
        default="duel",
        metadata={
            "help": "BATE duels between a group's tool-invoked and tool-free trajectories "
            "(rewards.BATEBase): 'duel' is two-sided and zero-sum, t gets mean_n v(s_t - s_n - m), "
            "n gets -mean_t v(s_t - s_n - m), v(d) = (sqrt(Phi(d/tau)) - sqrt(Phi(-d/tau)))/2, "
            "failed calls 0: both cohorts are scored alike, so a tool that does not change "
            "fidelity gains nothing under GRPO's group scaling, and with bate_margin a call "
            "that only ties loses; 'literal' is eq. 2 as printed, which pays ~0.71 for any call, "
            "failed ones too, and drives the tool rate to 1 even when tools hurt; 'centred' "
            "(eq. 2 - sqrt(0.5), tool-free 0) still lets a useless tool drift up "
            "(bench/bench_bate_bandit.py)"
        },
    )
    bate_margin: float = field(
        default=BATE_MARGIN,
        metadata={
            "help": "fidelity margin m of bate_base 'duel' (rewards.BATE_MARGIN): a call must "
            "beat a tool-free answer's fidelity by more than m to win their duel; 0.002 is the "
            "fidelity score's resolution (its eps moves it by up to 0.0018), so ties lose. "
            "Larger margins act as a per-call cost: 0.01 already stops a tool that halves the "
            "error from being reinforced in bench/bench_bate_bandit.py"
        },
    )
    bate_strength: float = field(
        default=SHAPING_STRENGTH,
        metadata={
            "help": "in-band strength of BATE's tool-rate shaping (eq. 3; rewards.SHAPING_STRENGTH, "
            "threefold outside [0.35, 0.65]). The paper gives none; 0.02 keeps the shaping a "
            "regulator, so the duels decide whether a tool is used (at 0.1 a useless tool is "
            "held at the target rate, bench/bench_bate_bandit.py)"
        },
    )
    tool_rate_target: float = field(default=0.5, metadata={"help": "BATE target tool rate"})
    rollout_log: str | None = field(
        default=None,
        metadata={"help": "append one JSON line per trajectory (score, tools, text) to this file"},
    )
    plan_processes: int | None = field(
        default=None,
        metadata={
            "help": "--dry-run: number of training processes to plan for (default: this launch)"
        },
    )
    dry_run: bool = field(default=False, metadata={"help": "print the resolved plan and exit"})


@dataclass
class Plan:
    """The batch arithmetic of a run, checked."""

    processes: int
    per_device_batch: int
    grad_accum: int
    steps_per_generation: int
    num_generations: int
    max_steps: int
    dataset_images: int | None
    errors: list[str]
    notes: list[str]

    @property
    def generation_batch(self) -> int:
        return self.per_device_batch * self.processes * self.steps_per_generation

    @property
    def images_per_generation(self) -> float:
        return self.generation_batch / self.num_generations

    @property
    def trajectories_per_step(self) -> int:
        return self.per_device_batch * self.processes * self.grad_accum

    def epochs(self) -> float | None:
        if not self.dataset_images or self.max_steps <= 0:
            return None
        images = self.max_steps * self.trajectories_per_step / self.num_generations
        return images / self.dataset_images

    def lines(self) -> list[str]:
        out = [
            f"training processes        {self.processes}",
            f"per-device batch          {self.per_device_batch} trajectories",
            f"gradient accumulation     {self.grad_accum}",
            f"steps per generation      {self.steps_per_generation}",
            f"generation batch          {self.per_device_batch} x {self.processes} x "
            f"{self.steps_per_generation} = {self.generation_batch} trajectories "
            f"= {self.images_per_generation:g} images x {self.num_generations} generations",
            f"per process / generation  {self.per_device_batch * self.steps_per_generation} "
            "trajectories",
            f"trajectories per step     {self.trajectories_per_step}",
            f"optimizer steps           {self.max_steps}",
        ]
        ep = self.epochs()
        if ep is not None:
            out.append(f"training images           {self.dataset_images} (~{ep:.2f} epochs)")
        out += [f"note: {n}" for n in self.notes]
        out += [f"ERROR: {e}" for e in self.errors]
        return out


def _launch_processes() -> int:
    for var in ("WORLD_SIZE", "ACCELERATE_NUM_PROCESSES"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 1


def resolve_plan(
    grpo: Any, *, processes: int | None = None, dataset_images: int | None = None
) -> Plan:
    """Check the batch arithmetic for ``processes`` training processes.

    TRL needs the generation batch (per-device batch × processes × steps per
    generation) to be a multiple of ``num_generations``; this project also
    needs each PROCESS's share (per-device batch × steps per generation) to be a
    multiple, so that every group (the generations of one image) stays whole on
    one process.
    """
    n = processes or _launch_processes()
    per_device = int(grpo.per_device_train_batch_size)
    accum = int(grpo.gradient_accumulation_steps)
    spg = int(grpo.steps_per_generation or accum)
    g = int(grpo.num_generations)
    errors: list[str] = []
    notes: list[str] = []
    plan = Plan(n, per_device, accum, spg, g, int(grpo.max_steps), dataset_images, errors, notes)
    if plan.generation_batch % g:
        errors.append(
            f"generation batch {plan.generation_batch} is not a multiple of num_generations {g}"
        )
    if (per_device * spg) % g:
        errors.append(
            f"per-device batch x steps per generation = {per_device * spg} is not a multiple of "
            f"num_generations {g}: groups would be split across processes"
        )
    if plan.generation_batch // max(g, 1) < 2:
        notes.append("one image per generation batch: the fidelity reward needs at least two")
    if accum % spg and spg % accum:
        notes.append("steps_per_generation does not divide gradient accumulation: samples go stale")
    if dataset_images is not None and dataset_images < plan.images_per_generation:
        errors.append(
            f"the dataset has {dataset_images} images, fewer than one generation batch "
            f"({plan.images_per_generation:g})"
        )
    return plan
