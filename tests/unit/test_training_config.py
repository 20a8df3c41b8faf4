"""Batch arithmetic of a GRPO run, the ``--dry-run`` plan, the shipped configs and the
KL (beta) schedule."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("trl")

from tooliqa.training import run_grpo
from tooliqa.training.config import resolve_plan
from tooliqa.training.trainer import BetaSchedule

from _support import REPO, synthetic_dataset

CONFIGS = sorted((REPO / "training" / "configs").glob("*.yaml"))
KADID = str(REPO / "training" / "configs" / "kadid_qwen3vl8b.yaml")


def grpo(**over) -> SimpleNamespace:
    """The GRPOConfig fields resolve_plan reads, at the paper's values."""
    fields = dict(
        per_device_train_batch_size=12,
        gradient_accumulation_steps=1,
        steps_per_generation=None,
        num_generations=4,
        max_steps=680,
    )
    return SimpleNamespace(**{**fields, **over})


# --- resolve_plan ------------------------------------------------------------------------


class TestResolvePlan:
    def test_paper_numbers(self):
        plan = resolve_plan(grpo(), processes=12)
        assert plan.errors == [] and plan.notes == []
        assert plan.steps_per_generation == 1  # defaults to gradient accumulation
        assert plan.generation_batch == 144 and plan.images_per_generation == 36
        assert plan.trajectories_per_step == 144
        text = "\n".join(plan.lines())
        assert "12 x 12 x 1 = 144 trajectories = 36 images x 4 generations" in text
        assert "ERROR" not in text

    def test_groups_split_across_processes_is_an_error(self):
        plan = resolve_plan(grpo(per_device_train_batch_size=6), processes=12)
        assert plan.generation_batch == 72  # a multiple of 4: TRL alone would accept it
        assert len(plan.errors) == 1
        assert "per-device batch x steps per generation = 6" in plan.errors[0]
        assert "split across processes" in plan.errors[0]
        assert "ERROR: per-device batch" in "\n".join(plan.lines())

    def test_generation_batch_not_a_multiple(self):
        plan = resolve_plan(grpo(per_device_train_batch_size=3), processes=2)
        assert "generation batch 6 is not a multiple of num_generations 4" in plan.errors
        assert len(plan.errors) == 2  # and the per-process share (3) is not one either

    def test_steps_per_generation_can_make_the_share_whole(self):
        plan = resolve_plan(
            grpo(per_device_train_batch_size=6, gradient_accumulation_steps=2), processes=12
        )
        assert plan.errors == [] and plan.steps_per_generation == 2
        assert plan.generation_batch == 144 and plan.trajectories_per_step == 144

    def test_one_image_per_generation_is_a_note(self):
        plan = resolve_plan(grpo(per_device_train_batch_size=4), processes=1)
        assert plan.errors == []
        assert plan.notes == [
            "one image per generation batch: the fidelity reward needs at least two"
        ]
        assert "note: one image" in "\n".join(plan.lines())

    def test_stale_samples_note(self):
        plan = resolve_plan(
            grpo(gradient_accumulation_steps=4, steps_per_generation=3), processes=12
        )
        assert any("samples go stale" in n for n in plan.notes)
        ok = resolve_plan(grpo(gradient_accumulation_steps=4, steps_per_generation=2), processes=12)
        assert not any("stale" in n for n in ok.notes)

    def test_epochs_estimate(self):
        plan = resolve_plan(
            grpo(per_device_train_batch_size=8, max_steps=10), processes=2, dataset_images=100
        )
        # 10 steps x 16 trajectories / 4 generations = 40 images of 100
        assert plan.epochs() == pytest.approx(0.4)
        assert "training images           100 (~0.40 epochs)" in plan.lines()
        assert resolve_plan(grpo(), processes=12).epochs() is None  # dataset size unknown
        assert resolve_plan(grpo(max_steps=-1), processes=12, dataset_images=50).epochs() is None

    def test_dataset_smaller_than_one_generation_batch(self):
        plan = resolve_plan(grpo(), processes=12, dataset_images=20)
        assert plan.errors == ["the dataset has 20 images, fewer than one generation batch (36)"]

    def test_processes_default_to_the_launch(self, monkeypatch):
        monkeypatch.delenv("WORLD_SIZE", raising=False)
        monkeypatch.delenv("ACCELERATE_NUM_PROCESSES", raising=False)
        assert resolve_plan(grpo()).processes == 1
        monkeypatch.setenv("ACCELERATE_NUM_PROCESSES", "4")
        assert resolve_plan(grpo()).processes == 4
        monkeypatch.setenv("WORLD_SIZE", "3")
        assert resolve_plan(grpo()).processes == 3
        assert resolve_plan(grpo(), processes=12).processes == 12


# --- run_grpo.main --dry-run -------------------------------------------------------------


@pytest.fixture(scope="module")
def train_spec(tmp_path_factory) -> str:
    """64 tiny images, each its own reference: 38 land in the 60% training split."""
    root = tmp_path_factory.mktemp("toy")
    images = root / "images"
    images.mkdir()
    ds = synthetic_dataset(images, 64, size=(8, 8))
    lines = ["image,mos,ref"] + [f"{s.image},{s.mos},{s.image}" for s in ds.samples]
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return f"toy={root / 'labels.csv'}:{images}"


def dry_run(spec: str, *extra: str) -> int:
    argv = ["--config", KADID, "--dry-run", "--train_dataset", spec, "--plan_processes", "12"]
    return run_grpo.main([*argv, *extra])


class TestDryRun:
    def test_paper_plan(self, train_spec, capsys):
        assert dry_run(train_spec) == 0
        out = capsys.readouterr().out
        assert "144 trajectories = 36 images x 4 generations" in out
        assert "0.04 from step 0, 0.06 from step 340" in out
        assert "importance sampling sequence" in out
        assert "training images           38" in out
        assert "rewards                   fidelity x 1, bate x 1, format x 1" in out
        assert "ERROR" not in out

    def test_too_few_training_images_is_an_error(self, train_spec, capsys):
        assert dry_run(train_spec, "--max_train_samples", "10") == 2
        out = capsys.readouterr().out
        assert "ERROR: the dataset has 10 images, fewer than one generation batch (36)" in out

    def test_a_batch_that_splits_groups_exits_2_with_a_message(self, train_spec, capsys):
        assert dry_run(train_spec, "--per_device_train_batch_size", "6") == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "num_generations" in err
        assert "Traceback" not in err

    def test_missing_label_file_exits_2_with_a_message(self, tmp_path, capsys):
        assert dry_run(f"toy={tmp_path / 'nope.csv'}:{tmp_path}") == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "nope.csv" in err and "not found" in err
        assert "Traceback" not in err

    def test_the_plan_says_which_split_protocol_was_used(self, train_spec, capsys):
        assert dry_run(train_spec) == 0
        out = capsys.readouterr().out
        assert "data                      toy [train]: 38 of 38 images" in out
        assert "split                     seeded (by reference, 60/20/20, seed 42): train 38" in out

    def test_a_published_split_list_as_labels_is_refused_with_a_message(self, tmp_path, capsys):
        images = tmp_path / "images"
        images.mkdir()
        names = [f"I0{r}_0{k}_01.png" for r in range(1, 4) for k in range(1, 4)]
        for name in names:
            (images / name).touch()
        (tmp_path / "train.txt").write_text("".join(f"{n} 3.5\n" for n in names))
        assert dry_run(f"KADID-10k={tmp_path / 'train.txt'}:{images}") == 2
        err = capsys.readouterr().err
        assert err.startswith("error: KADID-10K: the label file holds 9 of the benchmark's")
        assert "split_file" in err and "Traceback" not in err
        spec = f"KADID-10k={tmp_path / 'train.txt'}:{images}"
        assert dry_run(spec, "--split_protocol", "whole") == 2  # 9 images < one generation batch
        assert "whole (every image, no split): all 9 images / 3 references" in (
            capsys.readouterr().out
        )

    def test_a_real_run_saves_its_data_split(self, train_spec, tmp_path, capsys, monkeypatch):
        from tooliqa.training.data import load_training_rows

        monkeypatch.delenv("RANK", raising=False)

        data = load_training_rows(train_spec)
        run_grpo.report_data(data, str(tmp_path / "run"))
        saved = json.loads((tmp_path / "run" / "data_split.json").read_text())
        assert saved["protocol"] == "seeded" and saved["seed"] == 42 and saved["images"] == 38
        assert saved["counts"]["train"] == {"images": 38, "references": 38}
        assert "split                     seeded" in capsys.readouterr().out

    def test_tooliqa_train_finds_a_shipped_config_by_name(self, train_spec, capsys):
        from tooliqa.cli import main as cli_main

        argv = ["train", "--config", "kadid_qwen3vl8b", "--dry-run", "--train_dataset", train_spec]
        assert cli_main([*argv, "--plan_processes", "12"]) == 0
        assert "144 trajectories" in capsys.readouterr().out

    def test_an_unknown_config_name_lists_the_shipped_ones(self):
        with pytest.raises(SystemExit, match="kadid_qwen3vl8b, koniq_qwen3vl8b, tiny_cpu"):
            run_grpo.main(["--config", "nope", "--dry-run"])

    def test_missing_train_dataset_exits_2(self, capsys):
        config = str(REPO / "training" / "configs" / "tiny_cpu.yaml")
        assert run_grpo.main(["--config", config, "--dry-run"]) == 2
        assert "set train_dataset" in capsys.readouterr().err


# --- parse_args and the shipped configs --------------------------------------------------


@pytest.mark.parametrize("config", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_config_parses(config: Path, monkeypatch):
    monkeypatch.setattr(run_grpo, "_has_gpu", lambda: False)
    tool_args, grpo_args, model_args = run_grpo.parse_args(
        ["--config", str(config), "--dry-run", "--learning_rate", "3e-7"]
    )
    assert tool_args.dry_run
    assert grpo_args.learning_rate == 3e-7  # the command line overrides the file
    assert grpo_args.use_cpu and not grpo_args.bf16  # added for a GPU-less dry run
    assert model_args.model_name_or_path
    assert grpo_args.num_generations >= 2
    assert set(tool_args.rewards) <= {"fidelity", "bate", "format"}
    assert len(grpo_args.reward_weights or tool_args.rewards) == len(tool_args.rewards)
    assert tool_args.max_tool_rounds >= 0 and tool_args.enabled_tools
    assert len(run_grpo.make_rewards(tool_args)) == len(tool_args.rewards)
    BetaSchedule(SimpleNamespace(beta=0.0), run_grpo.beta_schedule(tool_args, grpo_args))
    # every shipped recipe keeps each image's generations on one process
    plan = resolve_plan(grpo_args, processes=1)
    assert not any("split across processes" in e for e in plan.errors)


def test_bate_settings_reach_the_reward(monkeypatch):
    monkeypatch.setattr(run_grpo, "_has_gpu", lambda: False)
    argv = ["--config", KADID, "--dry-run", "--bate_base", "literal", "--bate_margin", "0.01"]
    tool_args, _, _ = run_grpo.parse_args([*argv, "--bate_tau", "0.2", "--bate_strength", "0.1"])
    (bate,) = [r for r in run_grpo.make_rewards(tool_args) if r.__name__ == "bate"]
    assert (bate.base, bate.margin, bate.tau, bate.strength) == ("literal", 0.01, 0.2, 0.1)
    tool_args, _, _ = run_grpo.parse_args(["--config", KADID, "--dry-run"])
    (bate,) = [r for r in run_grpo.make_rewards(tool_args) if r.__name__ == "bate"]
    assert (bate.base, bate.strength) == ("duel", 0.02)  # the defaults, as the config says


def test_paper_recipe_values():
    tool_args, grpo_args, _ = run_grpo.parse_args(["--config", KADID, "--dry-run"])
    assert (grpo_args.beta, tool_args.beta_late, tool_args.beta_late_from) == (0.04, 0.06, 0.5)
    assert grpo_args.importance_sampling_level == "sequence"
    assert (grpo_args.per_device_train_batch_size, grpo_args.num_generations) == (12, 4)
    assert tool_args.max_tool_rounds == 2
    assert tool_args.enabled_tools == ["magnifier", "gamma_corrector"]


# --- the beta (KL) schedule --------------------------------------------------------------


class TestBetaSchedule:
    def test_beta_schedule_from_the_arguments(self):
        tool = SimpleNamespace(beta_late=0.06, beta_late_from=0.5)
        assert run_grpo.beta_schedule(tool, SimpleNamespace(beta=0.04, max_steps=680)) == [
            (0, 0.04),
            (340, 0.06),
        ]
        no_late = SimpleNamespace(beta_late=None, beta_late_from=0.5)
        assert run_grpo.beta_schedule(no_late, SimpleNamespace(beta=0.04, max_steps=680)) == [
            (0, 0.04)
        ]
        # max_steps -1 (train by epochs): no step to switch at
        assert run_grpo.beta_schedule(tool, SimpleNamespace(beta=0.04, max_steps=-1)) == [(0, 0.04)]

    def test_beta_at_before_at_and_after_the_switch(self):
        sched = BetaSchedule(SimpleNamespace(beta=0.04), [(0, 0.04), (340, 0.06)])
        assert [sched.beta_at(s) for s in (0, 339, 340, 341, 10_000)] == [
            0.04,
            0.04,
            0.06,
            0.06,
            0.06,
        ]

    def test_more_than_two_pieces(self):
        sched = BetaSchedule(SimpleNamespace(beta=0.1), [(0, 0.1), (10, 0.2), (20, 0.05)])
        assert [sched.beta_at(s) for s in (9, 10, 19, 20)] == [0.1, 0.2, 0.2, 0.05]

    def test_on_step_begin_sets_the_trainer_beta_and_on_log_reports_it(self):
        trainer = SimpleNamespace(beta=0.04)
        sched = BetaSchedule(trainer, [(0, 0.04), (340, 0.06)])
        sched.on_step_begin(None, SimpleNamespace(global_step=339), None)
        assert trainer.beta == 0.04
        sched.on_step_begin(None, SimpleNamespace(global_step=340), None)
        assert trainer.beta == 0.06
        logs = {"loss": 1.0}
        sched.on_log(None, SimpleNamespace(global_step=340), None, logs=logs)
        assert logs == {"loss": 1.0, "beta": 0.06}
        sched.on_log(None, SimpleNamespace(global_step=340), None, logs=None)  # no crash

    def test_all_zero_schedule_is_allowed(self):
        sched = BetaSchedule(SimpleNamespace(beta=0.0), [(0, 0.0), (5, 0.0)])
        assert sched.beta_at(7) == 0.0

    @pytest.mark.parametrize(
        "schedule, message",
        [
            ([], "start at step 0"),
            ([(1, 0.04)], "start at step 0"),
            ([(0, -0.01)], ">= 0"),
            ([(0, 0.04), (10, -0.5)], ">= 0"),
            ([(0, 0.0), (10, 0.06)], "needs beta > 0 at step 0"),
        ],
    )
    def test_invalid_schedules_raise(self, schedule, message):
        with pytest.raises(ValueError, match=message):
            BetaSchedule(SimpleNamespace(beta=0.0), schedule)
