"""SQLite store of evaluation runs: every finished Assessment is written at once.

One row per (run, dataset, image), committed as soon as the image is done, in
WAL mode: a run killed at any point (even ``kill -9``) keeps every finished
image, and re-running the same command resumes where it stopped. Several
methods/backends live side by side in one database, each as its own run.

Each row keeps the full Assessment as JSON (its ``attribute_scores`` included)
and the image's human attribute labels (``attr_labels``, JSON, NULL without
labels; see :mod:`tooliqa.eval.datasets`). Databases written before that column
existed get it added, NULL, when opened.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tooliqa.failures import KINDS, RETRIED_ON_RESUME
from tooliqa.graph import Assessment

__all__ = ["ERROR_KINDS", "ResultStore", "RunInfo"]

#: Why an image has no score (see :mod:`tooliqa.failures`): ``server`` and ``timeout``
#: failures, and ``backend`` ones written by older versions, are retried when a run
#: resumes; the others are final unless a resume asks to retry every failure.
ERROR_KINDS = (*KINDS, "backend")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id      TEXT PRIMARY KEY,
    method      TEXT NOT NULL,
    dataset     TEXT NOT NULL,
    backend     TEXT,
    model       TEXT,
    config      TEXT NOT NULL DEFAULT '{}',
    endpoints   TEXT NOT NULL DEFAULT '[]',
    concurrency INTEGER NOT NULL DEFAULT 1,
    started_at  REAL NOT NULL,
    finished_at REAL,
    wall_s      REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS results (
    run_id        TEXT NOT NULL REFERENCES runs(run_id),
    dataset       TEXT NOT NULL,
    image         TEXT NOT NULL,
    mos           REAL,
    mos_norm      REAL,
    score         REAL,
    error         TEXT,
    error_kind    TEXT,
    assessment    TEXT NOT NULL,
    input_tokens  INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    tool_calls    INTEGER NOT NULL DEFAULT 0,
    seconds       REAL NOT NULL DEFAULT 0,
    endpoint      TEXT,
    attempts      INTEGER NOT NULL DEFAULT 1,
    finished_at   REAL NOT NULL,
    attr_labels   TEXT,
    PRIMARY KEY (run_id, dataset, image)
);
CREATE TABLE IF NOT EXISTS claims (
    run_id     TEXT NOT NULL,
    dataset    TEXT NOT NULL,
    image      TEXT NOT NULL,
    owner      TEXT NOT NULL,
    host       TEXT NOT NULL,
    pid        INTEGER NOT NULL,
    claimed_at REAL NOT NULL,
    started    TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (run_id, dataset, image)
);
"""


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


#: This machine (and boot): claims made here are checked against its processes.
_HOST = f"{socket.gethostname()}/{_boot_id()}"


def _process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, from /proc), "" where that
    cannot be read but the process exists, None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2 :].split()[19]
    except (OSError, ValueError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except OSError:  # another user's process
        return ""
    return ""


def _alive(host: str, pid: int, started: str, claimed_at: float, lease: float) -> bool:
    """Whether a claim still holds: made on this machine, its process (the same pid AND
    start time: a pid can be reused, e.g. after a container restart) still runs; made
    elsewhere, its lease (renewed by the claimant's heartbeat) is not over."""
    if host != _HOST:
        return time.time() - claimed_at <= lease
    now = _process_start(pid)
    return now is not None and (not started or not now or now == started)


@dataclass
class RunInfo:
    run_id: str
    method: str
    dataset: str
    backend: str | None
    model: str | None
    config: dict[str, Any]
    endpoints: list[str]
    concurrency: int
    started_at: float
    finished_at: float | None
    wall_s: float

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


class ResultStore:
    """A thread-safe handle on one SQLite database file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30.0)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")  # durable against process kills in WAL mode
        self._conn.executescript(_SCHEMA)
        if "started" not in {row[1] for row in self._conn.execute("PRAGMA table_info(claims)")}:
            self._conn.execute("ALTER TABLE claims ADD COLUMN started TEXT NOT NULL DEFAULT ''")
        columns = {row[1] for row in self._conn.execute("PRAGMA table_info(results)")}
        if "attr_labels" not in columns:  # a database from before attribute labels
            self._conn.execute("ALTER TABLE results ADD COLUMN attr_labels TEXT")
        self._conn.commit()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # runs ---------------------------------------------------------------
    def start_run(
        self,
        run_id: str,
        *,
        method: str,
        dataset: str,
        backend: str | None,
        model: str | None,
        config: dict[str, Any],
        endpoints: list[str],
        concurrency: int,
    ) -> RunInfo:
        """Create the run, or reopen it (a resume) keeping its start time and wall clock."""
        now = time.time()
        with self._lock, self._conn:
            self._conn.execute(
                "INSERT INTO runs (run_id, method, dataset, backend, model, config, endpoints, concurrency, started_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(run_id) DO UPDATE SET endpoints = excluded.endpoints,"
                " concurrency = excluded.concurrency, finished_at = NULL",
                (run_id, method, dataset, backend, model, json.dumps(config, sort_keys=True),
                 json.dumps(endpoints), concurrency, now),
            )  # fmt: skip
        info = self.run(run_id)
        assert info is not None
        return info

    def add_wall_time(self, run_id: str, seconds: float, *, finished: bool) -> None:
        with self._lock, self._conn:
            self._conn.execute(
                "UPDATE runs SET wall_s = wall_s + ?, finished_at = ? WHERE run_id = ?",
                (seconds, time.time() if finished else None, run_id),
            )

    def run(self, run_id: str) -> RunInfo | None:
        runs = self.runs([run_id])
        return runs[0] if runs else None

    def runs(self, run_ids: Iterable[str] | None = None) -> list[RunInfo]:
        sql = "SELECT run_id, method, dataset, backend, model, config, endpoints, concurrency, started_at, finished_at, wall_s FROM runs"
        params: list[Any] = []
        ids = list(run_ids) if run_ids is not None else None
        if ids is not None:
            sql += f" WHERE run_id IN ({','.join('?' * len(ids))})"
            params = ids
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY started_at, run_id", params).fetchall()
        return [
            RunInfo(
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                json.loads(r[5]),
                json.loads(r[6]),
                r[7],
                r[8],
                r[9],
                r[10],
            )
            for r in rows
        ]

    # results -------------------------------------------------------------
    def done_images(self, run_id: str, dataset: str, *, retry_failed: bool = False) -> set[str]:
        """Images finished in this run: scored, or failed for good. Transient failures
        (:data:`~tooliqa.failures.RETRIED_ON_RESUME`) count as not done; with
        ``retry_failed`` no failure does."""
        sql = "SELECT image FROM results WHERE run_id = ? AND dataset = ? AND (score IS NOT NULL"
        params: list[Any] = [run_id, dataset]
        if not retry_failed:
            kinds = sorted(RETRIED_ON_RESUME)
            sql += f" OR error_kind IS NULL OR error_kind NOT IN ({','.join('?' * len(kinds))})"
            params += kinds
        with self._lock:
            return {row[0] for row in self._conn.execute(sql + ")", params)}

    def scored_images(self, run_id: str, dataset: str) -> set[str]:
        """Images of this run that have a score."""
        sql = "SELECT image FROM results WHERE run_id = ? AND dataset = ? AND score IS NOT NULL"
        with self._lock:
            return {row[0] for row in self._conn.execute(sql, (run_id, dataset))}

    # claims: two evaluations of one run never assess the same image at once ---------
    def claim(
        self, run_id: str, dataset: str, image: str, owner: str, *, lease: float, since: float
    ) -> Literal["claimed", "held", "done"]:
        """Claim an image for ``owner``: ``claimed``; ``held`` when another live process
        holds it; ``done`` when it has a score or someone stored it at or after ``since``
        (a ``time.time()``: when the caller listed its work). A claim lapses when its
        process is gone (same machine) or ``lease`` seconds after its last renewal (see
        :meth:`renew`; another machine)."""
        pid = os.getpid()
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                held = self._conn.execute(
                    "SELECT owner, host, pid, started, claimed_at FROM claims"
                    " WHERE run_id = ? AND dataset = ? AND image = ?",
                    (run_id, dataset, image),
                ).fetchone()
                if held and held[0] != owner and _alive(held[1], held[2], held[3], held[4], lease):
                    self._conn.rollback()
                    return "held"
                row = self._conn.execute(
                    "SELECT score, finished_at FROM results WHERE run_id = ? AND dataset = ? AND image = ?",
                    (run_id, dataset, image),
                ).fetchone()
                if row and (row[0] is not None or row[1] >= since):
                    self._conn.rollback()
                    return "done"
                self._conn.execute(
                    "INSERT OR REPLACE INTO claims (run_id, dataset, image, owner, host, pid,"
                    " claimed_at, started) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (run_id, dataset, image, owner, _HOST, pid, time.time(),
                     _process_start(pid) or ""),
                )  # fmt: skip
                self._conn.commit()
            except BaseException:
                self._conn.rollback()
                raise
        return "claimed"

    def renew(self, run_id: str, owner: str) -> None:
        """Renew ``owner``'s claims in the run (a heartbeat: claims seen from another
        machine lapse ``lease`` seconds after the last renewal)."""
        with self._lock, self._conn:
            self._conn.execute(
                "UPDATE claims SET claimed_at = ? WHERE run_id = ? AND owner = ?",
                (time.time(), run_id, owner),
            )

    def release(self, run_id: str, owner: str, image: str | None = None) -> None:
        """Drop ``owner``'s claim on ``image`` (all of its claims in the run when None)."""
        sql, params = "DELETE FROM claims WHERE run_id = ? AND owner = ?", [run_id, owner]
        if image is not None:
            sql, params = sql + " AND image = ?", [*params, image]
        with self._lock, self._conn:
            self._conn.execute(sql, params)

    def failures(self, run_id: str) -> dict[str, tuple[int, str]]:
        """Failed images of a run by kind: kind -> (count, the first reason)."""
        sql = (
            "SELECT COALESCE(error_kind, 'model'), COUNT(*), MIN(COALESCE(error, ''))"
            " FROM results WHERE run_id = ? AND score IS NULL GROUP BY 1"
        )
        with self._lock:
            rows = self._conn.execute(sql, (run_id,)).fetchall()
        return {str(k): (int(n), str(reason)) for k, n, reason in rows}

    def add_result(
        self,
        run_id: str,
        dataset: str,
        image: str,
        assessment: Assessment,
        *,
        mos: float | None,
        mos_norm: float | None,
        seconds: float,
        endpoint: str | None = None,
        error_kind: str | None = None,
        attempts: int = 1,
        attr_labels: Mapping[str, float] | None = None,
    ) -> None:
        """Write one finished image (replacing an earlier failure of the same image; a
        scored image is never overwritten).

        ``attr_labels``: the image's human attribute scores (attribute key -> score).
        """
        if error_kind is not None and error_kind not in ERROR_KINDS:
            raise ValueError(f"error_kind must be one of {ERROR_KINDS}")
        if assessment.score is None and error_kind is None:
            error_kind = "model"
        u = assessment.usage
        labels = json.dumps(dict(attr_labels), sort_keys=True) if attr_labels else None
        with self._lock, self._conn:
            self._conn.execute(
                "INSERT INTO results (run_id, dataset, image, mos, mos_norm, score, error, error_kind, assessment,"
                " input_tokens, output_tokens, tool_calls, seconds, endpoint, attempts, finished_at,"
                " attr_labels) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(run_id, dataset, image) DO UPDATE SET score = excluded.score, error = excluded.error,"
                " error_kind = excluded.error_kind, assessment = excluded.assessment,"
                " input_tokens = excluded.input_tokens, output_tokens = excluded.output_tokens,"
                " tool_calls = excluded.tool_calls, seconds = excluded.seconds, endpoint = excluded.endpoint,"
                " attempts = results.attempts + excluded.attempts, finished_at = excluded.finished_at,"
                " attr_labels = excluded.attr_labels"
                " WHERE results.score IS NULL",
                (run_id, dataset, image, mos, mos_norm, assessment.score, assessment.error, error_kind,
                 assessment.to_json(), u.input_tokens, u.output_tokens, len(assessment.steps), seconds,
                 endpoint, attempts, time.time(), labels),
            )  # fmt: skip

    def count(self, run_id: str | None = None) -> int:
        sql, params = "SELECT COUNT(*) FROM results", ()
        if run_id is not None:
            sql, params = sql + " WHERE run_id = ?", (run_id,)  # type: ignore[assignment]
        with self._lock:
            return int(self._conn.execute(sql, params).fetchone()[0])

    def rows(self, run_ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Result rows in the report's format (see :mod:`tooliqa.eval.report`)."""
        runs = {r.run_id: r for r in self.runs(run_ids)}
        if not runs:
            return []
        sql = (
            "SELECT run_id, dataset, image, mos, mos_norm, score, error, error_kind, assessment,"
            " input_tokens, output_tokens, tool_calls, seconds, endpoint, attempts, attr_labels"
            f" FROM results WHERE run_id IN ({','.join('?' * len(runs))}) ORDER BY run_id, dataset, image"
        )
        with self._lock:
            raw = self._conn.execute(sql, list(runs)).fetchall()
        out = []
        for r in raw:
            a = json.loads(r[8])
            steps = a.get("steps") or []
            out.append(
                {
                    "run_id": r[0], "method": runs[r[0]].method, "dataset": r[1], "image": r[2],
                    "mos": r[3], "mos_norm": r[4], "score": r[5], "error": r[6], "error_kind": r[7],
                    "tool_calls": r[11], "tools": [s.get("tool") for s in steps],
                    "tools_ok": [bool(s.get("ok")) for s in steps], "rubric": a.get("rubric") or {},
                    "input_tokens": r[9], "output_tokens": r[10], "seconds": r[12],
                    "backend": a.get("backend"), "endpoint": r[13], "attempts": r[14], "assessment": a,
                    "attribute_scores": a.get("attribute_scores") or {},
                    "attr_labels": json.loads(r[15]) if r[15] else {},
                }
            )  # fmt: skip
        return out
