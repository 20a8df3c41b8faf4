"""The SQLite result store and the concurrent runner (classic and scripted models)."""

from __future__ import annotations

import asyncio
import io
import sqlite3
import time

import httpx
import openai
import pytest

from tooliqa.api import make_context
from tooliqa.eval.runner import Progress, make_run_id, run_dataset
from tooliqa.eval.store import ResultStore
from tooliqa.graph import Assessment
from tooliqa.graph.testing import ScriptedChatModel

from _support import RUBRIC_REPLY, synthetic_dataset


def make_dataset(tmp_path, n: int = 6):
    return synthetic_dataset(tmp_path, n)


def scripted(replies) -> ScriptedChatModel:
    return ScriptedChatModel.from_replies(replies)


class TestStore:
    def test_round_trip_and_resume_bookkeeping(self, tmp_path):
        db = tmp_path / "runs.sqlite"
        with ResultStore(db) as store:
            run = store.start_run("r1", method="m", dataset="toy", backend="classic", model=None,
                                  config={"a": 1}, endpoints=["classic"], concurrency=2)  # fmt: skip
            ok = Assessment(
                image="x.png", score=3.5, backend="classic", rubric={"sharpness": "high"}
            )
            store.add_result(
                "r1", "toy", "x.png", ok, mos=4.0, mos_norm=4.2, seconds=0.1, endpoint="classic"
            )
            bad = Assessment.failure("server down", image="y.png")
            store.add_result(
                "r1", "toy", "y.png", bad, mos=2.0, mos_norm=2.6, seconds=0.1, error_kind="backend"
            )
            img = Assessment.failure("not an image", image="z.png")
            store.add_result(
                "r1", "toy", "z.png", img, mos=1.0, mos_norm=1.8, seconds=0.0, error_kind="image"
            )
            assert store.done_images("r1", "toy") == {
                "x.png",
                "z.png",
            }  # backend failures are retried
            # a finished image is never overwritten; a backend failure is replaced
            store.add_result(
                "r1", "toy", "x.png", Assessment(score=1.0), mos=4.0, mos_norm=4.2, seconds=0.1
            )
            store.add_result(
                "r1", "toy", "y.png", Assessment(score=2.0), mos=2.0, mos_norm=2.6, seconds=0.1
            )
            rows = {r["image"]: r for r in store.rows()}
            assert rows["x.png"]["score"] == 3.5 and rows["x.png"]["rubric"] == {
                "sharpness": "high"
            }
            assert (
                rows["y.png"]["score"] == 2.0
                and rows["y.png"]["attempts"] == 2
                and rows["y.png"]["error"] is None
            )
            assert rows["z.png"]["error_kind"] == "image" and rows["x.png"]["method"] == "m"
            store.add_wall_time("r1", 2.5, finished=True)
            again = store.start_run("r1", method="m", dataset="toy", backend="classic", model=None,
                                    config={"a": 1}, endpoints=["a", "b"], concurrency=4)  # fmt: skip
            assert (
                again.started_at == run.started_at
                and again.wall_s == 2.5
                and again.endpoints == ["a", "b"]
            )
        # a real SQLite file others can read
        con = sqlite3.connect(db)
        assert con.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 3
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    def test_unknown_error_kind_is_refused(self, tmp_path):
        with ResultStore(tmp_path / "db.sqlite") as store, pytest.raises(ValueError):
            store.add_result(
                "r", "d", "i", Assessment(), mos=1, mos_norm=1, seconds=0, error_kind="weird"
            )


class TestRunner:
    def test_classic_run_then_resume_assesses_nothing_twice(self, tmp_path):
        ds = make_dataset(tmp_path)
        ctx = make_context(max_rounds=1)
        with ResultStore(tmp_path / "runs.sqlite") as store:
            first = asyncio.run(
                run_dataset(
                    store,
                    ds,
                    {"classic": ctx},
                    method="classic",
                    concurrency=2,
                    limit=4,
                    progress=False,
                )
            )
            assert (first.assessed, first.skipped, first.failed) == (4, 0, 0)
            second = asyncio.run(
                run_dataset(
                    store, ds, {"classic": ctx}, method="classic", concurrency=2, progress=False
                )
            )
            assert (second.assessed, second.skipped) == (2, 4) and second.run_id == first.run_id
            rows = store.rows()
            assert len(rows) == 6 == len({r["image"] for r in rows})
            assert all(1 <= r["score"] <= 5 and r["backend"] == "classic" for r in rows)
            # the full trajectory is stored: steps and the whole conversation
            assert all(r["assessment"]["transcript"][1]["images"] == 1 for r in rows)
            assert [r["mos_norm"] for r in sorted(rows, key=lambda r: r["mos"])] == pytest.approx(
                [1.8, 2.2, 2.6, 3.0, 3.4, 3.8]
            )
            run = store.run(first.run_id)
            assert run.finished_at is not None and run.wall_s > 0

    def test_requests_spread_over_endpoints(self, tmp_path):
        ds = make_dataset(tmp_path)
        contexts = {
            "http://a/v1": make_context(max_rounds=0),
            "http://b/v1": make_context(max_rounds=0),
        }
        with ResultStore(tmp_path / "runs.sqlite") as store:
            summary = asyncio.run(
                run_dataset(store, ds, contexts, method="m", concurrency=2, progress=False)
            )
            served = {r["endpoint"] for r in store.rows()}
        assert summary.per_endpoint["http://a/v1"] >= 2 and summary.per_endpoint["http://b/v1"] >= 2
        assert served == {"http://a/v1", "http://b/v1"}

    def test_transient_errors_are_retried_then_stored_and_retried_on_resume(self, tmp_path):
        ds = make_dataset(tmp_path, n=1)

        def down(messages, kwargs):
            raise openai.APIConnectionError(request=httpx.Request("POST", "http://127.0.0.1:1/v1"))

        model = scripted([down, down, RUBRIC_REPLY, "<answer>4</answer>"])
        ctx = make_context(model=model, max_rounds=0)
        with ResultStore(tmp_path / "runs.sqlite") as store:
            s1 = asyncio.run(
                run_dataset(
                    store, ds, {"x": ctx}, method="m", retries=1, backoff=0.01, progress=False
                )
            )
            (row,) = store.rows()
            assert (
                s1.failed == 1 and row["error_kind"] == "server" and "unreachable" in row["error"]
            )
            s2 = asyncio.run(
                run_dataset(
                    store, ds, {"x": ctx}, method="m", retries=1, backoff=0.01, progress=False
                )
            )
            (row,) = store.rows()
            assert s2.assessed == 1 and row["score"] == 4.0 and row["attempts"] == 3

    def test_per_image_timeout(self, tmp_path):
        ds = make_dataset(tmp_path, n=1)

        def slow(messages, kwargs):
            time.sleep(1.0)
            return RUBRIC_REPLY

        ctx = make_context(model=scripted([slow, "<answer>3</answer>"]), max_rounds=0)
        with ResultStore(tmp_path / "runs.sqlite") as store:
            asyncio.run(
                run_dataset(
                    store, ds, {"x": ctx}, method="m", deadline=0.2, retries=0, progress=False
                )
            )
            (row,) = store.rows()
        assert row["error_kind"] == "timeout" and "deadline of 0.2 s" in row["error"]

    def test_unreadable_images_are_final_failures(self, tmp_path):
        ds = make_dataset(tmp_path, n=2)
        (tmp_path / "im1.png").write_bytes(b"garbage")
        with ResultStore(tmp_path / "runs.sqlite") as store:
            asyncio.run(
                run_dataset(store, ds, {"classic": make_context()}, method="c", progress=False)
            )
            assert store.done_images(make_run_id("c", "toy", {}), "toy") == {"im0.png", "im1.png"}
            bad = next(r for r in store.rows() if r["image"] == "im1.png")
        assert bad["error_kind"] == "image" and "not a recognised image format" in bad["error"]

    def test_progress_line(self):
        out = io.StringIO()
        bar = Progress(4, 1, stream=out, label="toy")
        for ok in (True, False, True):
            bar.update(ok)
        text = out.getvalue()
        assert "toy 4/4 (100%)" in text and "failed 1" in text and "img/s" in text and "ETA" in text
