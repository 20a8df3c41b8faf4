"""The ``vllm serve`` command for Qwen3-VL-8B-Instruct or the released Tool-IQA-8B.

The flags the agent relies on: hermes tool-call parsing with automatic tool
choice (Qwen3 writes ``<tool_call>{json}</tool_call>``), enough images per
prompt for the original plus every tool view (and a repair turn), the same
pixel budget as the graph, and prefix caching (every turn of a trajectory
re-sends the same image-bearing prefix).
"""

from __future__ import annotations

import importlib.util
import json
import shlex
import shutil
import sys
from dataclasses import dataclass, field

from tooliqa.graph.context import DEFAULT_MAX_PIXELS

__all__ = ["PRESETS", "ServeOptions", "client_command", "serve_command"]

#: Known checkpoints: the hub id (``--model`` overrides it with a local directory or another
#: id), the name the server gives it, and the prompt style the client should use.
#:
#: Tool-IQA-8B (``guanq/Tool-IQA-8B``, the released model of arXiv 2606.16082) is a
#: Qwen3-VL-8B-Instruct fine-tune, served with the same flags: hermes parsing of the
#: ``<tool_call>`` JSON it was trained to write, four images per prompt (the original, two
#: tool views, one spare), the graph's pixel budget. Its model card lists six rubric
#: attributes (colour among them), but the prompts it was trained with (Appendix A) ask for
#: five lines, colour folded into "Exposure & Color"; so its preset uses the ``paper`` prompt
#: style, not ``extended`` (which adds a sixth, colour line the model never learned).
PRESETS: dict[str, dict[str, str]] = {
    "qwen3-vl-8b": {
        "model": "Qwen/Qwen3-VL-8B-Instruct",
        "served_name": "qwen3-vl-8b",
        "prompt_style": "paper",
    },
    "tool-iqa-8b": {
        "model": "guanq/Tool-IQA-8B",
        "served_name": "tool-iqa-8b",
        "prompt_style": "paper",
    },
}


@dataclass
class ServeOptions:
    """Options for the server; the defaults suit one 80 GB GPU and the paper's 2 tool rounds."""

    model: str
    served_name: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    max_model_len: int = 16384
    max_pixels: int = DEFAULT_MAX_PIXELS
    images_per_prompt: int = 4
    tensor_parallel_size: int = 1
    data_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    dtype: str = "bfloat16"
    prefix_caching: bool = True
    extra: list[str] = field(default_factory=list)

    @classmethod
    def from_preset(cls, preset: str, model: str | None = None, **kwargs: object) -> ServeOptions:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
        chosen = model or PRESETS[preset]["model"]
        if not chosen:
            raise ValueError(
                f"preset {preset!r} needs --model: the local directory or hub id of the checkpoint"
            )
        return cls(model=chosen, served_name=PRESETS[preset]["served_name"], **kwargs)  # type: ignore[arg-type]


def serve_command(opts: ServeOptions, *, launcher: str = "auto") -> list[str]:
    """The argv to start vLLM's OpenAI-compatible server.

    ``launcher``: ``cli`` (``vllm serve MODEL``), ``module`` (``python -m
    vllm.entrypoints.openai.api_server --model MODEL``, which also works where
    the ``vllm`` script is missing) or ``auto`` (the script when on PATH).
    """
    if launcher == "auto":
        launcher = "cli" if shutil.which("vllm") else "module"
    if launcher == "cli":
        argv = ["vllm", "serve", opts.model]
    elif launcher == "module":
        argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", opts.model]
    else:
        raise ValueError("launcher must be auto, cli or module")
    argv += [
        "--host", opts.host,
        "--port", str(opts.port),
        "--served-model-name", opts.served_name or opts.model,
        "--dtype", opts.dtype,
        "--max-model-len", str(opts.max_model_len),
        "--limit-mm-per-prompt", json.dumps({"image": opts.images_per_prompt, "video": 0}),
        "--mm-processor-kwargs", json.dumps({"max_pixels": opts.max_pixels}),
        "--enable-auto-tool-choice",
        "--tool-call-parser", "hermes",
        "--tensor-parallel-size", str(opts.tensor_parallel_size),
        "--gpu-memory-utilization", str(opts.gpu_memory_utilization),
    ]  # fmt: skip
    if opts.data_parallel_size > 1:
        argv += ["--data-parallel-size", str(opts.data_parallel_size)]
    if opts.prefix_caching:
        argv.append("--enable-prefix-caching")
    return argv + list(opts.extra)


def client_command(opts: ServeOptions, preset: str) -> str:
    """How to assess images against the server ``opts`` starts, with the preset's prompt style."""
    host = "127.0.0.1" if opts.host in ("0.0.0.0", "::") else opts.host
    argv = ["tooliqa", "assess", "IMAGES", "--server", f"http://{host}:{opts.port}/v1"]
    argv += ["--model", opts.served_name or opts.model]
    style = PRESETS.get(preset, {}).get("prompt_style", "paper")
    if style != "paper":
        argv += ["--prompt-style", style]
    return shlex.join(argv)


def format_command(argv: list[str]) -> str:
    """The argv as one shell-quoted line."""
    return shlex.join(argv)


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None or shutil.which("vllm") is not None
