"""Pixels by reference (tooliqa.tools.blobs), images fetched from URLs (tooliqa.tools.fetch)
against a real local HTTP server, and the served context's model built off the event loop."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from langchain_core.messages import HumanMessage

from tooliqa.tools import (
    BlobStore,
    ImageError,
    ImageLimits,
    fetch_image_bytes,
    image_bytes,
    with_pixels,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
JPEG = (EXAMPLES / "coffee_blurred.jpg").read_bytes()


class TestBlobStore:
    def test_a_reference_names_the_bytes_and_nothing_else(self):
        store = BlobStore(max_bytes=10_000)
        ref = store.put(b"\x89PNG\r\n\x1a\nabc")
        assert (
            ref.startswith("tooliqa-blob:sha256:") and len(ref) == len("tooliqa-blob:sha256:") + 64
        )
        assert store.put(b"\x89PNG\r\n\x1a\nabc") == ref  # content-addressed
        assert store.get(ref) == b"\x89PNG\r\n\x1a\nabc"
        for bad in (
            "tooliqa-blob:sha256:xyz",
            "tooliqa-blob:sha256:" + "0" * 64,
            "data:image/png;base64,AA",
        ):
            with pytest.raises(ImageError):
                store.get(bad)

    def test_the_least_recently_used_go_first_within_the_budget(self):
        store = BlobStore(max_bytes=250, keep_seconds=0)
        a, b = store.put(b"a" * 100), store.put(b"b" * 100)
        store.get(a)  # a is now the most recent
        c = store.put(b"c" * 100)
        assert a in store and c in store and b not in store
        assert store.held_bytes == 200
        with pytest.raises(ImageError, match="no longer held by this process"):
            store.get(b)
        big = store.put(b"d" * 1000)  # over the budget alone: kept, the rest goes
        assert big in store and a not in store and store.held_bytes == 1000

    def test_messages_get_data_urls_for_the_call_and_stay_as_they_were(self):
        store = BlobStore(max_bytes=1 << 20)
        ref = store.put(JPEG)
        message = HumanMessage(
            content=[
                {"type": "image_url", "image_url": {"url": ref}},
                {"type": "text", "text": "x"},
            ]
        )
        (sent,) = with_pixels([message], store)
        url = sent.content[0]["image_url"]["url"]
        assert url.startswith("data:image/jpeg;base64,")
        assert base64.b64decode(url.split(",", 1)[1]) == JPEG
        assert message.content[0]["image_url"]["url"] == ref  # the state's copy is untouched
        assert sent.content[1] == {"type": "text", "text": "x"}

    def test_an_input_may_be_a_reference(self):
        from tooliqa.tools import BLOBS

        assert image_bytes(BLOBS.put(JPEG)) == JPEG


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: ClassVar[dict[str, tuple[int, dict[str, str], bytes, float]]] = {}

    def do_GET(self) -> None:
        status, headers, body, delay = self.routes.get(self.path.split("?")[0], (404, {}, b"", 0.0))
        time.sleep(delay)
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def image_server() -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 serving the example JPEG and some bad answers."""
    _Handler.routes = {
        "/ok.jpg": (200, {"content-type": "image/jpeg"}, JPEG, 0.0),
        "/moved": (302, {"location": "/ok.jpg"}, b"", 0.0),
        "/loop": (302, {"location": "/loop"}, b"", 0.0),
        "/gone": (404, {}, b"not here", 0.0),
        "/slow.jpg": (200, {"content-type": "image/jpeg"}, JPEG, 3.0),
        "/text": (200, {"content-type": "text/html"}, b"<html>hello</html>", 0.0),
    }
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class TestFetch:
    def _fetch(self, url: str, **kwargs: object) -> bytes:
        kwargs.setdefault("allow_private", True)
        return asyncio.run(fetch_image_bytes(url, **kwargs))  # type: ignore[arg-type]

    def test_an_image_url_and_a_redirect_to_it(self, image_server):
        assert self._fetch(f"{image_server}/ok.jpg") == JPEG
        assert self._fetch(f"{image_server}/moved") == JPEG

    def test_every_bad_answer_is_an_image_error_that_says_why(self, image_server):
        cases = {
            "/gone": "answered HTTP 404",
            "/loop": "redirected more than",
        }
        for path, why in cases.items():
            with pytest.raises(ImageError, match=why):
                self._fetch(image_server + path)
        with pytest.raises(ImageError, match="over the limit"):
            self._fetch(f"{image_server}/ok.jpg", limits=ImageLimits(max_bytes=1000))
        with pytest.raises(ImageError, match=r"took over 0\.5 s"):
            self._fetch(f"{image_server}/slow.jpg", timeout=0.5)
        with pytest.raises(ImageError, match="cannot fetch"):
            self._fetch("http://127.0.0.1:9/x.jpg")  # nothing listens there

    def test_private_hosts_are_refused_unless_allowed(self, image_server, monkeypatch):
        monkeypatch.delenv("TOOLIQA_FETCH_PRIVATE_URLS", raising=False)
        for url in (f"{image_server}/ok.jpg", "http://localhost:1/x", "http://10.0.0.1/x"):
            with pytest.raises(ImageError, match="private or local address"):
                self._fetch(url, allow_private=None)
        monkeypatch.setenv("TOOLIQA_FETCH_PRIVATE_URLS", "1")
        assert self._fetch(f"{image_server}/ok.jpg", allow_private=None) == JPEG


class TestURLInput:
    """An ``image`` that is a URL: fetched only when the context allows it."""

    def test_the_graph_fetches_only_when_the_context_says_so(self, image_server, monkeypatch):
        from tooliqa.api import graph

        monkeypatch.setenv("TOOLIQA_FETCH_PRIVATE_URLS", "1")
        url = f"{image_server}/ok.jpg"
        want = asyncio.run(graph.ainvoke({"image": JPEG}))["assessment"]["score"]
        monkeypatch.delenv("TOOLIQA_FETCH_URLS", raising=False)  # the operator's switch
        with pytest.raises(ImageError, match="TOOLIQA_FETCH_URLS"):
            asyncio.run(graph.ainvoke({"image": url}, context={"fetch_urls": True}))
        monkeypatch.setenv("TOOLIQA_FETCH_URLS", "1")
        out = asyncio.run(graph.ainvoke({"image": url}, context={"fetch_urls": True}))
        assert out["assessment"]["score"] == want and out["assessment"]["image"] == url
        signed = asyncio.run(
            graph.ainvoke({"image": url + "?token=s3cret"}, context={"fetch_urls": True})
        )
        assert signed["assessment"]["image"] == url  # the query stays out of the report
        with_user = url.replace("http://", "http://user:pw@")
        out = asyncio.run(graph.ainvoke({"image": with_user}, context={"fetch_urls": True}))
        assert out["assessment"]["image"] == url  # and so do credentials
        with pytest.raises(ImageError, match="fetch_urls"):
            asyncio.run(graph.ainvoke({"image": url}))
        with pytest.raises(ImageError, match="not a recognised image"):
            asyncio.run(
                graph.ainvoke({"image": f"{image_server}/text"}, context={"fetch_urls": True})
            )

    def test_aassess_fetches_a_url_in_process(self, image_server):
        from tooliqa.api import aassess

        a = asyncio.run(aassess(f"{image_server}/ok.jpg", max_rounds=0))
        b = asyncio.run(aassess(JPEG, max_rounds=0))
        assert a.score == b.score and a.image == f"{image_server}/ok.jpg"


def test_the_agent_tool_fetches_urls_only_when_made_to(image_server, monkeypatch):
    from tooliqa import as_tool

    url = f"{image_server}/ok.jpg"
    monkeypatch.delenv("TOOLIQA_FETCH_PRIVATE_URLS", raising=False)
    plain = asyncio.run(as_tool().ainvoke({"image": url}))
    assert plain["score"] is None and "does not fetch URLs" in plain["error"]
    fetching = as_tool(fetch_urls=True)
    private = asyncio.run(fetching.ainvoke({"image": url}))
    assert "private or local address" in private["error"]  # the model chose the URL
    monkeypatch.setenv("TOOLIQA_FETCH_PRIVATE_URLS", "1")
    fetched = asyncio.run(fetching.ainvoke({"image": url + "?sig=1"}))
    assert 1 <= fetched["score"] <= 5 and fetched["image"] == url


def test_views_come_back_as_data_urls_only_when_asked_for():
    from tooliqa.graph import Context, OutputState, compile_graph
    from tooliqa.graph.testing import ScriptedChatModel, tool_call_message

    from _support import RUBRIC_REPLY

    def run(**settings: object) -> dict:
        model = ScriptedChatModel.from_replies(
            [RUBRIC_REPLY, tool_call_message("gamma_corrector", {"gamma": 0.5}),
             "<answer>3</answer>"]
        )  # fmt: skip
        ctx = Context(model=model, max_tool_rounds=1, **settings)
        g = compile_graph(output_schema=OutputState)
        return asyncio.run(g.ainvoke({"image": JPEG}, context=ctx))["assessment"]

    (step,) = run()["steps"]
    assert "view" not in step and step["view_ref"].startswith("tooliqa-blob:sha256:")
    (step,) = run(include_views=True)["steps"]
    assert step["view"].startswith("data:image/png;base64,")


def test_a_server_model_is_built_off_the_event_loop(monkeypatch):
    """Naming only a server makes the context ask it for its model name: a blocking request,
    done in a worker thread (LangGraph Server refuses blocking calls on its loop); the API
    key comes from the context, else the environment."""
    import tooliqa.backends.openai_compat as oc
    from tooliqa.api import AppContext

    seen: dict[str, object] = {}

    def fake_check(base_url: str, *, api_key: str = "EMPTY", timeout: float = 10.0) -> list[str]:
        seen["thread"] = threading.current_thread()
        seen["api_key"] = api_key
        return ["served-model"]

    monkeypatch.setattr(oc, "check_server", fake_check)
    monkeypatch.setenv("TOOLIQA_API_KEY", "from-env")
    monkeypatch.delenv("TOOLIQA_TRUSTED_SERVERS", raising=False)

    async def build(ctx: AppContext):
        return await ctx.aget_model(), threading.current_thread()

    # a server the operator does not trust (a client named it) never gets the key
    model, loop_thread = asyncio.run(build(AppContext(server="http://127.0.0.1:1/v1")))
    assert seen["thread"] is not loop_thread and seen["api_key"] == "EMPTY"
    assert model.model_name == "served-model"
    monkeypatch.setenv("TOOLIQA_TRUSTED_SERVERS", "http://other:9, HTTP://127.0.0.1:1")
    asyncio.run(build(AppContext(server="http://127.0.0.1:1/v1")))
    assert seen["api_key"] == "from-env"
    asyncio.run(build(AppContext(server="http://127.0.0.1:2/v1")))
    assert seen["api_key"] == "EMPTY"
    monkeypatch.setenv("TOOLIQA_ONLY_TRUSTED_SERVERS", "1")  # the deployment's allow-list
    with pytest.raises(ValueError, match="does not allow"):
        AppContext(server="http://127.0.0.1:2/v1")
    assert AppContext(server="http://127.0.0.1:1/v1").server
    ctx = AppContext(server="http://127.0.0.1:1/v1", api_key="from-context", request_timeout=7)
    model, _ = asyncio.run(build(ctx))
    assert seen["api_key"] == "from-context" and model.request_timeout == 7
    assert "from-context" not in repr(ctx)
    with pytest.raises(ValueError, match="request_timeout"):
        AppContext(request_timeout=0)


def test_the_store_spares_a_run_under_way_and_stays_bounded(monkeypatch):
    import tooliqa.tools.blobs as blobs

    store = BlobStore(max_bytes=250, keep_seconds=600)
    a, b = store.put(b"a" * 100), store.put(b"b" * 100)
    c = store.put(b"c" * 100)  # over the budget, but all three are in use
    assert a in store and b in store and c in store and store.held_bytes == 300
    store.put(b"d" * 300)  # over twice the budget: the oldest go, whatever their age
    assert a not in store and store.held_bytes <= 500
    for value, want in (("0", 256), ("-5", 256), ("nan", 512), ("inf", 512), ("x", 512)):
        monkeypatch.setenv("TOOLIQA_BLOB_CACHE_MB", value)
        assert blobs._budget() == want * 1024 * 1024
    monkeypatch.setenv("TOOLIQA_BLOB_CACHE_MB", "1024")
    assert blobs._budget() == 1024 * 1024 * 1024


def test_addresses_inside_ipv6_forms_are_checked():
    import ipaddress

    from tooliqa.tools.fetch import _is_public

    for private in ("64:ff9b::a00:1", "2002:7f00:1::", "::127.0.0.1", "::ffff:10.0.0.1",
                    "169.254.169.254", "fd00::1", "::1"):  # fmt: skip
        assert not _is_public(ipaddress.ip_address(private)), private
    for public in ("8.8.8.8", "2001:4860:4860::8888", "64:ff9b::808:808"):
        assert _is_public(ipaddress.ip_address(public)), public


def test_the_fetch_connects_to_the_address_it_checked(image_server, monkeypatch):
    """With private hosts refused, the fetch connects to the address it resolved and
    checked (a second lookup could answer otherwise), naming the host in the request; a
    redirect is checked again."""
    import tooliqa.tools.fetch as fetch

    checked: list[str] = []
    real = fetch._checked_address

    async def spy(host: str, port: int, allow_private: bool):
        checked.append(host)
        return await real(host, port, allow_private)

    monkeypatch.setattr(fetch, "_checked_address", spy)
    monkeypatch.setattr(fetch, "_is_public", lambda address: True)  # let loopback pass
    url = image_server.replace("127.0.0.1", "localhost") + "/moved"
    assert asyncio.run(fetch_image_bytes(url, allow_private=False)) == JPEG
    assert checked == ["localhost", "localhost"]  # the first URL and the redirect
    for bad in ("http://127.0.0.1:99999/x", " http://[::1/x", "http://" + "a" * 300 + "/x"):
        with pytest.raises(ImageError):
            asyncio.run(fetch_image_bytes(bad, allow_private=True))


def test_a_json_context_may_only_tighten_the_limits_and_names_formats_loosely():
    from tooliqa.graph import Context
    from tooliqa.tools import ImageLimits

    ctx = Context(image_limits={"max_bytes": 10**12, "max_pixels": 1000})
    assert ctx.image_limits.max_bytes == ImageLimits().max_bytes
    assert ctx.image_limits.max_pixels == 1000
    assert Context(view_format="png").view_format == "PNG"


def test_views_round_trip_through_the_assessment():
    from tooliqa.graph import Assessment
    from tooliqa.tools import BLOBS, data_url

    png = base64.b64decode(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
    )
    step = {"round": 1, "tool": "magnifier", "ok": True, "mime": "image/png"}
    for view in (data_url(png, "image/png"), BLOBS.put(png)):
        a = Assessment.model_validate({"steps": [{**step, "view": view}]})
        assert a.steps[0].view == png
        assert '"view": "data:image/png;base64,' in a.to_json(include_views=True)
    assert Assessment.model_validate({"steps": [{**step, "view": "junk"}]}).steps[0].view is None


def test_view_tools_take_a_state_reference():
    from tooliqa.tools import BLOBS
    from tooliqa.tools.lc_tools import make_view_tools

    (magnifier,) = make_view_tools(BLOBS.put(JPEG), enabled=["magnifier"])
    out = magnifier.invoke({"bbox_2d": [0, 0, 500, 500]})
    assert "Tool call failed" not in str(out)
