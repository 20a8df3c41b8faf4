"""``tooliqa export``: stored evaluation runs as trajectory records (JSON lines)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tooliqa.api import make_context
from tooliqa.cli import main
from tooliqa.eval.export import (
    SCHEMA,
    ExportError,
    export_records,
    write_json,
    write_jsonl,
)
from tooliqa.eval.runner import run_dataset
from tooliqa.eval.store import ResultStore
from tooliqa.graph import Assessment

from _support import png_bytes, synthetic_dataset

FIELDS = {
    "schema", "run_id", "method", "backend", "model", "dataset", "image", "mos", "mos_norm",
    "score", "error", "error_kind", "tool_calls", "tools", "tool_ok", "used_tools",
    "input_tokens", "output_tokens", "seconds", "rubric", "rationale", "steps", "transcript",
    "errors",
}  # fmt: skip


@dataclass
class Store:
    db: Path
    tools_toy: str  # run ids
    tools_other: str
    plain_toy: str
    views: dict[tuple[str, str], Assessment]  # the in-memory assessments (with view bytes)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    """Three classic runs: two datasets with tools, one without; two unreadable images."""
    root = tmp_path_factory.mktemp("export")
    (root / "toy").mkdir()
    (root / "other").mkdir()
    toy = synthetic_dataset(root / "toy", 4)
    other = synthetic_dataset(root / "other", 3, name="other", seed=2)
    dark = np.clip(np.random.default_rng(0).normal(12, 6, (64, 80, 3)), 0, 255).astype(np.uint8)
    (root / "toy" / "im0.png").write_bytes(png_bytes(dark))  # brightened with the gamma tool
    (root / "toy" / "im1.png").write_bytes(b"garbage")  # a failed row in each toy run
    views: dict[tuple[str, str], Assessment] = {}
    db = root / "runs.sqlite"
    with ResultStore(db) as st:
        ids = []
        for ds, method, rounds in ((toy, "tools", 2), (other, "tools", 2), (toy, "plain", 0)):
            summary = asyncio.run(
                run_dataset(
                    st, ds, {"classic": make_context(max_rounds=rounds)}, method=method,
                    progress=False,
                    on_result=lambda s, a, d=ds.name, m=method: views.update({(m, d, s.image): a}),
                )
            )  # fmt: skip
            ids.append(summary.run_id)
    tools = {k[1:]: a for k, a in views.items() if k[0] == "tools"}
    return Store(db, *ids, views=tools)


def with_views(store: Store, tmp_path: Path) -> Path:
    """A copy of the store whose tool-using rows keep their views (as data URLs)."""
    db = tmp_path / "views.sqlite"
    shutil.copyfile(store.db, db)
    con = sqlite3.connect(db)
    run_ids = {"toy": store.tools_toy, "other": store.tools_other}
    with con:
        for (dataset, image), a in store.views.items():
            if any(s.view for s in a.steps):
                con.execute(
                    "UPDATE results SET assessment = ?"
                    " WHERE run_id = ? AND dataset = ? AND image = ?",
                    (a.to_json(include_views=True), run_ids[dataset], dataset, image),
                )
    con.close()
    return db


def fingerprint(db: Path) -> tuple[str, int]:
    return hashlib.sha256(db.read_bytes()).hexdigest(), db.stat().st_mtime_ns


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


class TestRecords:
    def test_all_runs_every_field_json_serialisable(self, store):
        records = export_records(store.db)
        assert isinstance(records, Iterator) and not isinstance(records, list)
        rows = list(records)
        assert len(rows) == 11 - 2 and records.stats.skipped_failed == 2
        assert {r["run_id"] for r in rows} == {store.tools_toy, store.tools_other, store.plain_toy}
        for r in rows:
            assert set(r) >= FIELDS and r["schema"] == SCHEMA
            assert 1 <= r["score"] <= 5 and r["error"] is None and r["backend"] == "classic"
            assert r["tool_calls"] == len(r["tools"]) == len(r["tool_ok"]) == len(r["steps"])
            assert r["used_tools"] is bool(r["tools"]) and all(ok is True for ok in r["tool_ok"])
            assert r["transcript"][1]["role"] == "human" and r["transcript"][1]["images"] == 1
            assert r["rubric"] and r["rationale"] and isinstance(r["errors"], list)
            assert 1 <= r["mos_norm"] <= 5 and r["seconds"] > 0
            json.dumps(r, allow_nan=False)
        dark = next(r for r in rows if r["run_id"] == store.tools_toy and r["image"] == "im0.png")
        assert dark["tools"] == ["gamma_corrector"] and dark["used_tools"] is True
        assert dark["steps"][0]["args"] == {"mode": "brighten"}
        assert {r["method"] for r in rows if not r["used_tools"]} >= {"plain"}

    def test_filter_by_run_and_dataset(self, store):
        plain = list(export_records(store.db, runs=[store.plain_toy]))
        assert len(plain) == 3
        assert {(r["method"], r["dataset"]) for r in plain} == {("plain", "toy")}
        other = list(export_records(store.db, datasets=["other"]))
        assert len(other) == 3 and {r["run_id"] for r in other} == {store.tools_other}
        runs = [store.tools_toy, store.tools_other]
        both = list(export_records(store.db, runs=runs, datasets=["toy"]))
        assert {(r["run_id"], r["dataset"]) for r in both} == {(store.tools_toy, "toy")}
        listing = r"unknown dataset\(s\): nope; available datasets: other, toy"
        with pytest.raises(ExportError, match=listing):
            export_records(store.db, datasets=["nope"])
        with pytest.raises(ExportError, match=r"available datasets: other$"):
            export_records(store.db, runs=[store.tools_other], datasets=["toy"])

    def test_failed_rows_skipped_by_default_kept_on_request(self, store):
        records = export_records(store.db, include_failed=True)
        rows = list(records)
        failed = [r for r in rows if r["score"] is None]
        assert len(rows) == 11 and records.stats.skipped_failed == 0 and len(failed) == 2
        for r in failed:
            assert r["image"] == "im1.png" and r["error_kind"] == "image"
            assert "not a recognised image format" in r["error"]
            assert r["backend"] == "classic" and r["tools"] == [] and r["used_tools"] is False

    def test_views_left_out_by_default_and_kept_on_request(self, store, tmp_path):
        db = with_views(store, tmp_path)
        (image,) = [img for (_, img), a in store.views.items() if any(s.view for s in a.steps)]
        view = store.views[("toy", image)].steps[0].view
        url = store.views[("toy", image)].steps[0].view_data_url()

        out = tmp_path / "small.jsonl"
        summary = write_jsonl(export_records(db), out)
        assert summary.views_dropped == 1 and summary.bytes_dropped == len(url)
        assert "base64" not in out.read_text()
        small = out.stat().st_size
        assert all("view" not in s for r in read_jsonl(out) for s in r["steps"])

        out = tmp_path / "big.jsonl"
        summary = write_jsonl(export_records(db, with_views=True), out)
        assert summary.views_kept == 1 and summary.bytes_dropped == 0
        assert out.stat().st_size - small == len(url) + len(', "view": ""')
        record = next(r for r in read_jsonl(out) if r["image"] == image and r["used_tools"])
        (step,) = record["steps"]
        head, data = step["view"].split(",", 1)
        assert head == "data:image/png;base64" and base64.b64decode(data) == view

    def test_jsonl_and_json_hold_the_same_records(self, store, tmp_path):
        summary = write_jsonl(export_records(store.db), tmp_path / "a.jsonl")
        lines = read_jsonl(tmp_path / "a.jsonl")
        assert (summary.written, summary.skipped_failed, summary.runs) == (9, 2, 3)
        write_json(export_records(store.db), tmp_path / "a.json")
        assert json.loads((tmp_path / "a.json").read_text()) == lines
        assert write_json(iter(()), tmp_path / "e.json").written == 0
        assert json.loads((tmp_path / "e.json").read_text()) == []

    def test_a_crash_while_writing_leaves_the_old_file(self, store, tmp_path):
        out = tmp_path / "traj.jsonl"
        out.write_text("old\n")

        def broken():
            yield from export_records(store.db, runs=[store.tools_other])
            raise RuntimeError("crash")

        with pytest.raises(RuntimeError, match="crash"):
            write_jsonl(broken(), out)
        assert out.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == [out.name]

    def test_not_a_store(self, tmp_path):
        with pytest.raises(ExportError, match="no result store"):
            export_records(tmp_path / "missing.sqlite")
        (tmp_path / "text.sqlite").write_text("hello")
        with pytest.raises(ExportError, match="not a tooliqa result store"):
            export_records(tmp_path / "text.sqlite")
        sqlite3.connect(tmp_path / "other.sqlite").execute("CREATE TABLE t (x)").connection.close()
        with pytest.raises(ExportError, match="not a tooliqa result store"):
            export_records(tmp_path / "other.sqlite")


class TestDatabaseUntouched:
    def test_export_does_not_modify_the_store(self, store, tmp_path):
        before = fingerprint(store.db)
        list(export_records(store.db, include_failed=True, with_views=True))
        assert main(["export", "--db", str(store.db), "--out", str(tmp_path / "t.jsonl")]) == 0
        assert fingerprint(store.db) == before

    def test_reading_while_a_writer_holds_a_transaction(self, store, tmp_path):
        db = tmp_path / "busy.sqlite"
        shutil.copyfile(store.db, db)
        writer = sqlite3.connect(db, isolation_level=None, timeout=0.1)
        assert writer.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        insert = (
            "INSERT INTO results (run_id, dataset, image, score, assessment, finished_at)"
            " VALUES (?, 'toy', ?, 3.0, '{}', 0)"
        )
        writer.execute("BEGIN IMMEDIATE")
        writer.execute(insert, (store.tools_toy, "uncommitted.png"))
        try:
            records = export_records(db)  # the writer's lock does not block the reader
            first = next(records)
            assert first["run_id"] == store.plain_toy
            # a commit while the export is half-way is not seen: one snapshot
            writer.execute("COMMIT")
            writer.execute(insert, (store.tools_toy, "committed.png"))
            rest = list(records)
        finally:
            writer.close()
        assert 1 + len(rest) == 9
        images = [r["image"] for r in rest]
        assert "uncommitted.png" not in images and "committed.png" not in images
        assert len(list(export_records(db))) == 11  # a new export sees both


class TestCli:
    def test_export_to_a_file(self, store, tmp_path, capsys):
        out = tmp_path / "out" / "traj.jsonl"
        assert main(["export", "--db", str(store.db), "--out", str(out)]) == 0
        err = capsys.readouterr().err
        assert "9 record(s) from 3 run(s)" in err and "2 failed row(s) skipped" in err
        assert str(out) in err and len(err.strip().splitlines()) == 1
        assert len(read_jsonl(out)) == 9

    def test_options(self, store, tmp_path, capsys):
        argv = ["export", "--db", str(store.db), "--out", "-", "--include-failed"]
        assert main([*argv, "--run", store.plain_toy, "--dataset", "toy"]) == 0
        out, err = capsys.readouterr()
        rows = [json.loads(line) for line in out.splitlines()]
        assert len(rows) == 4 and {r["run_id"] for r in rows} == {store.plain_toy}
        assert "written to stdout" in err and "0 failed row(s) skipped" in err
        assert main([*argv, "--format", "json", "--dataset", "other"]) == 0
        assert len(json.loads(capsys.readouterr().out)) == 3

    def test_with_views_says_when_the_store_has_none(self, store, capsys):
        argv = ["export", "--db", str(store.db), "--out", "-", "--with-views"]
        assert main(argv) == 0 and "the store holds no tool views" in capsys.readouterr().err

    def test_views_dropped_are_reported(self, store, tmp_path, capsys):
        db = with_views(store, tmp_path)
        assert main(["export", "--db", str(db), "--out", str(tmp_path / "t.jsonl")]) == 0
        assert "1 tool view(s) left out (" in capsys.readouterr().err

    def test_missing_store_is_exit_2(self, tmp_path, capsys):
        code = main(["export", "--db", str(tmp_path / "none.sqlite"), "--out", str(tmp_path / "x")])
        err = capsys.readouterr().err
        assert code == 2 and "no result store" in err and "Traceback" not in err
        assert not (tmp_path / "x").exists()

    def test_not_a_store_is_exit_2(self, tmp_path, capsys):
        (tmp_path / "notes.txt").write_text("not sqlite")
        code = main(["export", "--db", str(tmp_path / "notes.txt"), "--out", "-"])
        assert code == 2 and "not a tooliqa result store" in capsys.readouterr().err

    def test_unknown_run_lists_the_available_ones(self, store, tmp_path, capsys):
        argv = ["export", "--db", str(store.db), "--out", str(tmp_path / "x.jsonl")]
        assert main([*argv, "--run", "nope"]) == 2
        err = capsys.readouterr().err
        assert "unknown run(s): nope" in err
        assert all(r in err for r in (store.tools_toy, store.tools_other, store.plain_toy))
        assert not (tmp_path / "x.jsonl").exists()

    def test_refuses_to_overwrite_the_store(self, store, capsys):
        before = fingerprint(store.db)
        assert main(["export", "--db", str(store.db), "--out", str(store.db)]) == 2
        assert "overwrite" in capsys.readouterr().err and fingerprint(store.db) == before
