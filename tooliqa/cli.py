"""Command line: ``tooliqa assess``, ``serve``, ``eval``, ``report``, ``export`` and ``ui``."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["main"]

CLASSIC_NOTE = (
    "note: no --server given; using the embedded classic backend (hand-crafted measures "
    "calibrated on AGIQA-3K dev), not a vision-language model"
)


def _assess_parser(sub: Any) -> None:
    p = sub.add_parser("assess", help="assess the quality of images (files or directories)")
    p.add_argument("paths", nargs="+", help="image files or directories (expanded recursively)")
    p.add_argument(
        "--server", help="OpenAI-compatible (vLLM) server URL, e.g. http://127.0.0.1:8000/v1"
    )
    p.add_argument("--model", help="model name on the server (default: the server's first model)")
    p.add_argument(
        "--max-rounds",
        type=int,
        default=2,
        help="tool rounds before the answer is demanded (default 2)",
    )
    p.add_argument(
        "--tools",
        default="magnifier,gamma_corrector",
        help=(
            "comma-separated tools to enable ('' for none): the paper's views magnifier, "
            "gamma_corrector (default) and the measurements niqe, brisque, piqe, sharpness, "
            "noise, blockiness, contrast, colourfulness, exposure_error (raw value and a "
            "1-5 score)"
        ),
    )
    p.add_argument(
        "--query",
        help="a question about the image(s), e.g. 'Is the sky noisy?' or 'rate only the "
        "sharpness': the graph plans around it and answers it with evidence (query_answer)",
    )
    p.add_argument("--concurrency", type=int, default=4, help="images assessed at once (default 4)")
    p.add_argument("--max-pixels", type=int, help="pixel budget of each image sent to the model")
    p.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="sampling temperature (default 0, or 0.7 with --samples above 1)",
    )
    p.add_argument(
        "--samples",
        type=int,
        default=1,
        help="trajectories per image; above 1 the score is their mean and the output "
        "shows score ± std [90%% interval] (default 1)",
    )
    p.add_argument(
        "--score-logprobs",
        action="store_true",
        help="ask the server for the answer's token logprobs and report the expected "
        "score ± std [90%% interval]",
    )
    p.add_argument(
        "--attribute-scores",
        action="store_true",
        help="also ask for a 1-5 score per rubric attribute (shown as attribute_scores)",
    )
    p.add_argument(
        "--regions",
        action="store_true",
        help="also ask for distorted regions (pixel boxes with label and severity; "
        "magnifier regions are always listed)",
    )
    p.add_argument("--max-tokens", type=int, default=1024)
    from tooliqa.eval.cli import add_limit_arguments

    add_limit_arguments(p)
    p.add_argument(
        "--text-tools", action="store_true", help="list tools in the prompt instead of OpenAI tools"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object per image per line")
    p.add_argument(
        "--views", action="store_true", help="with --json, include tool views as data URLs"
    )


def _serve_parser(sub: Any) -> None:
    from tooliqa.backends.serve import PRESETS

    p = sub.add_parser(
        "serve", help="print or run the vLLM server command for Qwen3-VL / Tool-IQA-8B"
    )
    p.add_argument("--preset", choices=sorted(PRESETS), default="qwen3-vl-8b")
    p.add_argument(
        "--model",
        help="checkpoint directory or hub id (default: the preset's hub id, "
        "Qwen/Qwen3-VL-8B-Instruct or guanq/Tool-IQA-8B)",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--tp", type=int, default=1, help="tensor-parallel GPUs")
    p.add_argument("--dp", type=int, default=1, help="data-parallel replicas")
    p.add_argument("--max-model-len", type=int, default=16384)
    p.add_argument("--max-pixels", type=int)
    p.add_argument("--images-per-prompt", type=int, default=4)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    p.add_argument("--no-prefix-caching", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="print the command and exit")
    p.add_argument("extra", nargs=argparse.REMAINDER, help="further vLLM flags after --")


def _ui_parser(sub: Any) -> None:
    p = sub.add_parser("ui", help="start the Gradio demo page (needs the 'ui' extra)")
    p.add_argument("--server", help="preselect a vLLM server, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--model", help="model name on the server")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a --host other than loopback (set TOOLIQA_UI_AUTH=user:password too)",
    )


def _run_ui(args: argparse.Namespace) -> int:
    try:  # lazily: the UI is the optional top layer; only this entry point reaches it
        from tooliqa.ui.app import main as ui_main
    except ImportError as exc:
        print(f"error: the UI needs gradio (pip install 'tooliqa[ui]'): {exc}", file=sys.stderr)
        return 2
    argv = ["--port", str(args.port), "--host", args.host]
    if args.allow_remote:
        argv.append("--allow-remote")
    if args.server:
        argv += ["--server", args.server]
    if args.model:
        argv += ["--model", args.model]
    return ui_main(argv)


def _train_parser(sub: Any) -> None:
    p = sub.add_parser(
        "train",
        help="GRPO training on the graph's own trajectories (needs the 'train' extra)",
        description="Runs training/run_grpo.py: tooliqa train --config NAME_OR_YAML [--dry-run] "
        "[GRPOConfig/ModelConfig/ToolIQAArguments overrides]. Shipped configs: "
        "kadid_qwen3vl8b, koniq_qwen3vl8b, tiny_cpu.",
        add_help=False,
    )
    p.add_argument("args", nargs=argparse.REMAINDER, help="passed to run_grpo.py")


def _run_train(args: argparse.Namespace) -> int:
    try:  # lazily: training is the optional top layer; only this entry point reaches it
        from tooliqa.training.run_grpo import main as train_main
    except ImportError as exc:
        print(
            f"error: training needs the 'train' extra (pip install 'tooliqa[train]'): {exc}",
            file=sys.stderr,
        )
        return 2
    return train_main(list(args.args))


def _export_parser(sub: Any) -> None:
    p = sub.add_parser(
        "export", help="stored evaluation runs as trajectory records (JSON lines) for training"
    )
    p.add_argument("--db", required=True, help="SQLite result store written by 'tooliqa eval'")
    p.add_argument("--out", required=True, help="output file ('-' for stdout)")
    p.add_argument(
        "--run", action="append", metavar="RUN_ID", help="only this run; repeatable (default: all)"
    )
    p.add_argument(
        "--dataset", action="append", metavar="NAME", help="only this dataset; repeatable"
    )
    p.add_argument(
        "--include-failed", action="store_true", help="keep images without a score (default: skip)"
    )
    p.add_argument(
        "--with-views", action="store_true", help="keep tool view images (base64) in the steps"
    )
    p.add_argument(
        "--format",
        choices=["jsonl", "json"],
        default="jsonl",
        help="one object per line (default) or one JSON array",
    )


def _run_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tooliqa.eval.export import ExportError, export_records, write_records

    if args.out != "-" and Path(args.out).resolve() == Path(args.db).resolve():
        print("error: --out would overwrite the result store", file=sys.stderr)
        return 2
    try:
        with export_records(
            args.db, runs=args.run, datasets=args.dataset, include_failed=args.include_failed,
            with_views=args.with_views,
        ) as records:  # fmt: skip
            s = write_records(records, args.out, fmt=args.format)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. piped into head: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except OSError as exc:
        print(f"error: cannot write {args.out}: {exc}", file=sys.stderr)
        return 2
    where = "stdout" if args.out == "-" else args.out
    line = f"export: {s.written} record(s) from {s.runs} run(s) written to {where}"
    line += f"; {s.skipped_failed} failed row(s) skipped"
    if s.skipped_failed:
        line += " (--include-failed keeps them)"
    if s.views_dropped:
        line += f"; {s.views_dropped} tool view(s) left out ({s.bytes_dropped} bytes)"
    elif args.with_views and not s.views_kept and s.written:
        line += "; the store holds no tool views"
    print(line, file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tooliqa", description="Tool-augmented image quality assessment (Tool-IQA) with VLMs."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _assess_parser(sub)
    _serve_parser(sub)
    from tooliqa.eval.cli import add_eval_parser, add_report_parser

    add_eval_parser(sub)
    add_report_parser(sub)
    _export_parser(sub)
    _train_parser(sub)
    _ui_parser(sub)
    return parser


def _record(a: Any, include_views: bool) -> dict[str, Any]:
    """The CLI's JSON line for one Assessment."""
    data = json.loads(a.to_json(include_views=include_views))
    if not include_views:
        data.pop("transcript", None)
    keys = ("round", "tool", "args", "ok", "message", "box", "gamma", "view")
    data["steps"] = [
        {k: v for k, v in s.items() if k in keys or (k in ("raw", "score_1_5") and v is not None)}
        for s in data["steps"]
    ]
    return data


def _human(a: Any) -> str:
    if a.score is None:
        kind = f"{a.error_kind}: " if a.error_kind else ""
        return f"{a.image}: FAILED ({kind}{a.error})"
    tools = ", ".join(f"{s.tool}{'' if s.ok else ' (failed)'}" for s in a.steps) or "no tools"
    levels = ", ".join(f"{k}={v}" for k, v in a.rubric.items())
    line = f"{a.image}: {_score_text(a)}  [{a.backend}; {tools}]  {levels}"
    if a.attribute_scores:
        line += "  scores: " + ", ".join(f"{k}={v:.1f}" for k, v in a.attribute_scores.items())
    if a.regions:
        line += f"  regions: {len(a.regions)}"
    qa = a.query_answer
    if qa:
        rated = f" ({qa['score_of']} only)" if qa.get("score_of", "overall") != "overall" else ""
        line += f"{rated}\n  Q: {qa['query']}\n  A: {qa.get('answer') or '(no answer)'}"
    return line


def _score_text(a: Any) -> str:
    """``3.20``, or ``3.20 ± 0.15 [2.95, 3.45]`` when a distribution is known."""
    u = a.uncertainty or {}
    if u.get("std") is None or not u.get("interval"):
        return f"{a.score:.2f}"
    lo, hi = u["interval"]
    return f"{a.score:.2f} ± {u['std']:.2f} [{lo:.2f}, {hi:.2f}]"


async def _run_assess(args: argparse.Namespace) -> int:
    from tooliqa.api import assess_many, image_files, make_context
    from tooliqa.backends.openai_compat import BackendError
    from tooliqa.tools import clean_text, clean_value

    tools = tuple(t for t in (args.tools or "").split(",") if t.strip())
    if args.samples < 1:
        print("error: --samples must be at least 1", file=sys.stderr)
        return 2
    from tooliqa.eval.cli import limits_error

    if problem := limits_error(args):
        print(f"error: {problem}", file=sys.stderr)
        return 2
    temperature = args.temperature
    if temperature is None:
        temperature = 0.7 if args.samples > 1 else 0.0
    settings: dict[str, Any] = {
        "enabled_tools": tools,
        "tool_protocol": "text" if args.text_tools else "native",
        "score_logprobs": args.score_logprobs,
        "attribute_scores": args.attribute_scores,
        "report_regions": args.regions,
    }
    if args.max_pixels:
        settings["max_pixels"] = args.max_pixels
    model = None
    if args.server:
        from tooliqa.backends.openai_compat import ServerConfig, make_chat_model

        cfg = ServerConfig(
            args.server, args.model, temperature=temperature, max_tokens=args.max_tokens,
            timeout=args.timeout, max_retries=args.retries, backoff=args.backoff,
        )  # fmt: skip
        try:
            model = make_chat_model(cfg)
        except BackendError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    else:
        print(CLASSIC_NOTE, file=sys.stderr)
    try:
        ctx = make_context(model=model, max_rounds=args.max_rounds, **settings)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    files = image_files(args.paths)
    if not files:
        print("error: no images found", file=sys.stderr)
        return 2
    failed = 0
    results: dict[int, Any] = {}
    async for i, a in assess_many(
        files, context=ctx, concurrency=args.concurrency, query=args.query, samples=args.samples,
        deadline=args.deadline,
    ):  # fmt: skip
        a.image = a.image or str(files[i])
        results[i] = a
        failed += a.score is None
        # file names and model text may hold escape codes or undecodable bytes: printable only
        line = (
            json.dumps(clean_value(_record(a, args.views)), ensure_ascii=False)
            if args.json
            else clean_text(_human(a))
        )
        print(line, flush=True)
    if failed:
        print(f"{failed} of {len(files)} image(s) failed", file=sys.stderr)
    return 1 if failed else 0


def _run_serve(args: argparse.Namespace) -> int:
    from tooliqa.backends.serve import (
        ServeOptions,
        client_command,
        format_command,
        serve_command,
        vllm_available,
    )

    extra = [x for x in args.extra if x != "--"]
    kwargs: dict[str, Any] = {
        "host": args.host, "port": args.port, "tensor_parallel_size": args.tp,
        "data_parallel_size": args.dp, "max_model_len": args.max_model_len,
        "images_per_prompt": args.images_per_prompt,
        "gpu_memory_utilization": args.gpu_memory_utilization,
        "prefix_caching": not args.no_prefix_caching, "extra": extra,
    }  # fmt: skip
    if args.max_pixels:
        kwargs["max_pixels"] = args.max_pixels
    try:
        opts = ServeOptions.from_preset(args.preset, args.model, **kwargs)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(format_command(serve_command(opts, launcher="cli")))
        print("# then: " + client_command(opts, args.preset))
        return 0
    if not vllm_available():
        print(
            "error: vLLM is not installed here (pip install 'tooliqa[serve]'); the command would be:\n"
            + format_command(serve_command(opts, launcher="cli")),
            file=sys.stderr,
        )
        return 2
    argv = serve_command(opts)
    print(format_command(argv), file=sys.stderr, flush=True)
    os.execvp(argv[0], argv)
    return 0  # pragma: no cover


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:
        # everything after 'train' belongs to run_grpo's own (TRL) parser
        return _run_train(argparse.Namespace(args=argv[1:]))
    args = build_parser().parse_args(argv)
    if args.command == "assess":
        return asyncio.run(_run_assess(args))
    if args.command == "serve":
        return _run_serve(args)
    if args.command in ("eval", "report"):
        from tooliqa.eval.cli import run_eval, run_report

        return run_eval(args) if args.command == "eval" else run_report(args)
    if args.command == "export":
        return _run_export(args)
    if args.command == "train":
        return _run_train(args)
    if args.command == "ui":
        return _run_ui(args)
    return 2  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
