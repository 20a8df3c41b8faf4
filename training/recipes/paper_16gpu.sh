#!/usr/bin/env bash
# Tool-IQA's paper setup (sec. 4.1): GRPO on 16 GPUs, 4 serving vLLM for
# on-policy sampling and 12 updating parameters, on two 8-GPU nodes:
#
#   node A  GPUs 0-3  trl vllm-serve (data parallel 4 x tensor parallel 1)
#           GPUs 4-7  accelerate launcher machine_rank 0 -> training ranks 0-3
#   node B  GPUs 0-3  accelerate launcher machine_rank 1 -> training ranks 4-7
#           GPUs 4-7  accelerate launcher machine_rank 2 -> training ranks 8-11
#
# accelerate gives every launcher the same number of processes
# (num_processes / num_machines), so the 4 + 8 training GPUs are three
# launchers of 4 (training/accelerate/paper_12gpu.yaml). Rank 0 talks to the
# server and joins its weight-sync group, so it sits on node A with it.
#
# Run `node-a` on node A and `node-b` on node B, in either order; each waits
# for the server's /health before training. `--print` only shows the commands.
# Settings below can be overridden from the environment (NODE_A=10.0.0.1 ...).
# Arguments after `--` go to every training process (they must all agree),
# e.g. `-- --resume_from_checkpoint runs/tool-iqa-kadid/checkpoint-340`.
set -euo pipefail

USAGE="usage: $0 [--print] {node-a|node-b|server} [-- RUN_GRPO_ARGS...]
       $0 --print            (all nodes' commands)"

# --- what to train ---
MODEL=${MODEL:-Qwen/Qwen3-VL-8B-Instruct}           # served by vLLM AND trained (must match)
CONFIG=${CONFIG:-training/configs/kadid_qwen3vl8b.yaml}
ACCEL_CONFIG=${ACCEL_CONFIG:-training/accelerate/paper_12gpu.yaml}

# --- where: node addresses as the other node sees them ---
NODE_A=${NODE_A:-node-a}         # hosts the vLLM server and training rank 0
NODE_B=${NODE_B:-node-b}         # only named in the printout

# --- ports (all on node A) ---
VLLM_PORT=${VLLM_PORT:-8000}     # vLLM HTTP API (/health, /v1/...)
MAIN_PORT=${MAIN_PORT:-29500}    # torch.distributed rendezvous of the 12 training ranks
GROUP_PORT=${GROUP_PORT:-51216}  # NCCL weight-sync group: training rank 0 + vLLM workers

# --- GPUs ---
VLLM_GPUS=${VLLM_GPUS:-0,1,2,3}           # node A
TRAIN_GPUS_A=${TRAIN_GPUS_A:-4,5,6,7}     # node A, machine_rank 0
TRAIN_GPUS_B1=${TRAIN_GPUS_B1:-0,1,2,3}   # node B, machine_rank 1
TRAIN_GPUS_B2=${TRAIN_GPUS_B2:-4,5,6,7}   # node B, machine_rank 2

# --- vLLM server ---
# DP 4 x TP 1: four independent copies of the 8B model, the most throughput.
# TRL 1.16 documents `--data-parallel-size > 1` as unsupported for dense models
# (vLLM >= 0.14); if the server refuses it, run VLLM_DP=1 VLLM_TP=4 instead.
VLLM_DP=${VLLM_DP:-4}                 # data-parallel replicas
VLLM_TP=${VLLM_TP:-1}                 # tensor-parallel size of each replica
VLLM_MEM=${VLLM_MEM:-0.90}            # --gpu-memory-utilization on the server GPUs
MAX_MODEL_LEN=${MAX_MODEL_LEN:-16384} # prompt + image tokens + all turns of one trajectory
HEALTH_TIMEOUT=${HEALTH_TIMEOUT:-1800} # seconds to wait for /health
LOG_DIR=${LOG_DIR:-runs/logs}

PRINT=0
ROLE=""
EXTRA=()
while (($#)); do
    case "$1" in
        --print) PRINT=1 ;;
        -h | --help) echo "$USAGE"; exit 0 ;;
        node-a | node-b | server) ROLE="$1" ;;
        --) shift; EXTRA=("$@"); break ;;
        *) echo "unknown argument: $1" >&2; echo "$USAGE" >&2; exit 2 ;;
    esac
    shift
done
if [[ -z "$ROLE" ]]; then
    if ((PRINT)); then ROLE=all; else echo "$USAGE" >&2; exit 2; fi
fi

cd "$(dirname "${BASH_SOURCE[0]}")/../.."   # repository root: the paths below are relative to it

count() { local IFS=,; set -- $1; echo $#; }
if (($(count "$VLLM_GPUS") != VLLM_DP * VLLM_TP)); then
    echo "VLLM_GPUS=$VLLM_GPUS has $(count "$VLLM_GPUS") GPUs, but VLLM_DP x VLLM_TP = $((VLLM_DP * VLLM_TP))" >&2
    exit 2
fi
TRAIN_PROCS=$(($(count "$TRAIN_GPUS_A") + $(count "$TRAIN_GPUS_B1") + $(count "$TRAIN_GPUS_B2")))
yaml_int() { awk -v k="$1:" '$1 == k { print $2; exit }' "$ACCEL_CONFIG"; }
if [[ "$(yaml_int num_processes)" != "$TRAIN_PROCS" || "$(yaml_int num_machines)" != 3 ]]; then
    echo "$ACCEL_CONFIG must say num_processes: $TRAIN_PROCS and num_machines: 3 (one per launcher)" >&2
    exit 2
fi
for gpus in "$TRAIN_GPUS_A" "$TRAIN_GPUS_B1" "$TRAIN_GPUS_B2"; do
    if (($(count "$gpus") * 3 != TRAIN_PROCS)); then
        echo "every launcher needs the same number of GPUs (accelerate starts num_processes / num_machines)" >&2
        exit 2
    fi
done
if ((!PRINT)) && ! command -v curl >/dev/null; then
    echo "curl is needed to wait for the vLLM server" >&2
    exit 2
fi
HEALTH_URL="http://${NODE_A}:${VLLM_PORT}/health"

# A command as one copy-pasteable line (plain words left unquoted).
show() {
    local out=() a
    for a in "$@"; do
        if [[ "$a" =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then out+=("$a"); else out+=("$(printf '%q' "$a")"); fi
    done
    echo "${out[*]}"
}

# Each *_cmd function fills the array CMD.
server_cmd() {
    CMD=(
        env "CUDA_VISIBLE_DEVICES=$VLLM_GPUS"
        trl vllm-serve --model "$MODEL"
        --tensor-parallel-size "$VLLM_TP" --data-parallel-size "$VLLM_DP"
        --host 0.0.0.0 --port "$VLLM_PORT"
        --gpu-memory-utilization "$VLLM_MEM" --max-model-len "$MAX_MODEL_LEN"
    )
}

train_cmd() {   # MACHINE_RANK GPUS
    CMD=(
        env "CUDA_VISIBLE_DEVICES=$2"
        accelerate launch --config_file "$ACCEL_CONFIG"
        --machine_rank "$1" --main_process_ip "$NODE_A" --main_process_port "$MAIN_PORT"
        training/run_grpo.py --config "$CONFIG" --model_name_or_path "$MODEL"
        --use_vllm true --vllm_mode server
        --vllm_server_host "$NODE_A" --vllm_server_port "$VLLM_PORT" --vllm_group_port "$GROUP_PORT"
        ${EXTRA[@]+"${EXTRA[@]}"}
    )
}

SERVER_PID=""
TRAIN_PIDS=()
cleanup() {   # stop what this script started: each job is its own process group
    local pid
    for pid in ${TRAIN_PIDS[@]+"${TRAIN_PIDS[@]}"} $SERVER_PID; do
        kill -TERM -- "-$pid" 2>/dev/null || true
    done
}
if ((!PRINT)); then set -m; fi   # job control: every background job gets its own process group
trap cleanup EXIT
trap 'exit 130' INT TERM

start_server() {   # in the background; stopped when this script exits
    server_cmd
    if ((PRINT)); then
        echo "# node A ($NODE_A): vLLM server on GPUs $VLLM_GPUS (data parallel $VLLM_DP x tensor parallel $VLLM_TP)"
        echo "$(show "${CMD[@]}") > $LOG_DIR/vllm_server.log 2>&1 &"
        return 0
    fi
    mkdir -p "$LOG_DIR"
    "${CMD[@]}" >"$LOG_DIR/vllm_server.log" 2>&1 &
    SERVER_PID=$!
    echo "vLLM server starting (pid $SERVER_PID, log $LOG_DIR/vllm_server.log)"
}

wait_for_server() {
    if ((PRINT)); then
        echo "# wait (up to ${HEALTH_TIMEOUT}s) until the server answers"
        echo "until curl -fsS $HEALTH_URL >/dev/null; do sleep 10; done"
        return 0
    fi
    local waited=0
    until curl -fsS "$HEALTH_URL" >/dev/null 2>&1; do
        if [[ -n "$SERVER_PID" ]] && ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "the vLLM server exited; see $LOG_DIR/vllm_server.log" >&2
            exit 1
        fi
        if ((waited >= HEALTH_TIMEOUT)); then
            echo "no answer from $HEALTH_URL after ${HEALTH_TIMEOUT}s" >&2
            exit 1
        fi
        sleep 10
        waited=$((waited + 10))
    done
    echo "vLLM server is up at $HEALTH_URL"
}

# launch_training RANK:GPUS ...: this node's launchers, in parallel. Stops them
# all as soon as one fails (the others would hang in NCCL until its timeout).
launch_training() {
    local spec rank gpus pid alive
    for spec in "$@"; do
        rank=${spec%%:*}
        gpus=${spec#*:}
        train_cmd "$rank" "$gpus"
        if ((PRINT)); then
            echo "# training: machine_rank $rank on GPUs $gpus ($(count "$gpus") of the $TRAIN_PROCS processes)"
            if (($# > 1)); then echo "$(show "${CMD[@]}") &"; else show "${CMD[@]}"; fi
        else
            "${CMD[@]}" &
            TRAIN_PIDS+=($!)
        fi
    done
    if ((PRINT)); then
        if (($# > 1)); then echo "wait"; fi
        return 0
    fi
    while :; do
        alive=0
        for pid in "${TRAIN_PIDS[@]}"; do
            if kill -0 "$pid" 2>/dev/null; then alive=1; fi
        done
        if ((!alive)); then break; fi
        wait -n || { echo "a launcher or the vLLM server failed; stopping" >&2; exit 1; }
    done
}

node_a() {
    if ((PRINT)); then echo "### on node A ($NODE_A)"; fi
    start_server
    wait_for_server
    launch_training "0:$TRAIN_GPUS_A"
}

node_b() {
    if ((PRINT)); then echo "### on node B ($NODE_B)"; fi
    wait_for_server
    launch_training "1:$TRAIN_GPUS_B1" "2:$TRAIN_GPUS_B2"
}

if ((PRINT)); then
    echo "# model $MODEL, config $CONFIG, accelerate config $ACCEL_CONFIG"
    echo "# vLLM: $(count "$VLLM_GPUS") GPUs on node A; training: $TRAIN_PROCS processes in 3 launchers"
fi
case "$ROLE" in
    server)
        server_cmd
        if ((PRINT)); then show "${CMD[@]}"; exit 0; fi
        trap - EXIT
        exec "${CMD[@]}"
        ;;
    node-a) node_a ;;
    node-b) node_b ;;
    all) node_a; node_b ;;
esac
