"""Launch configurations: the accelerate YAMLs in training/accelerate/ and the
scripts in training/recipes/.

The YAMLs are read with accelerate's own loader and taken through accelerate's
own launch arguments up to the torchrun call. The recipes run in ``--print``
mode, or for real against stub ``trl``/``accelerate``/``curl`` commands that
record how they were called: nothing real is ever launched.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from _support import REPO

accelerate_config = pytest.importorskip("accelerate.commands.config.config_args")

ACCEL_DIR = REPO / "training" / "accelerate"
RECIPES = REPO / "training" / "recipes"
PAPER = RECIPES / "paper_16gpu.sh"
SINGLE = RECIPES / "single_gpu.sh"

# name: (distributed_type, num_processes, num_machines)
EXPECTED = {
    "single_gpu": ("NO", 1, 1),
    "multi_gpu": ("MULTI_GPU", 8, 1),
    "zero3": ("DEEPSPEED", 8, 1),
    "zero3_multinode": ("DEEPSPEED", 16, 2),
    "paper_12gpu": ("DEEPSPEED", 12, 3),
}
DEEPSPEED = [name for name, (kind, _, _) in EXPECTED.items() if kind == "DEEPSPEED"]
# Training configs the recipes may name before they exist (written separately).
SHIPPED_TRAINING_CONFIGS = {"kadid_qwen3vl8b.yaml", "koniq_qwen3vl8b.yaml", "tiny_cpu.yaml"}

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _load(name: str):
    return accelerate_config.load_config_from_file(str(ACCEL_DIR / f"{name}.yaml"))


def _yaml_ints(name: str) -> tuple[int, int]:
    cfg = _load(name)
    return cfg.num_processes, cfg.num_machines


# --- accelerate configs ---------------------------------------------------------------


def test_the_expected_configs_and_no_others():
    assert {p.stem for p in ACCEL_DIR.glob("*.yaml")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_loads_with_accelerates_loader(name):
    from accelerate.utils import ComputeEnvironment, DistributedType

    cfg = _load(name)
    kind, processes, machines = EXPECTED[name]
    assert isinstance(cfg, accelerate_config.ClusterConfig)
    assert cfg.compute_environment == ComputeEnvironment.LOCAL_MACHINE
    assert cfg.distributed_type == DistributedType[kind]
    assert (cfg.num_processes, cfg.num_machines) == (processes, machines)
    assert cfg.num_processes % cfg.num_machines == 0, "accelerate starts the same count per machine"
    assert cfg.mixed_precision == "bf16"
    assert cfg.use_cpu is False
    assert cfg.machine_rank == 0
    if machines > 1:
        assert cfg.main_process_ip and cfg.main_process_port, "placeholders to override"


@pytest.mark.parametrize("name", DEEPSPEED)
def test_zero3_settings(name):
    ds = _load(name).deepspeed_config
    assert ds["zero_stage"] == 3
    assert ds["zero3_init_flag"] is True
    assert ds["zero3_save_16bit_model"] is True
    assert ds["offload_optimizer_device"] == ds["offload_param_device"] == "none"
    assert ds["deepspeed_multinode_launcher"] == "standard", "torchrun: no pdsh, no hostfile"
    # left to GRPOConfig through DeepSpeed's "auto"
    assert "gradient_accumulation_steps" not in ds
    assert "gradient_clipping" not in ds


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun_args(name: str, port: int, rank: int | None = None, ip: str | None = None):
    """The arguments ``accelerate launch`` hands to torchrun for this config, computed
    by accelerate's own code (mirrors ``accelerate.commands.launch.launch_command``
    up to the launcher call; the helpers are private, so a change there shows here)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    argv = ["--config_file", str(ACCEL_DIR / f"{name}.yaml"), "--main_process_port", str(port)]
    if rank is not None:
        argv += ["--machine_rank", str(rank), "--main_process_ip", ip or ""]
    argv += ["train.py", "--config", "x.yaml"]
    args, defaults, _ = _validate_launch_command(launch_command_parser().parse_args(argv))
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        cmd, env = prepare_deepspeed_cmd_env(args)
        assert cmd is None, "multi-node DeepSpeed must go through torchrun, not the deepspeed CLI"
    else:
        env = prepare_multi_gpu_env(args)
    return args, env


@pytest.mark.parametrize("name", ["multi_gpu", "zero3"])
def test_single_node_launch_starts_8_processes(name):
    args, env = _torchrun_args(name, _free_port())
    assert args.nproc_per_node == "8"
    assert env["ACCELERATE_MIXED_PRECISION"] == "bf16"


@pytest.mark.parametrize(("name", "rank"), [("zero3_multinode", 0), ("zero3_multinode", 1)])
def test_two_node_launch(name, rank):
    port = _free_port()
    args, env = _torchrun_args(name, port, rank, "10.0.0.1")
    assert (args.nproc_per_node, args.nnodes, args.node_rank) == ("8", "2", rank)
    assert args.rdzv_endpoint == f"10.0.0.1:{port}", "the command line overrides the placeholder"
    assert env["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == "3"
    assert env["ACCELERATE_DEEPSPEED_ZERO3_INIT"] == "true"


@pytest.mark.parametrize("rank", [0, 1, 2])
def test_paper_layout_is_three_launchers_of_four(rank):
    port = _free_port()
    args, env = _torchrun_args("paper_12gpu", port, rank, "10.0.0.1")
    assert (args.nproc_per_node, args.nnodes, args.node_rank) == ("4", "3", rank)
    assert args.rdzv_endpoint == f"10.0.0.1:{port}"
    assert env["ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL"] == "true"


# --- recipes: shared helpers ---------------------------------------------------------

STUB = r"""#!/usr/bin/env bash
name=$(basename "$0")
echo "$name CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-} $*" >> "$STUB_LOG"
case "$name" in
    trl) echo $$ > "$STUB_LOG.server"; exec sleep 30 ;;
    accelerate)
        echo $$ >> "$STUB_LOG.train"
        rank=$(sed -n 's/.*--machine_rank \([0-9]*\).*/\1/p' <<<"$*")
        if [[ -n "$rank" && "$rank" == "${STUB_FAIL_RANK:-}" ]]; then
            # fail once every launcher of the node has started
            for _ in $(seq 100); do
                (($(wc -l <"$STUB_LOG.train") >= ${STUB_LAUNCHERS:-1})) && break
                sleep 0.1
            done
            exit 3
        fi
        exec sleep "${STUB_TRAIN_SECONDS:-0}" ;;
    curl)  # healthy once the local server stub runs, if one is expected
        if [[ -n "${STUB_LOCAL_SERVER:-}" ]]; then
            for _ in $(seq 100); do [[ -s "$STUB_LOG.server" ]] && break; sleep 0.1; done
        fi ;;
    *) exit 0 ;;
esac
"""


@pytest.fixture
def stubs(tmp_path):
    """PATH with recording stand-ins for everything a recipe could launch."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("trl", "accelerate", "curl", "vllm", "python", "torchrun", "deepspeed"):
        stub = bin_dir / name
        stub.write_text(STUB)
        stub.chmod(0o755)
    log = tmp_path / "stub.log"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "STUB_LOG": str(log),
        "LOG_DIR": str(tmp_path / "logs"),
    }
    return env, log


def run(script: Path, *args: str, env: dict, cwd: Path, timeout: float = 60, **extra: str):
    return subprocess.run(
        ["bash", str(script), *args],
        env={**env, **extra},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def commands(stdout: str, marker: str) -> list[list[str]]:
    """The printed command lines containing ``marker``, split into words."""
    lines = [line for line in stdout.splitlines() if not line.startswith("#")]
    return [shlex.split(line.rstrip(" &")) for line in lines if marker in line]


def flag(words: list[str], name: str) -> str:
    return words[words.index(name) + 1]


def gpus(words: list[str]) -> list[str]:
    (value,) = [w.split("=", 1)[1] for w in words if w.startswith("CUDA_VISIBLE_DEVICES=")]
    return value.split(",")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# --- recipes ------------------------------------------------------------------------


@pytest.mark.parametrize("script", sorted(RECIPES.glob("*.sh")), ids=lambda p: p.name)
def test_recipe_is_valid_executable_bash(script):
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    assert os.access(script, os.X_OK)
    assert "set -euo pipefail" in script.read_text()


def test_paper_print_shows_server_and_12_training_processes(stubs, tmp_path):
    env, log = stubs
    out = run(PAPER, "--print", env=env, cwd=tmp_path, NODE_A="10.1.2.3")
    assert out.returncode == 0, out.stderr

    (server,) = commands(out.stdout, "vllm-serve")
    assert server[server.index("trl") + 1] == "vllm-serve"
    assert gpus(server) == ["0", "1", "2", "3"]
    assert flag(server, "--data-parallel-size") == "4"
    assert flag(server, "--tensor-parallel-size") == "1"
    assert flag(server, "--model") == "Qwen/Qwen3-VL-8B-Instruct"
    assert float(flag(server, "--gpu-memory-utilization")) <= 0.95
    assert int(flag(server, "--max-model-len")) >= 8192
    assert "http://10.1.2.3:8000/health" in out.stdout

    launches = commands(out.stdout, "accelerate launch")
    processes, machines = _yaml_ints("paper_12gpu")
    assert len(launches) == machines == 3
    assert sorted(flag(w, "--machine_rank") for w in launches) == ["0", "1", "2"]
    assert sum(len(gpus(w)) for w in launches) == processes == 12
    for words in launches:
        assert len(gpus(words)) == processes // machines
        assert flag(words, "--config_file") == "training/accelerate/paper_12gpu.yaml"
        assert flag(words, "--main_process_ip") == "10.1.2.3"
        assert flag(words, "--config") == "training/configs/kadid_qwen3vl8b.yaml"
        assert words[words.index("--config") - 1] == "training/run_grpo.py"
        assert flag(words, "--use_vllm") == "true"
        assert flag(words, "--vllm_mode") == "server"
        assert flag(words, "--vllm_server_host") == "10.1.2.3"
        assert flag(words, "--model_name_or_path") == flag(server, "--model")
    # rank 0 shares node A with the server, on the other four GPUs
    (rank0,) = [w for w in launches if flag(w, "--machine_rank") == "0"]
    assert not set(gpus(rank0)) & set(gpus(server))
    assert not log.exists(), "--print launched something"


def test_paper_print_per_node(stubs, tmp_path):
    env, log = stubs
    a = run(PAPER, "--print", "node-a", env=env, cwd=tmp_path)
    b = run(PAPER, "--print", "node-b", env=env, cwd=tmp_path)
    assert a.returncode == b.returncode == 0
    assert len(commands(a.stdout, "vllm-serve")) == 1
    ranks_a = [flag(w, "--machine_rank") for w in commands(a.stdout, "accelerate launch")]
    ranks_b = [flag(w, "--machine_rank") for w in commands(b.stdout, "accelerate launch")]
    assert ranks_a == ["0"]
    assert not commands(b.stdout, "vllm-serve")
    assert ranks_b == ["1", "2"]
    assert not log.exists()


def test_paper_extra_arguments_reach_every_launcher(stubs, tmp_path):
    env, _ = stubs
    resume = ["--resume_from_checkpoint", "runs/a b/checkpoint-340"]
    out = run(PAPER, "--print", "--", *resume, env=env, cwd=tmp_path)
    launches = commands(out.stdout, "accelerate launch")
    assert len(launches) == 3
    assert all(flag(w, "--resume_from_checkpoint") == "runs/a b/checkpoint-340" for w in launches)


@pytest.mark.parametrize(
    ("args", "extra"),
    [
        (["--print"], {"VLLM_TP": "2"}),  # DP 4 x TP 2 needs 8 server GPUs
        (["--print"], {"TRAIN_GPUS_A": "4,5"}),  # 10 processes, uneven launchers
        (["--print", "node-c"], {}),
        ([], {}),  # a real run needs a role
    ],
)
def test_paper_rejects_bad_layouts_and_arguments(stubs, tmp_path, args, extra):
    env, log = stubs
    out = run(PAPER, *args, env=env, cwd=tmp_path, **extra)
    assert out.returncode == 2
    assert out.stderr
    assert not log.exists()


def test_paper_node_a_runs_server_then_training_then_stops_server(stubs, tmp_path):
    env, log = stubs
    out = run(PAPER, "node-a", env=env, cwd=tmp_path, NODE_A="10.1.2.3", STUB_LOCAL_SERVER="1")
    assert out.returncode == 0, out.stderr
    calls = {c.split()[0]: c for c in log.read_text().splitlines()}
    assert set(calls) == {"trl", "curl", "accelerate"}
    names = [c.split()[0] for c in log.read_text().splitlines()]
    assert names.index("curl") < names.index("accelerate"), "trained before the health check"
    assert "CUDA_VISIBLE_DEVICES=0,1,2,3 vllm-serve" in calls["trl"]
    assert "http://10.1.2.3:8000/health" in calls["curl"]
    assert "CUDA_VISIBLE_DEVICES=4,5,6,7 launch" in calls["accelerate"]
    server_pid = int(Path(f"{log}.server").read_text())
    deadline = time.monotonic() + 5
    while alive(server_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(server_pid), "the server outlived the recipe"


def test_paper_node_b_stops_all_launchers_when_one_fails(stubs, tmp_path):
    env, log = stubs
    started = time.monotonic()
    out = run(
        PAPER,
        "node-b",
        env=env,
        cwd=tmp_path,
        STUB_FAIL_RANK="2",
        STUB_LAUNCHERS="2",
        STUB_TRAIN_SECONDS="30",
    )
    assert out.returncode != 0
    assert time.monotonic() - started < 20, "waited for the healthy launcher instead of stopping it"
    assert "failed" in out.stderr
    pids = [int(p) for p in Path(f"{log}.train").read_text().split()]
    assert len(pids) == 2
    deadline = time.monotonic() + 5
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(p) for p in pids)
    for pid in pids:  # belt and braces: never leave a stub behind
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_single_gpu_print_colocates_vllm(stubs, tmp_path):
    env, log = stubs
    out = run(SINGLE, "--print", env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    (words,) = commands(out.stdout, "accelerate launch")
    assert flag(words, "--config_file") == "training/accelerate/single_gpu.yaml"
    assert flag(words, "--config") == "training/configs/kadid_qwen3vl8b.yaml"
    assert gpus(words) == ["0"]
    assert flag(words, "--use_vllm") == "true"
    assert flag(words, "--vllm_mode") == "colocate"
    assert flag(words, "--vllm_gpu_memory_utilization") == "0.3"
    per_device = int(flag(words, "--per_device_train_batch_size"))
    accumulation = int(flag(words, "--gradient_accumulation_steps"))
    assert per_device * accumulation % 4 == 0, "whole groups of 4 generations per process"
    assert not log.exists()


def test_single_gpu_print_without_vllm(stubs, tmp_path):
    env, _ = stubs
    out = run(SINGLE, "--print", env=env, cwd=tmp_path, GEN="transformers", LORA="false")
    (words,) = commands(out.stdout, "accelerate launch")
    assert flag(words, "--use_vllm") == "false"
    assert "--vllm_mode" not in words
    assert "--use_peft" not in words
    assert run(SINGLE, "--print", env=env, cwd=tmp_path, GEN="sglang").returncode == 2


# --- every path a recipe names -------------------------------------------------------

PATH_RE = re.compile(r"training/(configs|accelerate|recipes)/[\w.-]+\.(?:yaml|sh)")


DOCS = [*sorted(RECIPES.glob("*.sh")), RECIPES / "README.md", *sorted(ACCEL_DIR.glob("*.yaml"))]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_referenced_paths_exist(doc):
    for match in PATH_RE.finditer(doc.read_text(encoding="utf-8")):
        path = REPO / match.group(0)
        if match.group(1) == "configs":
            # training configs are written separately: they may not exist yet
            assert path.exists() or path.name in SHIPPED_TRAINING_CONFIGS, match.group(0)
        else:
            assert path.exists(), match.group(0)
