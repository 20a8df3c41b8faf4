"""``tooliqa eval`` and ``tooliqa report``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["add_eval_parser", "add_limit_arguments", "add_report_parser", "run_eval", "run_report"]


def add_limit_arguments(p: Any) -> None:
    """``--timeout``, ``--deadline``, ``--retries`` and ``--backoff`` (``assess`` and
    ``eval``). Their defaults are those of :class:`~tooliqa.backends.openai_compat.ServerConfig`
    and :data:`tooliqa.api.DEFAULT_DEADLINE` (not imported here: ``--help`` stays quick;
    a test holds them equal)."""
    p.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="seconds per model request, the whole reply included (default 120)",
    )
    p.add_argument(
        "--deadline",
        type=float,
        default=600.0,
        help="seconds per image, all its turns together, before it fails as a timeout "
        "(default 600)",
    )
    p.add_argument(
        "--retries",
        type=int,
        default=2,
        help="retries per model request on transient errors (HTTP 5xx/408/409/429, lost "
        "connections, timeouts), with jittered backoff or the server's Retry-After (default 2)",
    )
    p.add_argument(
        "--backoff", type=float, default=1.0, help="first retry delay in seconds (default 1)"
    )


def limits_error(args: argparse.Namespace) -> str | None:
    """What is wrong with the limits given, if anything (NaN included)."""
    if not (args.deadline > 0 and args.timeout > 0 and args.retries >= 0 and args.backoff >= 0):
        return "--deadline and --timeout must be positive, --retries and --backoff >= 0"
    return None


def add_eval_parser(sub: Any) -> None:
    p = sub.add_parser("eval", help="evaluate on IQA datasets (resumable, stored in SQLite)")
    p.add_argument(
        "--dataset",
        action="append",
        required=True,
        metavar="NAME=LABELS[:ROOT]",
        help="a dataset: registry name (or any name), label file, optional image root; repeatable",
    )
    p.add_argument("--split", help="only this split (e.g. test)")
    p.add_argument(
        "--server",
        action="append",
        default=[],
        metavar="URL",
        help="OpenAI-compatible server; repeat for replicas (requests are spread over them)",
    )
    p.add_argument("--model", help="model name on the server(s)")
    p.add_argument(
        "--method", help="name of this method in the store and reports (default: backend/model)"
    )
    p.add_argument(
        "--concurrency", type=int, default=4, help="images in flight across all endpoints"
    )
    p.add_argument("--limit", type=int, help="only the first N images of each dataset")
    p.add_argument("--db", default="runs.sqlite", help="SQLite result store (default runs.sqlite)")
    p.add_argument("--report", type=Path, metavar="DIR", help="write a report of these runs to DIR")
    p.add_argument("--max-rounds", type=int, default=2)
    p.add_argument("--tools", default="magnifier,gamma_corrector")
    add_limit_arguments(p)
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="on resume, assess again every failed image (by default only server and "
        "timeout failures are retried; image, model, client (HTTP 4xx) and internal "
        "failures are final)",
    )
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--max-tokens", type=int, default=1024)
    p.add_argument(
        "--attribute-scores",
        action="store_true",
        help="also ask for a 1-5 score per rubric attribute; the report compares them with "
        "the datasets' attribute labels (attr_* or SPAQ attribute columns)",
    )
    p.add_argument(
        "--prompt-style",
        choices=["paper", "extended"],
        default="paper",
        help="paper: Appendix A verbatim (default); extended: the rubric adds a colour line",
    )
    p.add_argument(
        "--regions",
        action="store_true",
        help="also ask for distorted regions (stored with each Assessment)",
    )
    p.add_argument(
        "--score-logprobs",
        action="store_true",
        help="ask the server for the answer's token logprobs; each Assessment stores the "
        "expected score and its spread (uncertainty)",
    )
    p.add_argument(
        "--fit", choices=["5pl", "4pl", "none"], default="5pl", help="logistic fit before PLCC/RMSE"
    )
    p.add_argument(
        "--bootstrap", type=int, default=0, help="bootstrap resamples for confidence intervals"
    )
    p.add_argument("--no-progress", action="store_true")  # fmt: skip


def add_report_parser(sub: Any) -> None:
    p = sub.add_parser("report", help="re-render reports from a result store")
    p.add_argument("--db", default="runs.sqlite")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("report"),
        metavar="DIR",
        help="output folder (default report/)",
    )
    p.add_argument("--run", action="append", help="run ids to include (default: all)")
    p.add_argument("--fit", choices=["5pl", "4pl", "none"], default="5pl")
    p.add_argument("--bootstrap", type=int, default=0)


#: ``tooliqa eval`` flags → the graph options they turn on (stored in the run settings).
_OPTIONS = {
    "attribute_scores": "attribute_scores",
    "regions": "report_regions",
    "score_logprobs": "score_logprobs",
}


def _contexts(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    from tooliqa.api import make_context
    from tooliqa.backends.openai_compat import ServerConfig, make_chat_model

    tools = tuple(t for t in (args.tools or "").split(",") if t.strip())
    common: dict[str, Any] = {"max_rounds": args.max_rounds, "enabled_tools": tools}
    for flag, setting in _OPTIONS.items():
        if getattr(args, flag):
            common[setting] = True
    if args.prompt_style != "paper":
        common["prompt_style"] = args.prompt_style
    if not args.server:
        return {"classic": make_context(**common)}, "classic"
    contexts = {}
    for url in args.server:
        cfg = ServerConfig(
            url,
            args.model,
            temperature=args.temperature,
            max_tokens=args.max_tokens,
            timeout=args.timeout,
            max_retries=args.retries,
            backoff=args.backoff,
        )
        model = make_chat_model(cfg)
        contexts[url] = make_context(model=model, **common)
    model_name = getattr(next(iter(contexts.values())).get_model(), "model_name", None) or "openai"
    return contexts, str(model_name)


def _write_report(
    store: Any, out: Path, run_ids: list[str] | None, fit: str, bootstrap: int
) -> list[Path]:
    from .report import build_report, write_report

    rows = store.rows(run_ids)
    runs = [r.as_dict() for r in store.runs(run_ids)]
    report = build_report(rows, runs, fit=fit, bootstrap=bootstrap)
    return write_report(report, rows, out)


@contextlib.contextmanager
def _log_to_file(db: str) -> Iterator[Path]:
    """While in it, internal errors (with tracebacks) go to a log file beside the
    database, not the terminal."""
    path = Path(db).with_suffix(".log")
    logger = logging.getLogger("tooliqa.eval")
    handler = logging.FileHandler(path, encoding="utf-8", delay=True)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    propagate, logger.propagate = logger.propagate, False
    try:
        yield path
    finally:
        logger.removeHandler(handler)
        handler.close()
        logger.propagate = propagate


def _failure_lines(summary: Any, log_path: Path) -> list[str]:
    """What failed in a run, by kind, with the first reason of each."""
    from tooliqa.failures import KINDS

    order = {k: i for i, k in enumerate(KINDS)}
    lines = []
    for kind, (n, reason) in sorted(summary.failures.items(), key=lambda kv: order.get(kv[0], 99)):
        hint = f" (tracebacks in {log_path})" if kind == "internal" else ""
        lines.append(f"  {n} {kind}{hint}: e.g. {reason}")
    return lines


async def _eval(args: argparse.Namespace) -> int:
    """0 when every image has a score; 1 when some have none (the summary says why);
    2 for a usage error (nothing assessed)."""
    from tooliqa.backends.openai_compat import BackendError

    from .datasets import DatasetError, load_dataset
    from .runner import run_dataset
    from .store import ResultStore

    try:
        datasets = [load_dataset(spec, split=args.split) for spec in args.dataset]
        contexts, default_method = _contexts(args)
    except (DatasetError, BackendError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if problem := limits_error(args):
        print(f"error: {problem}", file=sys.stderr)
        return 2
    method = args.method or default_method
    settings = {"split": args.split, "max_rounds": args.max_rounds, "tools": args.tools,
                "model": args.model, "temperature": args.temperature, "max_tokens": args.max_tokens}  # fmt: skip
    for flag, setting in _OPTIONS.items():  # only when on: older runs keep their ids
        if getattr(args, flag):
            settings[setting] = True
    if args.prompt_style != "paper":
        settings["prompt_style"] = args.prompt_style
    run_ids = []
    incomplete = 0
    with _log_to_file(args.db) as log_path, ResultStore(args.db) as store:
        for ds in datasets:
            for line in ds.problems:
                print(f"{ds.name}: {line}", file=sys.stderr)
            summary = await run_dataset(
                store, ds, contexts, method=method, settings=settings, concurrency=args.concurrency,
                limit=args.limit, deadline=args.deadline, retry_failed=args.retry_failed,
                progress=not args.no_progress,
            )  # fmt: skip
            run_ids.append(summary.run_id)
            print(
                f"{ds.name}: run {summary.run_id}: {summary.assessed} assessed, {summary.skipped} already done, "
                f"{summary.failed} failed, {summary.wall_s:.1f} s; per endpoint {summary.per_endpoint}",
                file=sys.stderr,
            )
            if summary.claimed_elsewhere:
                print(
                    f"{ds.name}: {summary.claimed_elsewhere} image(s) were assessed by another "
                    "evaluation of this run at the same time",
                    file=sys.stderr,
                )
            if not summary.complete:
                incomplete += 1
                print(
                    f"{ds.name}: {summary.unscored} of {summary.total} image(s) have no score:",
                    file=sys.stderr,
                )
                for line in _failure_lines(summary, log_path):
                    print(line, file=sys.stderr)
        if args.report:
            paths = _write_report(store, args.report, run_ids, args.fit, args.bootstrap)
            print(f"report: {paths[0]}", file=sys.stderr)
        _print_summary(store, run_ids, args.fit)
    if incomplete:
        print(
            "some images have no score (exit status 1); re-run the same command to retry "
            "server and timeout failures, add --retry-failed to retry all",
            file=sys.stderr,
        )
        return 1
    return 0


def _print_summary(store: Any, run_ids: list[str], fit: str) -> None:
    from .metrics import evaluate
    from .report import attribute_metrics

    def num(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.4f}"

    for run in store.runs(run_ids):
        all_rows = store.rows([run.run_id])
        rows = [r for r in all_rows if r["score"] is not None]
        m = evaluate([r["score"] for r in rows], [r["mos_norm"] for r in rows], fit=fit)
        print(
            f"{run.method}\t{run.dataset}\tn={m.n}\tSRCC {num(m.srcc)}\tPLCC {num(m.plcc)} ({fit})"
        )
        for key, e in attribute_metrics(all_rows, fit).items():
            print(
                f"{run.method}\t{run.dataset}\t{key}\tn={e['n']}\tSRCC {num(e['srcc'])}\t"
                f"PLCC {num(e['plcc'])} ({fit})"
            )


def run_eval(args: argparse.Namespace) -> int:
    return asyncio.run(_eval(args))


def run_report(args: argparse.Namespace) -> int:
    from .store import ResultStore

    if not Path(args.db).exists():
        print(f"error: no result store at {args.db}", file=sys.stderr)
        return 2
    with ResultStore(args.db) as store:
        paths = _write_report(store, args.out, args.run, args.fit, args.bootstrap)
    for p in paths:
        print(p)
    return 0
