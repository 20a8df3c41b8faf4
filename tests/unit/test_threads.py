"""Runs on one thread (a checkpointer and one ``thread_id``) each assess their own input:
nothing of an earlier run (score, rubric, steps, messages, plan, query) leaks into a
later one."""

from __future__ import annotations

import asyncio
import operator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from langchain_core.messages import AnyMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph.message import add_messages
from typing_extensions import TypedDict

from tooliqa.api import AppContext, make_context
from tooliqa.graph import Context, compile_graph

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
IMAGES = ["astronaut_pristine.jpg", "coffee_blurred.jpg", "chelsea_noisy.jpg"]


class Parent(TypedDict, total=False):
    """A parent graph's state whose keys clash with the assessment graph's."""

    image: bytes
    messages: Annotated[list[AnyMessage], add_messages]
    query: str
    question: str
    plan: list[str]
    steps: Annotated[list[str], operator.add]
    assessment: dict[str, Any]


@dataclass
class ParentContext:
    """A parent's own context class, naming the assessment's context in ``tooliqa``."""

    user: str = "someone"
    tooliqa: AppContext = field(default_factory=lambda: AppContext(max_tool_rounds=0))


def _inputs(name: str, query: str | None = None) -> dict:
    out: dict = {"image": (EXAMPLES / name).read_bytes(), "image_name": name}
    if query:
        out["image_question"] = query
    return out


def test_each_run_on_a_thread_assesses_its_own_image():
    ctx = make_context(max_rounds=1)
    fresh_graph = compile_graph(context_schema=AppContext)
    threaded = compile_graph(context_schema=AppContext, checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "one"}}

    async def run():
        fresh = [await fresh_graph.ainvoke(_inputs(n), context=ctx) for n in IMAGES]
        reused = [await threaded.ainvoke(_inputs(n), config=config, context=ctx) for n in IMAGES]
        return fresh, reused

    fresh, reused = asyncio.run(run())
    assert len({f["assessment"]["score"] for f in fresh}) == 3  # three different images
    for f, r in zip(fresh, reused, strict=True):
        assert r["assessment"]["image"] == f["assessment"]["image"]
        assert r["assessment"]["score"] == f["assessment"]["score"]
        assert r["assessment"]["rubric"] == f["assessment"]["rubric"]
        assert len(r["steps"]) == len(f["steps"]) and len(r["messages"]) == len(f["messages"])
        assert r["usage"] == f["usage"] and len(r["protocol"]) == len(f["protocol"])


def test_a_question_does_not_carry_over_to_the_next_run():
    ctx = make_context(max_rounds=1)
    threaded = compile_graph(context_schema=AppContext, checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "q"}}

    async def run():
        asked = await threaded.ainvoke(
            _inputs(IMAGES[1], "Is the cup sharp?"), config=config, context=ctx
        )
        plain = await threaded.ainvoke(_inputs(IMAGES[1]), config=config, context=ctx)
        return asked, plain

    asked, plain = asyncio.run(run())
    assert asked["assessment"]["query"] == "Is the cup sharp?"
    assert asked["assessment"]["query_answer"] is not None
    assert plain["assessment"]["query"] is None and plain["assessment"]["query_answer"] is None
    assert plain.get("plan") is None


class TestImageAsText:
    """What a JSON client (Studio, langgraph_sdk, RemoteGraph) can send: base64 or a data URL."""

    def _score(self, image):
        from tooliqa.api import graph

        return asyncio.run(graph.ainvoke({"image": image}))["assessment"]

    def test_base64_and_data_urls_score_as_the_bytes_do(self):
        import base64

        data = (EXAMPLES / IMAGES[1]).read_bytes()
        text = base64.b64encode(data).decode()
        want = self._score(data)["score"]
        assert self._score(text)["score"] == want
        assert self._score(f"data:image/jpeg;base64,{text}")["score"] == want
        wrapped = "\n".join(text[i : i + 76] for i in range(0, len(text), 76))  # MIME style
        assert self._score(wrapped)["score"] == want

    def test_paths_and_urls_are_refused_unless_the_process_allows_files(self, monkeypatch):
        import pytest

        from tooliqa.tools import ImageError, image_bytes

        path = str(EXAMPLES / IMAGES[1])
        for value in (path, "file://" + path, "https://example.com/x.jpg"):
            with pytest.raises(ImageError, match="send the image itself"):
                self._score(value)
        monkeypatch.setenv("TOOLIQA_ALLOW_IMAGE_FILES", "1")
        assert 1 <= self._score(path)["score"] <= 5
        assert (
            image_bytes("file://" + path, allow_files=True) == (EXAMPLES / IMAGES[1]).read_bytes()
        )

    def test_bad_text_is_a_clear_image_error(self):
        import pytest

        from tooliqa.tools import ImageError, ImageLimits, image_bytes

        with pytest.raises(ImageError, match="not valid base64"):
            image_bytes("not an image at all!")
        with pytest.raises(ImageError, match="over the limit"):
            image_bytes("A" * 4000, ImageLimits(max_bytes=1000))
        with pytest.raises(ImageError, match="not int"):
            image_bytes(42)  # type: ignore[arg-type]


def test_the_context_has_a_json_schema_and_can_arrive_as_json():
    import base64
    import json

    from tooliqa.api import graph

    schema = graph.get_context_jsonschema()
    assert schema and "model" not in schema["properties"]  # a live model is in-process only
    assert {"server", "server_model", "max_tool_rounds", "image_limits"} <= set(
        schema["properties"]
    )
    json.dumps(schema)
    data = base64.b64encode((EXAMPLES / IMAGES[1]).read_bytes()).decode()
    context = {"max_tool_rounds": 0, "enabled_tools": [], "image_limits": {"max_bytes": 5_000_000}}
    out = asyncio.run(graph.ainvoke({"image": data}, context=context))
    assert out["assessment"]["backend"] == "classic" and out["assessment"]["steps"] == []


def test_as_a_subgraph_only_the_assessment_reaches_the_parent():
    """A parent with keys of the same names and its own context class: the served graph
    (``tooliqa.api.graph``) gives back the assessment and nothing else."""
    from langchain_core.messages import HumanMessage
    from langgraph.graph import START, StateGraph

    from tooliqa.api import graph

    builder = StateGraph(Parent, context_schema=ParentContext)
    builder.add_node("assess", graph)
    builder.add_edge(START, "assess")
    parent = builder.compile()
    before = {
        "image": (EXAMPLES / IMAGES[1]).read_bytes(),
        "messages": [HumanMessage(content="hi", id="m1")],
        "query": "find me a hotel in Lisbon",  # the parent's own: no question about the image
        "question": "what next?",
        "plan": ["a", "b"],
        "steps": ["parent step"],
    }
    for context in (ParentContext(), None):
        out = asyncio.run(parent.ainvoke(before, context=context))
        assert [m.content for m in out["messages"]] == ["hi"]
        assert out["plan"] == ["a", "b"] and out["steps"] == ["parent step"]
        assert out["query"] == before["query"] and out["question"] == before["question"]
        assert out["assessment"]["query"] is None and out["assessment"]["query_answer"] is None
        assert out["assessment"]["backend"] == "classic"
        # the parent's context names the graph's own in its ``tooliqa`` field: used
        assert out["assessment"]["steps"] == [] or context is None


def test_interrupt_before_the_tool_edit_the_call_and_resume():
    """LangGraph's human-in-the-loop: stop before ``tool``, read the pending call, resume
    with ``Command(update=...)`` carrying the edited call; the edited call is the one that
    runs. (``update_state`` alone would end the run: ``decide`` routes by ``Command``, so
    an update written as ``decide`` has no static edge to ``tool``.)"""
    from langgraph.types import Command

    from tooliqa.graph.testing import ScriptedChatModel, tool_call_message

    from _support import RUBRIC_REPLY

    model = ScriptedChatModel.from_replies(
        [RUBRIC_REPLY, tool_call_message("magnifier", {"bbox_2d": [0, 0, 500, 500]}),
         "<answer>3.5</answer>"]
    )  # fmt: skip
    ctx = Context(model=model, max_tool_rounds=1)
    g = compile_graph(checkpointer=InMemorySaver())
    g.interrupt_before_nodes = ["tool"]
    config = {"configurable": {"thread_id": "hitl"}}

    async def run():
        await g.ainvoke(_inputs(IMAGES[1]), config=config, context=ctx)
        snapshot = await g.aget_state(config)
        assert snapshot.next == ("tool",)
        pending = dict(snapshot.values["pending"])
        assert pending["name"] == "magnifier" and pending["args"]["bbox_2d"] == [0, 0, 500, 500]
        pending["args"] = {"bbox_2d": [500, 500, 1000, 1000]}  # a person moves the box
        return await g.ainvoke(Command(update={"pending": pending}), config=config, context=ctx)

    out = asyncio.run(run())
    (step,) = out["assessment"]["steps"]
    assert step["ok"] and step["args"]["bbox"] == [500, 500, 1000, 1000]
    assert out["assessment"]["score"] == 3.5


def test_an_unknown_context_setting_is_named_in_the_error():
    import pytest

    from tooliqa.api import graph

    with pytest.raises(ValueError, match=r"unknown context setting\(s\) \['tempreature'\]"):
        asyncio.run(graph.ainvoke({"image": b"x"}, context={"tempreature": 0.7}))
    with pytest.raises(ValueError, match=r"known: .*max_tool_rounds"):
        Context(max_rounds=2)


def _checkpoint_bytes(db: Path) -> tuple[list[bytes], list[bytes]]:
    import sqlite3

    with sqlite3.connect(db) as con:
        checkpoints = [r[0] for r in con.execute("select checkpoint from checkpoints")]
        writes = [r[0] for r in con.execute("select value from writes")]
    return checkpoints, writes


def test_checkpoints_hold_references_not_pixels(tmp_path):
    """A 512x512 JPEG (about 70 KB) with one magnifier call, in a real SQLite checkpointer:
    given as a reference (what ``aassess`` passes), no checkpoint or write holds pixels and
    the whole assessment stores under 64 KB; given as bytes, only the input's own records
    hold them (LangGraph keeps a run's input as given) and every later checkpoint is small."""
    import io

    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
    from PIL import Image

    from tooliqa.graph.testing import ScriptedChatModel, tool_call_message
    from tooliqa.tools import BLOBS

    from _support import RUBRIC_REPLY

    with Image.open(EXAMPLES / IMAGES[0]) as im:
        buf = io.BytesIO()
        im.convert("RGB").resize((512, 512)).save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    assert len(data) > 40_000

    async def run(db: Path, image: Any) -> dict:
        model = ScriptedChatModel.from_replies(
            [RUBRIC_REPLY, tool_call_message("magnifier", {"bbox_2d": [0, 0, 500, 500]}),
             "<answer>3.5</answer>"]
        )  # fmt: skip
        async with AsyncSqliteSaver.from_conn_string(str(db)) as saver:
            g = compile_graph(checkpointer=saver)
            config = {"configurable": {"thread_id": "size"}}
            return await g.ainvoke({"image": image}, config=config, context=Context(model=model))

    def holds_pixels(blob: bytes) -> bool:
        return data[1000:1064] in blob

    out = asyncio.run(run(tmp_path / "ref.sqlite", BLOBS.put(data)))
    assert out["assessment"]["score"] == 3.5 and len(out["assessment"]["steps"]) == 1
    checkpoints, writes = _checkpoint_bytes(tmp_path / "ref.sqlite")
    assert len(checkpoints) >= 6
    assert not any(holds_pixels(b) for b in checkpoints + writes)
    assert sum(map(len, checkpoints + writes)) < 64 * 1024
    # the view and the model's image are still to be had in this process
    assert BLOBS.get(out["steps"][0]["view"]).startswith(b"\x89PNG")

    asyncio.run(run(tmp_path / "bytes.sqlite", data))
    checkpoints, writes = _checkpoint_bytes(tmp_path / "bytes.sqlite")
    with_pixels = [i for i, b in enumerate(checkpoints) if holds_pixels(b)]
    assert with_pixels == [0, 1]  # the input, and the state before the first node read it
    assert max(len(b) for b in checkpoints[2:]) < 16 * 1024
    assert sum(holds_pixels(b) for b in writes) == 1  # the input's write
