#!/usr/bin/env python
"""Build a tiny, randomly initialised Qwen3-VL checkpoint, fully offline.

The checkpoint has the real Qwen3-VL architecture, file layout, tokenizer
special tokens, chat template and processor configs, but only ~0.5 M random
parameters, so that the real loading/serving code (``from_pretrained``, a vLLM
OpenAI-compatible server) can be exercised on a CPU without downloading
weights. Its outputs are meaningless; structure (chat template, image
placeholders, tool calls, constrained decoding) is what it is for.

Run it with an interpreter that has torch, transformers (5.x) and tokenizers,
e.g. the vLLM venv made by ``scripts/setup_vllm_cpu.sh``::

    .venv-vllm/bin/python scripts/build_tiny_qwen3vl.py [--out DIR] [--force]

The build is deterministic (fixed seeds). A ``tiny_build.json`` marker holds
the recipe version; an output dir that already holds a complete build of the
same version is left as it is. The output dir is printed on the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

RECIPE_VERSION = 4
MARKER_NAME = "tiny_build.json"
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / ".cache" / "tiny-qwen3vl"
SEED = 1234

# Files a complete build contains (besides the marker).
REQUIRED_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
)

# Qwen2/2.5/3-VL special tokens, in Qwen's order.
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
# Added but NOT special: they must survive skip_special_tokens so that the
# hermes tool parser and reasoning parsers can see them.
PLAIN_ADDED_TOKENS = [
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
]

# Same pre-tokenisation as Qwen2Tokenizer (transformers re-creates it on load).
PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

VOCAB_SIZE = 1536

IMAGE_MIN_PIXELS = 64 * 64
IMAGE_MAX_PIXELS = 256 * 256

# Qwen3-style chat template: system/user/assistant/tool roles, list contents
# with text/image/video parts, tools in the system prompt, assistant tool
# calls as <tool_call>{json}</tool_call>, tool results as <tool_response>.
CHAT_TEMPLATE = r"""{%- macro render_content(content) -%}
{%- if content is none -%}
{%- elif content is string -%}
{{- content -}}
{%- else -%}
{%- for part in content -%}
{%- if part is string -%}
{{- part -}}
{%- elif part.type == 'image' or part.type == 'image_url' or 'image' in part or 'image_url' in part -%}
{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}
{%- elif part.type == 'video' or 'video' in part -%}
{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}
{%- elif 'text' in part -%}
{{- part.text -}}
{%- endif -%}
{%- endfor -%}
{%- endif -%}
{%- endmacro -%}
{%- if tools %}
{{- '<|im_start|>system\n' }}
{%- if messages[0].role == 'system' %}
{{- render_content(messages[0].content) + '\n\n' }}
{%- endif %}
{{- "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
{%- for tool in tools %}
{{- "\n" }}
{{- tool | tojson }}
{%- endfor %}
{{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- elif messages and messages[0].role == 'system' %}
{{- '<|im_start|>system\n' + render_content(messages[0].content) + '<|im_end|>\n' }}
{%- endif %}
{%- for message in messages %}
{%- if message.role == 'system' %}
{%- if not loop.first %}
{{- '<|im_start|>system\n' + render_content(message.content) + '<|im_end|>\n' }}
{%- endif %}
{%- elif message.role == 'user' %}
{{- '<|im_start|>user\n' + render_content(message.content) + '<|im_end|>\n' }}
{%- elif message.role == 'assistant' %}
{{- '<|im_start|>assistant\n' + render_content(message.content) }}
{%- if message.tool_calls %}
{%- for tool_call in message.tool_calls %}
{%- if (loop.first and message.content) or (not loop.first) %}
{{- '\n' }}
{%- endif %}
{%- if tool_call.function %}
{%- set tool_call = tool_call.function %}
{%- endif %}
{{- '<tool_call>\n{"name": "' + tool_call.name + '", "arguments": ' }}
{%- if tool_call.arguments is string %}
{{- tool_call.arguments }}
{%- else %}
{{- tool_call.arguments | tojson }}
{%- endif %}
{{- '}\n</tool_call>' }}
{%- endfor %}
{%- endif %}
{{- '<|im_end|>\n' }}
{%- elif message.role == 'tool' %}
{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}
{{- '<|im_start|>user' }}
{%- endif %}
{{- '\n<tool_response>\n' + render_content(message.content) + '\n</tool_response>' }}
{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}
{{- '<|im_end|>\n' }}
{%- endif %}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
{{- '<|im_start|>assistant\n' }}
{%- endif %}
"""

IQA_WORDS = [
    "image",
    "quality",
    "assessment",
    "score",
    "rating",
    "overall",
    "sharpness",
    "sharp",
    "blur",
    "blurry",
    "blurred",
    "noise",
    "noisy",
    "grain",
    "artifacts",
    "artifact",
    "compression",
    "jpeg",
    "blocking",
    "ringing",
    "banding",
    "exposure",
    "overexposed",
    "underexposed",
    "brightness",
    "dark",
    "bright",
    "contrast",
    "color",
    "colour",
    "saturation",
    "hue",
    "white",
    "balance",
    "dynamic",
    "range",
    "highlights",
    "shadows",
    "clipping",
    "detail",
    "details",
    "texture",
    "edges",
    "focus",
    "defocus",
    "motion",
    "shake",
    "aliasing",
    "moire",
    "chromatic",
    "aberration",
    "vignetting",
    "distortion",
    "haze",
    "fog",
    "low",
    "light",
    "lighting",
    "illumination",
    "excellent",
    "good",
    "fair",
    "poor",
    "bad",
    "very",
    "slightly",
    "moderately",
    "severely",
    "strongly",
    "mild",
    "high",
    "medium",
    "low",
    "quality",
    "level",
    "degradation",
    "distortion",
    "type",
    "region",
    "crop",
    "zoom",
    "view",
    "tool",
    "inspect",
    "observe",
    "reasoning",
    "answer",
    "final",
    "reason",
    "evidence",
    "confidence",
    "the",
    "a",
    "an",
    "of",
    "in",
    "on",
    "and",
    "or",
    "with",
    "is",
    "are",
    "was",
    "be",
    "this",
    "that",
    "these",
    "it",
    "its",
    "not",
    "no",
    "yes",
    "image",
    "photo",
    "picture",
    "scene",
    "subject",
    "background",
    "foreground",
    "object",
    "face",
    "sky",
    "left",
    "right",
    "top",
    "bottom",
    "center",
    "upper",
    "lower",
    "corner",
    "area",
    "patch",
    "whole",
    "global",
    "local",
    "visible",
    "clearly",
    "appears",
    "seems",
    "shows",
    "looks",
    "overall",
    "mostly",
    "some",
    "many",
    "few",
    "natural",
    "realistic",
    "aesthetic",
    "composition",
    "framing",
    "resolution",
    "pixels",
    "upscaled",
    "denoise",
    "sharpen",
    "enhance",
    "restore",
    "camera",
    "smartphone",
    "sensor",
    "lens",
    "iso",
    "shutter",
]

JSON_KEYS = [
    "score",
    "reason",
    "reasoning",
    "quality",
    "distortion",
    "distortions",
    "type",
    "types",
    "severity",
    "region",
    "x",
    "y",
    "w",
    "h",
    "x0",
    "y0",
    "x1",
    "y1",
    "box",
    "bbox",
    "name",
    "arguments",
    "tool",
    "tools",
    "call",
    "calls",
    "level",
    "label",
    "answer",
    "confidence",
    "evidence",
    "observation",
    "summary",
    "zoom",
    "scale",
    "factor",
    "crop",
    "view",
    "id",
    "role",
    "content",
    "text",
    "true",
    "false",
    "null",
]


def _corpus(rng: random.Random) -> list[str]:
    """Generated training text for the BPE: IQA prose, JSON, numbers."""
    words = IQA_WORDS + JSON_KEYS
    lines: list[str] = []
    for _ in range(4000):
        n = rng.randint(4, 18)
        sent = " ".join(rng.choice(words) for _ in range(n))
        if rng.random() < 0.5:
            sent = sent.capitalize()
        lines.append(sent + rng.choice([".", ".", ",", ";", ":", "!", "?"]))
    for _ in range(3000):
        obj = {}
        for _ in range(rng.randint(1, 4)):
            key = rng.choice(JSON_KEYS)
            kind = rng.random()
            if kind < 0.3:
                obj[key] = round(rng.uniform(0, 100), rng.randint(0, 3))
            elif kind < 0.5:
                obj[key] = rng.randint(0, 2000)
            elif kind < 0.8:
                obj[key] = " ".join(rng.choice(IQA_WORDS) for _ in range(rng.randint(1, 6)))
            elif kind < 0.9:
                obj[key] = [rng.randint(0, 512) for _ in range(4)]
            else:
                obj[key] = rng.choice([True, False, None])
        indent = rng.choice([None, None, 2])
        lines.append(json.dumps(obj, indent=indent))
    for _ in range(1000):
        lines.append(" ".join(str(rng.randint(0, 10 ** rng.randint(1, 6))) for _ in range(8)))
        lines.append(f"{rng.uniform(0, 5):.2f} {rng.uniform(0, 1):.3f} {rng.randint(1, 100)}%")
    lines.append("0123456789 +-*/=<>()[]{}\"':,.;!?_#@$&|\\^`~")
    lines.append("ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghijklmnopqrstuvwxyz")
    return lines


def build_tokenizer(workdir: Path):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import AddedToken, Qwen2Tokenizer

    rng = random.Random(SEED)
    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE - len(SPECIAL_TOKENS) - len(PLAIN_ADDED_TOKENS),
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(_corpus(rng), trainer=trainer)

    raw = json.loads(tok.to_str())
    vocab: dict[str, int] = raw["model"]["vocab"]
    merges = [
        tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in raw["model"]["merges"]
    ]

    hf = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        errors="replace",
        add_prefix_space=False,
        model_max_length=32768,
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
    )
    hf.add_tokens(
        [AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS], special_tokens=True
    )
    hf.add_tokens([AddedToken(t, special=False, normalized=False) for t in PLAIN_ADDED_TOKENS])
    # As in Qwen3-VL instruct checkpoints: generation ends at <|im_end|>.
    hf.eos_token = "<|im_end|>"
    hf.chat_template = CHAT_TEMPLATE
    # Attribute names the Qwen3-VL processor looks up.
    hf.image_token = "<|image_pad|>"
    hf.video_token = "<|video_pad|>"
    hf.vision_bos_token = "<|vision_start|>"
    hf.vision_eos_token = "<|vision_end|>"
    return hf


# Per-token output biases (logit units; the random logits of ordinary tokens
# spread over roughly +-0.3).
WHITESPACE_BIAS = -4.0  # whitespace-only tokens: never preferred
CLOSER_BIAS = 0.5  # tokens made only of '"' ',' '}' ']': JSON values end soon
END_OF_TURN_BIAS = 0.6  # <|im_end|>: free text usually ends within ~60 tokens
_CLOSER_CHARS = set('",}]')


def _token_groups(tokenizer) -> tuple[list[int], list[int]]:
    whitespace, closers = [], []
    for i in range(len(tokenizer)):
        s = tokenizer.decode([i], skip_special_tokens=False)
        if not s:
            continue
        if not s.strip():
            whitespace.append(i)
        elif set(s) <= _CLOSER_CHARS:
            closers.append(i)
    return whitespace, closers


def build_model(tokenizer, out: Path) -> dict:
    import torch
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    def tid(t: str) -> int:
        i = tokenizer.convert_tokens_to_ids(t)
        assert isinstance(i, int) and i >= 0, t
        return i

    vocab_size = len(tokenizer)
    head_dim = 32
    text_config = {
        "vocab_size": vocab_size,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6,
        "attention_bias": False,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 5_000_000.0,
            "mrope_section": [8, 4, 4],  # sums to head_dim / 2
            "mrope_interleaved": True,
        },
        "bos_token_id": None,
        "eos_token_id": tid("<|im_end|>"),
        "pad_token_id": tid("<|endoftext|>"),
        "dtype": "float32",
    }
    vision_config = {
        "depth": 2,
        "hidden_size": 64,
        "hidden_act": "gelu_pytorch_tanh",
        "intermediate_size": 128,
        "num_heads": 2,
        "in_channels": 3,
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "out_hidden_size": 64,
        "num_position_embeddings": 256,  # 16 x 16 grid = 256 px at patch 16
        "deepstack_visual_indexes": [1],
    }
    config = Qwen3VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=tid("<|image_pad|>"),
        video_token_id=tid("<|video_pad|>"),
        vision_start_token_id=tid("<|vision_start|>"),
        vision_end_token_id=tid("<|vision_end|>"),
        tie_word_embeddings=False,
    )
    config.eos_token_id = tid("<|im_end|>")
    config.pad_token_id = tid("<|endoftext|>")

    torch.manual_seed(SEED)
    model = Qwen3VLForConditionalGeneration(config).to(torch.float32).eval()

    # A random model greedily prefers a few tokens everywhere, often whitespace,
    # which also stalls JSON-constrained decoding (whitespace is always legal
    # there). Reserve one hidden coordinate of the residual stream: every token
    # embedding writes a constant there and no layer writes to it, so after the
    # final RMSNorm it stays positive; the lm_head column of that coordinate is
    # then a per-token output bias: negative for whitespace-only tokens, and
    # slightly positive for JSON closers and <|im_end|>, so that constrained
    # numbers / strings and free text terminate instead of running to
    # max_tokens (e.g. "8888..." for an unbounded number).
    k = config.text_config.hidden_size - 1
    ws_ids, closer_ids = _token_groups(tokenizer)
    lm = model.language_model if hasattr(model, "language_model") else model.model.language_model
    with torch.no_grad():
        emb = lm.embed_tokens.weight
        # The constant dominates the RMS, so the coordinate stays ~8 after the
        # final norm whatever the context (images included, which enlarge the
        # other coordinates); the other norm weights are raised to keep the
        # usual spread of the random logits.
        emb[:, k] = 1.0
        for layer in lm.layers:
            layer.self_attn.o_proj.weight[k, :] = 0.0
            layer.mlp.down_proj.weight[k, :] = 0.0
            # Keep the reserved coordinate out of attention / MLP inputs, too.
            layer.input_layernorm.weight[k] = 0.0
            layer.post_attention_layernorm.weight[k] = 0.0
        lm.norm.weight[:k] *= 4.0
        lm.norm.weight[k] = 1.0
        head = model.lm_head.weight
        head[:, k] = 0.0
        # Value of the reserved coordinate after the final norm, on sample text.
        sample = tokenizer(
            '<|im_start|>user\nRate the sharpness.<|im_end|>\n<|im_start|>assistant\n{"score": 3',
            return_tensors="pt",
        ).input_ids
        scale = float(lm(input_ids=sample).last_hidden_state[0, :, k].mean())
        head[ws_ids, k] = WHITESPACE_BIAS / scale
        head[closer_ids, k] = CLOSER_BIAS / scale
        head[tid("<|im_end|>"), k] = END_OF_TURN_BIAS / scale
    model.generation_config.eos_token_id = [tid("<|im_end|>"), tid("<|endoftext|>")]
    model.generation_config.pad_token_id = tid("<|endoftext|>")
    model.generation_config.bos_token_id = None
    model.save_pretrained(out, safe_serialization=True)
    n_params = sum(p.numel() for p in model.parameters())
    return {
        "parameters": n_params,
        "reserved_dim": k,
        "reserved_value": round(scale, 4),
        "bias": {
            "whitespace": [WHITESPACE_BIAS, len(ws_ids)],
            "json_closers": [CLOSER_BIAS, len(closer_ids)],
            "im_end": END_OF_TURN_BIAS,
        },
    }


def build_processor(tokenizer, out: Path) -> None:
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

    common = {
        "patch_size": 16,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
    }
    image_processor = Qwen2VLImageProcessor(
        size={"shortest_edge": IMAGE_MIN_PIXELS, "longest_edge": IMAGE_MAX_PIXELS}, **common
    )
    video_processor = Qwen3VLVideoProcessor(
        size={"shortest_edge": IMAGE_MIN_PIXELS, "longest_edge": IMAGE_MAX_PIXELS * 4},
        fps=2,
        min_frames=2,
        max_frames=8,
        **common,
    )
    processor = Qwen3VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(out)
    # Standalone copies for loaders that read the per-component files.
    image_processor.save_pretrained(out)
    video_processor.save_pretrained(out)


def is_complete(out: Path) -> bool:
    marker = out / MARKER_NAME
    if not marker.is_file():
        return False
    try:
        meta = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return meta.get("recipe_version") == RECIPE_VERSION and all(
        (out / f).is_file() for f in REQUIRED_FILES
    )


def build(out: Path, force: bool = False) -> Path:
    out = out.resolve()
    if not force and is_complete(out):
        return out
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    random.seed(SEED)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".tmp-", dir=out.parent))
    try:
        tokenizer = build_tokenizer(tmp)
        tokenizer.save_pretrained(tmp)
        info = build_model(tokenizer, tmp)
        build_processor(tokenizer, tmp)
        (tmp / "chat_template.jinja").write_text(CHAT_TEMPLATE)
        import transformers

        meta = {
            "recipe_version": RECIPE_VERSION,
            "architecture": "Qwen3VLForConditionalGeneration",
            "seed": SEED,
            "vocab_size": len(tokenizer),
            "transformers": transformers.__version__,
            **info,
        }
        (tmp / MARKER_NAME).write_text(json.dumps(meta, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.chmod(0o755)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output dir (default {DEFAULT_OUT})"
    )
    ap.add_argument("--force", action="store_true", help="rebuild even if a complete build exists")
    args = ap.parse_args(argv)
    out = build(args.out, force=args.force)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
