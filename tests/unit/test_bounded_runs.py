"""Bounded time and size for one assessment, and runs that never stop on one image:
the tool-round cap, the reply-size cap, the per-image deadline, internal errors kept
out of the terminal, and claims that keep two evaluations of one run apart."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from tooliqa.api import aassess, assess_many, make_context
from tooliqa.eval.runner import make_run_id, run_dataset
from tooliqa.eval.store import ResultStore
from tooliqa.failures import DeadlineExceeded
from tooliqa.graph import Context
from tooliqa.graph.context import MAX_TOOL_ROUNDS
from tooliqa.graph.nodes import MAX_REPLY_CHARS
from tooliqa.graph.testing import ScriptedChatModel

from _support import RUBRIC_REPLY, synthetic_dataset


def test_tool_rounds_are_capped():
    model = ScriptedChatModel.from_replies([])
    Context(model=model, max_tool_rounds=MAX_TOOL_ROUNDS)
    with pytest.raises(ValueError, match=f"between 0 and {MAX_TOOL_ROUNDS}"):
        Context(model=model, max_tool_rounds=300)
    with pytest.raises(ValueError):
        make_context(max_rounds=MAX_TOOL_ROUNDS + 1)


def test_an_over_long_reply_is_malformed_and_not_sent_back_whole(image_bytes):
    huge = "<answer>2</answer>" + "blah " * 40_000  # an answer, then 200 KB of junk
    seen: list[int] = []

    def final(messages, kwargs):
        seen.append(sum(len(str(m.content)) for m in messages if m.type == "ai"))
        return "<answer>4</answer>"

    model = ScriptedChatModel.from_replies([RUBRIC_REPLY, huge, final])
    a = asyncio.run(aassess(image_bytes, model=model, max_rounds=0))
    assert a.score == 4.0  # the repair prompt's answer, not the "2" inside the cut reply
    turn = next(t for t in a.protocol if t.action == "malformed")
    assert turn.repair_needed and "over the limit" in (turn.reason or "")
    # the request after the long reply carried at most the kept part of it
    assert seen and MAX_REPLY_CHARS <= seen[0] < MAX_REPLY_CHARS + 5_000
    assert all(len(str(m.get("content", ""))) <= MAX_REPLY_CHARS + 100 for m in a.transcript)


def test_the_deadline_covers_the_whole_assessment(image_bytes):
    def slow(messages, kwargs):
        time.sleep(0.4)
        return RUBRIC_REPLY

    model = ScriptedChatModel.from_replies([slow, slow, "<answer>3</answer>"])
    t0 = time.perf_counter()
    with pytest.raises(DeadlineExceeded, match=r"deadline of 0\.3 s") as info:
        asyncio.run(aassess(image_bytes, model=model, max_rounds=0, deadline=0.3))
    assert info.value.kind == "timeout" and time.perf_counter() - t0 < 5
    with pytest.raises(ValueError):
        asyncio.run(aassess(image_bytes, model=model, deadline=0))


def test_assess_many_turns_every_exception_into_a_classified_failure(image_bytes):
    def bug(messages, kwargs):
        raise KeyError("a bug")

    ctx = make_context(model=ScriptedChatModel.from_replies([bug]), max_rounds=0)

    async def collect():
        return [a async for _, a in assess_many([image_bytes, 42], context=ctx)]

    results = asyncio.run(collect())
    kinds = sorted(a.error_kind for a in results)
    assert kinds == ["image", "internal"]
    assert any("KeyError" in a.error for a in results)


def test_an_internal_error_is_logged_with_its_traceback_and_the_run_goes_on(tmp_path, caplog):
    ds = synthetic_dataset(tmp_path, 3)

    def bug(messages, kwargs):
        raise ZeroDivisionError("boom")

    replies = [bug, *([RUBRIC_REPLY, "<answer>3</answer>"] * 2)]  # one image per turn pair
    ctx = make_context(model=ScriptedChatModel.from_replies(replies), max_rounds=0)
    with (
        ResultStore(tmp_path / "runs.sqlite") as store,
        caplog.at_level(logging.ERROR, "tooliqa.eval"),
    ):
        summary = asyncio.run(
            run_dataset(store, ds, {"x": ctx}, method="m", concurrency=1, progress=False)
        )
        rows = {r["image"]: r for r in store.rows()}
    assert len(rows) == 3 and summary.failed == 1 and summary.unscored == 1
    (bad,) = [r for r in rows.values() if r["score"] is None]
    assert bad["error_kind"] == "internal" and "ZeroDivisionError: boom" in bad["error"]
    assert summary.failures == {"internal": (1, "ZeroDivisionError: boom")}
    (record,) = [r for r in caplog.records if r.name == "tooliqa.eval"]
    assert record.exc_info and record.exc_info[0] is ZeroDivisionError


class TestClaims:
    def test_a_live_claim_keeps_others_out_and_a_dead_one_lapses(self, tmp_path):
        def set_claim(image, **values):
            cols = ", ".join(f"{k} = ?" for k in values)
            with store._lock, store._conn:
                store._conn.execute(
                    f"UPDATE claims SET {cols} WHERE image = ?", (*values.values(), image)
                )

        with ResultStore(tmp_path / "runs.sqlite") as store:
            now = time.time()
            assert store.claim("r", "d", "a.png", "me", lease=60, since=now) == "claimed"
            assert store.claim("r", "d", "a.png", "me", lease=60, since=now) == "claimed"
            assert store.claim("r", "d", "a.png", "other", lease=60, since=now) == "held"
            # a claim by a process that is gone (pid 2**22 + 1 does not exist) lapses
            set_claim("a.png", pid=2**22 + 1)
            assert store.claim("r", "d", "a.png", "other", lease=60, since=now) == "claimed"
            # ... and so does one whose pid now belongs to another process (a restart)
            assert store.claim("r", "d", "b.png", "me", lease=60, since=now) == "claimed"
            set_claim("b.png", started="1")
            assert store.claim("r", "d", "b.png", "other", lease=60, since=now) == "claimed"
            # a claim from another machine holds while it is renewed, then lapses
            assert store.claim("r", "d", "c.png", "me", lease=60, since=now) == "claimed"
            set_claim("c.png", owner="them", host="elsewhere/boot", claimed_at=now - 30)
            assert store.claim("r", "d", "c.png", "other", lease=60, since=now) == "held"
            set_claim("c.png", claimed_at=now - 61)
            store.renew("r", "me")  # renewals are per owner: the one elsewhere is not renewed
            assert store.claim("r", "d", "c.png", "other", lease=60, since=now) == "claimed"
            store.release("r", "other")
            assert store.claim("r", "d", "a.png", "third", lease=60, since=now) == "claimed"

    def test_an_image_stored_meanwhile_is_done(self, tmp_path):
        ds = synthetic_dataset(tmp_path, 1)
        with ResultStore(tmp_path / "runs.sqlite") as store:
            since = time.time()
            asyncio.run(
                run_dataset(store, ds, {"classic": make_context()}, method="c", progress=False)
            )
            run_id = make_run_id("c", ds.name, {})
            image = ds.samples[0].image
            assert store.claim(run_id, ds.name, image, "late", lease=60, since=since) == "done"


def test_failed_images_of_any_kind_are_retried_when_asked(tmp_path):
    ds = synthetic_dataset(tmp_path, 1)

    def refused(messages, kwargs):
        import httpx
        import openai

        request = httpx.Request("POST", "http://127.0.0.1:1/v1")
        raise openai.NotFoundError(
            "no such model", response=httpx.Response(404, request=request), body=None
        )

    model = ScriptedChatModel.from_replies([refused, RUBRIC_REPLY, "<answer>4</answer>"])
    ctx = make_context(model=model, max_rounds=0)
    with ResultStore(tmp_path / "runs.sqlite") as store:
        s1 = asyncio.run(run_dataset(store, ds, {"x": ctx}, method="m", progress=False))
        s2 = asyncio.run(run_dataset(store, ds, {"x": ctx}, method="m", progress=False))
        s3 = asyncio.run(
            run_dataset(store, ds, {"x": ctx}, method="m", retry_failed=True, progress=False)
        )
        (row,) = store.rows()
    assert s1.failures["client"][0] == 1 and "HTTP 404" in s1.failures["client"][1]
    assert s2.assessed == 0 and not s2.complete  # final: not retried on resume
    assert s3.assessed == 1 and s3.complete and row["score"] == 4.0 and row["attempts"] == 2


def test_folders_with_loops_and_over_long_names_are_per_image_problems(tmp_path, capsys):
    from PIL import Image

    from tooliqa.api import image_files
    from tooliqa.cli import main

    Image.new("RGB", (64, 64), (90, 120, 150)).save(tmp_path / "ok.png")
    (tmp_path / "loop1.png").symlink_to(tmp_path / "loop2.png")
    (tmp_path / "loop2.png").symlink_to(tmp_path / "loop1.png")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "up").symlink_to(tmp_path)  # a folder loop: not followed
    long_name = tmp_path / ("a" * 300 + ".png")
    found = image_files([tmp_path, long_name])
    assert sorted(p.name for p in found) == sorted(
        ["loop1.png", "loop2.png", "ok.png", long_name.name]
    )
    assert main(["assess", str(tmp_path), str(long_name), "--json"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    import json

    records = {Path(r["image"]).name: r for r in map(json.loads, lines)}
    assert records["ok.png"]["score"] is not None
    assert (
        records["loop1.png"]["error_kind"] == "image"
        and "symbolic links" in records["loop1.png"]["error"]
    )
    assert records[long_name.name]["error_kind"] == "image"


def test_a_streamed_run_has_the_same_deadline(image_bytes):
    from tooliqa.api import graph, stream_within

    def slow(messages, kwargs):
        time.sleep(0.3)
        return RUBRIC_REPLY

    ctx = make_context(model=ScriptedChatModel.from_replies([slow, slow, slow]), max_rounds=0)

    async def run(deadline):
        stream = graph.astream({"image": image_bytes}, context=ctx, stream_mode="updates")
        return [chunk async for chunk in stream_within(stream, deadline)]

    t0 = time.perf_counter()
    with pytest.raises(DeadlineExceeded):
        asyncio.run(run(0.2))
    assert time.perf_counter() - t0 < 5
    ctx = make_context(
        model=ScriptedChatModel.from_replies([RUBRIC_REPLY, "<answer>3</answer>"]), max_rounds=0
    )
    chunks = asyncio.run(run(30))
    assert "finalize" in chunks[-1]


def test_cancelling_a_bounded_stream_is_a_clean_cancellation():
    from tooliqa.api import stream_within

    closed = []

    async def slow():
        try:
            while True:
                await asyncio.sleep(10)
                yield 1
        finally:
            closed.append(True)

    async def consume():
        async for _ in stream_within(slow(), 60):
            pass

    async def main():
        task = asyncio.create_task(consume())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert closed == [True]


def test_limit_flags_share_the_library_defaults_and_refuse_nonsense(tmp_path, capsys):
    from tooliqa.api import DEFAULT_DEADLINE
    from tooliqa.backends.openai_compat import ServerConfig
    from tooliqa.cli import build_parser, main

    for command in (["assess", "x.png"], ["eval", "--dataset", "d=l.csv"]):
        args = build_parser().parse_args(command)
        assert args.deadline == DEFAULT_DEADLINE and args.timeout == ServerConfig.timeout
        assert args.retries == ServerConfig.max_retries and args.backoff == ServerConfig.backoff
    image = tmp_path / "a.png"
    image.write_bytes(b"")
    for flag in ("--deadline", "--timeout"):
        for bad in ("nan", "0", "-1"):
            assert main(["assess", str(image), flag, bad]) == 2
            assert "must be positive" in capsys.readouterr().err
