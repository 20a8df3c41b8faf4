"""The served graph: ``langgraph dev`` hosting ``langgraph.json``'s ``tooliqa``, driven
through ``langgraph_sdk``, ``RemoteGraph`` and the server's MCP endpoint.

One server (a clean copy of the checkout, a free port) serves every test of the module.
Without the ``langgraph`` CLI in this environment the tests skip, unless
``TOOLIQA_REQUIRE_LANGGRAPH=1``, which turns the skip into a failure.
"""

from __future__ import annotations

import ast
import base64
import json
import operator
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from langchain_core.messages import AnyMessage, HumanMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.pregel.remote import RemoteGraph
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient
from typing_extensions import TypedDict

from tooliqa.tools import env_flag

from _support import RUBRIC_REPLY
from chat_stub import ChatStub
from langgraph_dev import GRAPH_ID, LangGraphDev, langgraph_executable, start_langgraph_dev
from vllm_server import REPO_ROOT, find_free_port

pytestmark = pytest.mark.integration

EXAMPLES = REPO_ROOT / "examples"
CTX = {"max_tool_rounds": 1}
INTERNAL = "An internal error occurred"


def _require_langgraph() -> bool:
    return env_flag("TOOLIQA_REQUIRE_LANGGRAPH")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LangGraphDev]:
    exe = langgraph_executable()
    if not exe.exists():
        msg = f"langgraph CLI not found ({exe}): install langgraph-cli[inmem]"
        if _require_langgraph():
            pytest.fail(f"{msg} (TOOLIQA_REQUIRE_LANGGRAPH=1)")
        pytest.skip(msg)
    log_path = tmp_path_factory.mktemp("langgraph") / "server.log"
    server = start_langgraph_dev(log_path=log_path)  # raises with the log tail
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def client(served: LangGraphDev) -> LangGraphClient:
    return get_client(url=served.url)


def image(name: str) -> Path:
    return EXAMPLES / f"{name}.jpg"


def b64(name: str) -> str:
    return base64.b64encode(image(name).read_bytes()).decode()


async def run(
    client: LangGraphClient,
    served: LangGraphDev,
    img: str,
    context: dict[str, Any] | None = CTX,
    thread_id: str | None = None,
) -> dict[str, Any]:
    """The assessment of a served run that must succeed (else: the error and the log tail)."""
    out = await client.runs.wait(
        thread_id, GRAPH_ID, input={"image": img}, context=context, raise_error=False
    )
    assert isinstance(out, dict), out
    assert "__error__" not in out, f"{out['__error__']}\nserver log:\n{served.log_tail(3000)}"
    return out["assessment"]


async def run_error(
    client: LangGraphClient, run_input: dict[str, Any], context: dict[str, Any] | None
) -> dict[str, str]:
    """The ``{"error": type, "message": ...}`` of a served run that must fail."""
    out = await client.runs.wait(
        None, GRAPH_ID, input=run_input, context=context, raise_error=False
    )
    assert isinstance(out, dict) and "__error__" in out, f"expected a run error, got {out}"
    err = out["__error__"]
    assert INTERNAL not in err["message"], err
    return err


def test_ok(served: LangGraphDev) -> None:
    resp = httpx.get(f"{served.url}/ok", timeout=10)
    assert resp.status_code == 200 and resp.json()["ok"] is True


async def test_schemas(client: LangGraphClient) -> None:
    # /assistants/{id}/schemas takes the assistant's UUID, not the graph id (HTTP 422)
    (assistant,) = await client.assistants.search(graph_id=GRAPH_ID)
    schemas = await client.assistants.get_schemas(assistant["assistant_id"])
    for key in ("input_schema", "output_schema", "context_schema", "state_schema"):
        assert schemas[key] is not None, key
    assert "image" in schemas["input_schema"]["properties"]
    assert "image" in schemas["input_schema"]["required"]
    assert set(schemas["output_schema"]["properties"]) == {"assessment"}
    assert {"max_tool_rounds", "server", "server_model"} <= set(
        schemas["context_schema"]["properties"]
    )


async def test_path_base64_and_data_url_agree_with_in_process(
    client: LangGraphClient, served: LangGraphDev
) -> None:
    from tooliqa.api import AppContext, graph

    name = "coffee_blurred"
    text = b64(name)
    forms = {
        "path": str(image(name)),
        "base64": text,
        "data URL": f"data:image/jpeg;base64,{text}",
    }
    served_runs = {form: await run(client, served, img) for form, img in forms.items()}
    local = (await graph.ainvoke({"image": image(name).read_bytes()}, context=AppContext(**CTX)))[
        "assessment"
    ]
    assert local["backend"] == "classic" and local["score"] is not None
    for form, got in served_runs.items():
        assert got["score"] == local["score"], form
        assert got["rubric"] == local["rubric"], form
        assert got["backend"] == "classic" and got["error"] is None, form


def _check_small(events: list[Any], limit: int = 64 * 1024) -> None:
    for ev in events:
        text = json.dumps(ev.data)
        assert len(text) < limit, (ev.event, len(text))
        assert "data:image" not in text and "/9j/" not in text, (ev.event, text[:300])


async def test_stream_updates_and_custom(client: LangGraphClient) -> None:
    events = [
        ev
        async for ev in client.runs.stream(
            None,
            GRAPH_ID,
            input={"image": b64("astronaut_pristine")},  # it takes a tool round
            context=CTX,
            stream_mode=["updates", "custom"],
        )
    ]
    kinds = {ev.event for ev in events}
    assert "error" not in kinds, [ev.data for ev in events if ev.event == "error"]
    assert {"updates", "custom"} <= kinds
    custom = [ev.data for ev in events if ev.event == "custom"]
    types = [c["type"] for c in custom]
    assert {"rubric", "tool", "final"} <= set(types), types
    assert types.index("rubric") < types.index("final")
    final = custom[types.index("final")]
    assert 1.0 <= final["score"] <= 5.0
    _check_small(events)


async def test_stream_messages_are_small(client: LangGraphClient) -> None:
    # the messages name their images by reference: no pixels stream back
    events = [
        ev
        async for ev in client.runs.stream(
            None,
            GRAPH_ID,
            input={"image": b64("coffee_blurred")},
            context=CTX,
            stream_mode="messages",
        )
    ]
    assert all(ev.event != "error" for ev in events), [ev.data for ev in events]
    assert any(ev.event.startswith("messages") for ev in events)
    _check_small(events)


def _untimed(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in step.items() if k != "elapsed_ms"} for step in steps]


async def test_one_thread_many_images(client: LangGraphClient, served: LangGraphDev) -> None:
    names = ["astronaut_pristine", "coffee_blurred", "chelsea_noisy"]
    thread = await client.threads.create()
    on_thread = [await run(client, served, b64(n), thread_id=thread["thread_id"]) for n in names]
    fresh = [await run(client, served, b64(n)) for n in names]
    assert len({a["score"] for a in fresh}) == 3  # three different images
    for name, a, b in zip(names, on_thread, fresh, strict=True):
        for key in ("score", "rubric", "errors", "error", "usage"):
            assert a[key] == b[key], (name, key)
        assert _untimed(a["steps"]) == _untimed(b["steps"]), name
    state = await client.threads.get_state(thread["thread_id"])
    values = state["values"]
    assert isinstance(values, dict)
    assert values["assessment"]["score"] == fresh[-1]["score"]
    assert values["assessment"]["rubric"] == fresh[-1]["rubric"]


async def test_response_is_small(client: LangGraphClient, served: LangGraphDev) -> None:
    out = await client.runs.wait(
        None,
        GRAPH_ID,
        input={"image": b64("coffee_blurred")},
        context=CTX,
        raise_error=False,
    )
    assert "assessment" in out, out
    size = len(json.dumps(out))
    assert size < 32 * 1024, size


async def test_bad_image_text(client: LangGraphClient) -> None:
    err = await run_error(client, {"image": "not an image!!"}, None)
    assert err["error"] == "ImageError", err
    assert "base64" in err["message"], err


async def test_missing_file(client: LangGraphClient) -> None:
    err = await run_error(client, {"image": "/nonexistent/photo.jpg"}, None)
    assert err["error"] == "ImageError", err
    assert "/nonexistent/photo.jpg" in err["message"] and "no such file" in err["message"]


async def test_setting_out_of_range(client: LangGraphClient) -> None:
    err = await run_error(client, {"image": b64("coffee_blurred")}, {"max_tool_rounds": 99})
    assert err["error"] == "ValueError", err
    assert "max_tool_rounds" in err["message"] and "8" in err["message"], err


@pytest.mark.parametrize("with_model", [True, False], ids=["server_model", "no_server_model"])
async def test_unreachable_server(client: LangGraphClient, with_model: bool) -> None:
    url = f"http://127.0.0.1:{find_free_port()}/v1"  # nothing listens there
    context: dict[str, Any] = {"server": url, **CTX}
    if with_model:
        context["server_model"] = "x"
    err = await run_error(client, {"image": b64("coffee_blurred")}, context)
    assert err["error"] == "BackendError", err
    message = err["message"].lower()
    assert "unreachable" in message or "cannot reach" in message, err
    if not with_model:  # the model list is asked first, at the URL it names
        assert url in err["message"], err


async def test_server_replying_http_500(client: LangGraphClient) -> None:
    with ChatStub([]) as stub:  # no replies: every chat request gets HTTP 500
        err = await run_error(
            client,
            {"image": b64("coffee_blurred")},
            {"server": stub.base_url, "server_model": stub.model, **CTX},
        )
        assert stub.requests, "the served graph never reached the stub"
    assert err["error"] == "BackendError", err
    assert "500" in err["message"] and "ran out of replies" in err["message"], err


async def test_server_replying_garbage(client: LangGraphClient, served: LangGraphDev) -> None:
    # unusable replies are a failed assessment (a value with a reason), not a run error
    with ChatStub(["garbage, no tags, no score"] * 6) as stub:
        got = await run(
            client,
            served,
            b64("coffee_blurred"),
            {"server": stub.base_url, "server_model": stub.model, **CTX},
        )
    assert got["score"] is None and got["backend"] == "openai"
    assert got["error"] and "no valid score" in got["error"], got["error"]


async def test_a_server_named_without_its_model(
    client: LangGraphClient, served: LangGraphDev
) -> None:
    """Only ``server`` in the context: the graph asks the server for its model (a blocking
    request, which the dev server's blocking-call guard would fail on its event loop) and
    assesses with it."""
    with ChatStub([RUBRIC_REPLY, "<answer>3.2</answer>"]) as stub:
        got = await run(
            client, served, b64("coffee_blurred"), {"server": stub.base_url, "max_tool_rounds": 0}
        )
    assert got["score"] == 3.2 and got["backend"] == "openai" and got["model"] == stub.model


async def test_missing_image_key(client: LangGraphClient) -> None:
    err = await run_error(client, {"image_name": "x.jpg"}, None)
    assert err["error"] == "ImageError", err
    assert "no image" in err["message"] and "'image'" in err["message"], err


async def test_setting_of_wrong_type(client: LangGraphClient) -> None:
    err = await run_error(client, {"image": b64("coffee_blurred")}, {"max_tool_rounds": "x"})
    assert "max_tool_rounds must be int, not str" in err["message"], err
    err = await run_error(client, {"image": b64("coffee_blurred")}, {"view_format": "GIF"})
    assert "view_format must be one of" in err["message"], err


class ParentState(TypedDict, total=False):
    image: str
    assessment: dict[str, Any]
    messages: Annotated[list[AnyMessage], add_messages]
    plan: list[str]
    steps: Annotated[list[str], operator.add]


async def test_remote_graph_as_a_node(client: LangGraphClient, served: LangGraphDev) -> None:
    builder = StateGraph(ParentState)
    builder.add_node("assess", RemoteGraph(GRAPH_ID, url=served.url))
    builder.add_edge(START, "assess")
    builder.add_edge("assess", END)
    parent = builder.compile()
    text = b64("coffee_blurred")
    hello = HumanMessage("assess this", id="m1")
    out = await parent.ainvoke(
        {"image": text, "messages": [hello], "plan": ["look"], "steps": ["s0"]}
    )
    expected = await run(client, served, text, context=None)  # the same default context
    assert out["assessment"]["score"] == expected["score"]
    assert out["assessment"]["rubric"] == expected["rubric"]
    assert out["messages"] == [hello]
    assert out["plan"] == ["look"]
    assert out["steps"] == ["s0"]
    assert out["image"] == text


async def test_mcp_tools_list_and_call(client: LangGraphClient, served: LangGraphDev) -> None:
    headers = {"Accept": "application/json, text/event-stream"}

    async def rpc(http: httpx.AsyncClient, ident: int, method: str, **params: Any) -> Any:
        body = {"jsonrpc": "2.0", "id": ident, "method": method, "params": params}
        resp = await http.post(f"{served.url}/mcp", json=body, headers=headers)
        assert resp.status_code == 200, resp.text[:500]
        reply = resp.json()
        assert "error" not in reply, reply
        return reply["result"]

    text = b64("coffee_blurred")
    async with httpx.AsyncClient(timeout=60) as http:
        init = await rpc(
            http,
            1,
            "initialize",
            protocolVersion="2025-03-26",
            capabilities={},
            clientInfo={"name": "tooliqa-tests", "version": "0"},
        )
        assert "tools" in init["capabilities"]
        tools = {t["name"]: t for t in (await rpc(http, 2, "tools/list"))["tools"]}
        assert "image" in tools[GRAPH_ID]["inputSchema"]["required"]
        # "context" beside "arguments" is langgraph-api's own extension of tools/call
        called = await rpc(
            http, 3, "tools/call", name=GRAPH_ID, arguments={"image": text}, context=CTX
        )
        failed = await rpc(
            http, 4, "tools/call", name=GRAPH_ID, arguments={"image": "not an image!!"}
        )
    assert not called.get("isError"), called
    # the server returns repr() of the output (a Python literal), not JSON
    result = ast.literal_eval(called["content"][0]["text"])
    expected = await run(client, served, text)
    assert result["assessment"]["score"] == expected["score"]
    assert failed["isError"] is True
    assert "ImageError" in failed["content"][0]["text"]  # the server sends the type only
