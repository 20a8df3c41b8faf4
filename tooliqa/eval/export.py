"""Stored evaluation runs as trajectory records, one JSON object per image.

:func:`export_records` streams the result rows of a :class:`~tooliqa.eval.store.ResultStore`
database as flat, JSON-serialisable dicts (schema :data:`SCHEMA`), for training
and analysis. The database is opened read-only (``file:...?mode=ro``), inside one
read transaction: a consistent snapshot, readable while an evaluation is still
writing to it, and never modified. :func:`write_jsonl` / :func:`write_json`
write the records to a file atomically (a temporary file renamed into place),
to ``"-"`` (stdout) or to an open text stream.

Record keys: ``schema, run_id, method, backend, model, dataset, image, mos,
mos_norm, score, error, error_kind, tool_calls, tools, tool_ok, used_tools,
input_tokens, output_tokens, seconds, rubric, rubric_notes, rationale, answer,
query, forced_answer, timings, steps, transcript, protocol, errors, endpoint, attempts``
(``protocol``: the per-reply record of :class:`~tooliqa.graph.ProtocolTurn`, empty for
results stored before it existed).

Tool views (the ``view`` data URL of a step) are left out unless asked for; the
records say nothing of it, the summary counts what was dropped. The store as
:class:`~tooliqa.eval.store.ResultStore` writes it keeps steps without their views,
so there is usually nothing to drop or keep.
"""

from __future__ import annotations

import base64
import json
import math
import os
import secrets
import sqlite3
import sys
from collections.abc import Generator, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

__all__ = [
    "FORMATS",
    "SCHEMA",
    "ExportError",
    "ExportSummary",
    "RecordStream",
    "export_records",
    "write_json",
    "write_jsonl",
    "write_records",
]

#: Version of the record layout; bump it when a key changes meaning or goes away.
SCHEMA = "tooliqa.trajectory/1"
FORMATS = ("jsonl", "json")

_RESULT_COLUMNS = (
    "run_id", "dataset", "image", "mos", "mos_norm", "score", "error", "error_kind", "assessment",
    "input_tokens", "output_tokens", "tool_calls", "seconds", "endpoint", "attempts",
)  # fmt: skip
_RUN_COLUMNS = ("run_id", "method", "dataset", "backend", "model")


class ExportError(Exception):
    """The store cannot be exported: missing, not a tooliqa store, unknown run or dataset."""


@dataclass
class ExportSummary:
    """What an export did. ``bytes_dropped`` counts the characters of view data URLs left out."""

    written: int = 0
    skipped_failed: int = 0
    runs: int = 0
    bytes_dropped: int = 0
    views_dropped: int = 0
    views_kept: int = 0
    path: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _connect(store_path: str | os.PathLike[str]) -> sqlite3.Connection:
    """A read-only connection to an existing tooliqa store, or :class:`ExportError`."""
    path = Path(store_path)
    if not path.exists():
        raise ExportError(f"no result store at {path}")
    if not path.is_file():
        raise ExportError(f"{path} is not a file")
    uri = path.resolve().as_uri() + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=30.0, isolation_level=None)
    except sqlite3.Error as exc:
        raise ExportError(f"cannot open {path}: {exc}") from exc
    try:
        conn.execute("BEGIN")  # one snapshot for the checks and the rows
        for table, needed in (("runs", _RUN_COLUMNS), ("results", _RESULT_COLUMNS)):
            have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
            if not set(needed) <= have:
                raise ExportError(
                    f"{path} is not a tooliqa result store (no usable '{table}' table)"
                )
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise ExportError(f"{path} is not a tooliqa result store ({exc})") from exc
    except ExportError:
        conn.close()
        raise
    return conn


def _listing(names: Iterable[str]) -> str:
    return ", ".join(sorted(names)) or "(none)"


def _select(
    conn: sqlite3.Connection, runs: Iterable[str] | None, datasets: Iterable[str] | None
) -> tuple[dict[str, dict[str, Any]], list[str] | None, list[str] | None]:
    """The runs' records and the checked filters; unknown runs or datasets are errors."""
    known = {
        row[0]: dict(zip(_RUN_COLUMNS, row, strict=True))
        for row in conn.execute(f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs")
    }
    run_ids = list(dict.fromkeys(runs)) if runs else None
    if run_ids is not None:
        missing = [r for r in run_ids if r not in known]
        if missing:
            raise ExportError(
                f"unknown run(s): {', '.join(missing)}; available runs: {_listing(known)}"
            )
    names = list(dict.fromkeys(datasets)) if datasets else None
    if names is not None:
        where, params = "", []
        if run_ids is not None:
            where, params = f" WHERE run_id IN ({','.join('?' * len(run_ids))})", run_ids
        have = {r[0] for r in conn.execute(f"SELECT DISTINCT dataset FROM results{where}", params)}
        have |= {r[0] for r in conn.execute(f"SELECT dataset FROM runs{where}", params)}
        missing = [d for d in names if d not in have]
        if missing:
            raise ExportError(
                f"unknown dataset(s): {', '.join(missing)}; available datasets: {_listing(have)}"
            )
    return known, run_ids, names


def _json_safe(value: Any) -> Any:
    """Non-finite floats become None and bytes base64 text, so strict JSON can hold it."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    return value


def _steps(raw: Any, with_views: bool, stats: ExportSummary) -> list[dict[str, Any]]:
    """The stored steps, with their ``view`` left out unless ``with_views``."""
    steps = [dict(s) for s in raw or [] if isinstance(s, Mapping)]
    for step in steps:
        view = step.get("view")
        if with_views:
            stats.views_kept += view is not None
            continue
        step.pop("view", None)
        if view is not None:
            stats.views_dropped += 1
            stats.bytes_dropped += len(view) if isinstance(view, str | bytes) else 0
    return steps


def _record(
    row: Mapping[str, Any],
    run: Mapping[str, Any] | None,
    *,
    with_views: bool,
    stats: ExportSummary,
) -> dict[str, Any]:
    """One result row (with its run) as a trajectory record."""
    try:
        a = json.loads(row["assessment"])
    except (TypeError, ValueError) as exc:
        where = f"{row['run_id']} / {row['dataset']} / {row['image']}"
        raise ExportError(f"{where}: the stored assessment is not valid JSON ({exc})") from exc
    run = run or {}
    steps = _steps(a.get("steps"), with_views, stats)
    backend = a.get("backend")
    record = {
        "schema": SCHEMA,
        "run_id": row["run_id"],
        "method": run.get("method"),
        "backend": run.get("backend") if backend in (None, "unknown") else backend,
        "model": a.get("model") or run.get("model"),
        "dataset": row["dataset"],
        "image": row["image"],
        "mos": row["mos"],
        "mos_norm": row["mos_norm"],
        "score": row["score"],
        "error": row["error"],
        "error_kind": row["error_kind"],
        "tool_calls": row["tool_calls"],
        "tools": [s.get("tool") for s in steps],
        "tool_ok": [bool(s.get("ok")) for s in steps],
        "used_tools": bool(steps),
        "input_tokens": row["input_tokens"],
        "output_tokens": row["output_tokens"],
        "seconds": row["seconds"],
        "rubric": a.get("rubric") or {},
        "rubric_notes": a.get("rubric_notes") or {},
        "rationale": a.get("rationale", ""),
        "answer": a.get("answer", ""),
        "query": a.get("query"),
        "forced_answer": bool(a.get("forced_answer", False)),
        "timings": a.get("timings") or {},
        "steps": steps,
        "transcript": a.get("transcript") or [],
        "protocol": a.get("protocol") or [],
        "errors": a.get("errors") or [],
        "endpoint": row["endpoint"],
        "attempts": row["attempts"],
    }
    return _json_safe(record)


def _stream(
    conn: sqlite3.Connection,
    runs: Mapping[str, Mapping[str, Any]],
    run_ids: list[str] | None,
    datasets: list[str] | None,
    *,
    include_failed: bool,
    with_views: bool,
    stats: ExportSummary,
) -> Generator[dict[str, Any], None, None]:
    clauses, params = [], []
    for column, values in (("run_id", run_ids), ("dataset", datasets)):
        if values is not None:
            clauses.append(f"{column} IN ({','.join('?' * len(values))})")
            params += values
    sql = f"SELECT {', '.join(_RESULT_COLUMNS)} FROM results"
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    seen: set[str] = set()
    try:
        # the cursor steps through the rows: nothing is fetched ahead of the consumer
        for values in conn.execute(sql + " ORDER BY run_id, dataset, image", params):
            row = dict(zip(_RESULT_COLUMNS, values, strict=True))
            if row["score"] is None and not include_failed:
                stats.skipped_failed += 1
                continue
            record = _record(row, runs.get(row["run_id"]), with_views=with_views, stats=stats)
            stats.written += 1
            if row["run_id"] not in seen:
                seen.add(row["run_id"])
                stats.runs += 1
            yield record
    except sqlite3.Error as exc:
        raise ExportError(f"reading the store failed: {exc}") from exc
    finally:
        conn.close()


class RecordStream(Iterator[dict[str, Any]]):
    """The records of one export, read as they are consumed; ``stats`` counts as it goes."""

    def __init__(
        self,
        store_path: str | os.PathLike[str],
        *,
        runs: Iterable[str] | None = None,
        datasets: Iterable[str] | None = None,
        include_failed: bool = False,
        with_views: bool = False,
    ) -> None:
        self.stats = ExportSummary()
        self._conn = _connect(store_path)
        try:
            known, run_ids, names = _select(self._conn, runs, datasets)
        except BaseException:
            self._conn.close()
            raise
        self._gen = _stream(
            self._conn, known, run_ids, names, include_failed=include_failed,
            with_views=with_views, stats=self.stats,
        )  # fmt: skip

    def __next__(self) -> dict[str, Any]:
        return next(self._gen)

    def close(self) -> None:
        """Stop early and release the database (done by itself when the rows run out)."""
        self._gen.close()
        self._conn.close()

    def __enter__(self) -> RecordStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def export_records(
    store_path: str | os.PathLike[str],
    *,
    runs: Iterable[str] | None = None,
    datasets: Iterable[str] | None = None,
    include_failed: bool = False,
    with_views: bool = False,
) -> RecordStream:
    """Stream the stored results of ``runs`` (default all) as trajectory records.

    Rows without a score are skipped (and counted in ``.stats.skipped_failed``)
    unless ``include_failed``; ``datasets`` keeps only those datasets. Problems
    with the store, an unknown run or dataset raise :class:`ExportError` at once.
    """
    return RecordStream(
        store_path, runs=runs, datasets=datasets, include_failed=include_failed,
        with_views=with_views,
    )  # fmt: skip


def _dump(
    records: Iterable[Mapping[str, Any]], stream: TextIO, fmt: str, summary: ExportSummary
) -> None:
    runs: set[Any] = set()
    sep = "[\n" if fmt == "json" else ""
    for record in records:
        text = json.dumps(record, ensure_ascii=False, allow_nan=False)
        stream.write(f"{sep}{text}" if fmt == "json" else f"{text}\n")
        sep = ",\n"
        summary.written += 1
        runs.add(record.get("run_id"))
    if fmt == "json":
        stream.write("[]\n" if summary.written == 0 else "\n]\n")
    summary.runs = len(runs)


def _write_atomic(
    records: Iterable[Mapping[str, Any]], path: Path, fmt: str, summary: ExportSummary
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8", newline="\n") as fh:
            _dump(records, fh, fmt, summary)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_records(
    records: Iterable[Mapping[str, Any]],
    out: str | os.PathLike[str] | TextIO,
    *,
    fmt: str = "jsonl",
) -> ExportSummary:
    """Write ``records`` as JSON lines (``jsonl``) or one JSON array (``json``).

    ``out`` is a path (written atomically: complete or not at all), ``"-"`` for
    stdout, or an open text stream. The counts of a :class:`RecordStream`
    (skipped rows, dropped views) are carried into the summary.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, not {fmt!r}")
    summary = ExportSummary()
    if isinstance(out, str) and out == "-":
        summary.path = "-"
        _dump(records, sys.stdout, fmt, summary)
        sys.stdout.flush()
    elif isinstance(out, str | os.PathLike):
        summary.path = str(out)
        _write_atomic(records, Path(out), fmt, summary)
    else:
        summary.path = getattr(out, "name", None)
        _dump(records, out, fmt, summary)
    stats = getattr(records, "stats", None)
    if isinstance(stats, ExportSummary):
        summary.skipped_failed = stats.skipped_failed
        summary.bytes_dropped = stats.bytes_dropped
        summary.views_dropped = stats.views_dropped
        summary.views_kept = stats.views_kept
    return summary


def write_jsonl(
    records: Iterable[Mapping[str, Any]], out: str | os.PathLike[str] | TextIO
) -> ExportSummary:
    """One JSON object per line; see :func:`write_records`."""
    return write_records(records, out, fmt="jsonl")


def write_json(
    records: Iterable[Mapping[str, Any]], out: str | os.PathLike[str] | TextIO
) -> ExportSummary:
    """One JSON array of the records; see :func:`write_records`."""
    return write_records(records, out, fmt="json")
