#!/usr/bin/env bash
# GRPO on ONE GPU: the policy trains and generates on the same device.
#
#   GEN=vllm          vLLM colocated in the training process (vllm_mode colocate),
#                     holding VLLM_MEM of the GPU for its weights and KV cache
#   GEN=transformers  model.generate, no vLLM (slow, no extra memory)
#
# Full fine-tuning of the 8B model needs ~16 bytes per parameter (~141 GB) and
# does not fit one GPU, so LORA=true (default) trains LoRA adapters instead: an
# adaptation, not the paper's setup (training/recipes/paper_16gpu.sh is). Per
# device 4 trajectories x 3 accumulation steps keeps the paper's 12 trajectories
# (3 images x 4 generations) per optimizer step with less activation memory.
#
# `--print` only shows the command. Settings below can be overridden from the
# environment; arguments after `--` go to training/run_grpo.py.
set -euo pipefail

USAGE="usage: $0 [--print] [-- RUN_GRPO_ARGS...]"

MODEL=${MODEL:-Qwen/Qwen3-VL-8B-Instruct}
CONFIG=${CONFIG:-training/configs/kadid_qwen3vl8b.yaml}
ACCEL_CONFIG=${ACCEL_CONFIG:-training/accelerate/single_gpu.yaml}
GPU=${GPU:-0}                          # CUDA_VISIBLE_DEVICES
GEN=${GEN:-vllm}                       # vllm | transformers
VLLM_MEM=${VLLM_MEM:-0.3}              # share of the GPU for colocated vLLM
MAX_MODEL_LEN=${MAX_MODEL_LEN:-16384}  # vLLM context: prompt + images + every turn
LORA=${LORA:-true}                     # true | false (false: full fine-tuning)
LORA_R=${LORA_R:-64}
PER_DEVICE=${PER_DEVICE:-4}            # trajectories per forward/backward
GRAD_ACCUM=${GRAD_ACCUM:-3}            # = steps per generation: PER_DEVICE x GRAD_ACCUM per step

PRINT=0
EXTRA=()
while (($#)); do
    case "$1" in
        --print) PRINT=1 ;;
        -h | --help) echo "$USAGE"; exit 0 ;;
        --) shift; EXTRA=("$@"); break ;;
        *) echo "unknown argument: $1" >&2; echo "$USAGE" >&2; exit 2 ;;
    esac
    shift
done

cd "$(dirname "${BASH_SOURCE[0]}")/../.."   # repository root: the paths below are relative to it

CMD=(
    env "CUDA_VISIBLE_DEVICES=$GPU"
    accelerate launch --config_file "$ACCEL_CONFIG"
    training/run_grpo.py --config "$CONFIG" --model_name_or_path "$MODEL"
    --per_device_train_batch_size "$PER_DEVICE" --gradient_accumulation_steps "$GRAD_ACCUM"
)
case "$GEN" in
    vllm)
        CMD+=(--use_vllm true --vllm_mode colocate
            --vllm_gpu_memory_utilization "$VLLM_MEM" --vllm_max_model_length "$MAX_MODEL_LEN")
        ;;
    transformers) CMD+=(--use_vllm false) ;;
    *) echo "GEN must be vllm or transformers, not '$GEN'" >&2; exit 2 ;;
esac
case "$LORA" in
    true) CMD+=(--use_peft true --lora_r "$LORA_R" --lora_alpha $((2 * LORA_R)) --lora_target_modules all-linear) ;;
    false) ;;
    *) echo "LORA must be true or false, not '$LORA'" >&2; exit 2 ;;
esac
CMD+=(${EXTRA[@]+"${EXTRA[@]}"})

if ((PRINT)); then
    echo "# one GPU ($GPU): generation $GEN, LoRA $LORA, $PER_DEVICE x $GRAD_ACCUM trajectories per step"
    out=()
    for a in "${CMD[@]}"; do
        if [[ "$a" =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then out+=("$a"); else out+=("$(printf '%q' "$a")"); fi
    done
    echo "${out[*]}"
    exit 0
fi
exec "${CMD[@]}"
