"""The public assess() API: inputs, defaults, errors, concurrency."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from tooliqa import Assessment, ImageError, assess
from tooliqa.api import AppContext, assess_many, graph, load_image_input, make_context
from tooliqa.backends.openai_compat import BackendError
from tooliqa.graph.testing import ScriptedChatModel

from _support import RUBRIC_REPLY, png_bytes


def test_default_backend_is_classic(image_bytes):
    a = assess(image_bytes, name="mine.png")
    assert isinstance(a, Assessment) and a.backend == "classic" and a.image == "mine.png"
    assert 1.0 <= a.score <= 5.0 and a.timings["total_s"] > 0


def test_numpy_pil_and_path_inputs_agree(image_array, tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(png_bytes(image_array))
    scores = {
        assess(image_array).score,
        assess(Image.fromarray(image_array)).score,
        assess(path).score,
        assess(str(path)).score,
    }
    assert len(scores) == 1
    assert assess(path).image == str(path)


def test_bad_inputs_raise_clearly(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        assess(tmp_path / "missing.jpg")
    with pytest.raises(ImageError, match="empty"):
        assess(b"")
    with pytest.raises(TypeError, match="cannot assess"):
        assess(12345)
    with pytest.raises(ImageError, match="uint8"):
        assess(np.zeros((32, 32, 3), dtype=np.float32))


def test_views_reach_the_caller(image_array):
    dark = (image_array * 0.1).astype(np.uint8)
    a = assess(dark)
    assert a.steps and a.steps[0].view is not None and a.steps[0].view.startswith(b"\x89PNG")
    assert '"view": "data:image/png;base64,' in a.to_json(include_views=True)
    assert '"view"' not in a.to_json()


def test_assess_inside_a_running_loop_points_to_aassess(image_bytes):
    async def inner():
        return assess(image_bytes)

    with pytest.raises(RuntimeError, match="aassess"):
        asyncio.run(inner())


def _connection_error(messages, kwargs):
    raise openai.APIConnectionError(
        request=httpx.Request("POST", "http://127.0.0.1:1/v1/chat/completions")
    )


def test_server_dying_mid_run_is_a_backend_error(image_bytes):
    m = ScriptedChatModel.from_replies([RUBRIC_REPLY, _connection_error])
    with pytest.raises(BackendError, match="unreachable"):
        assess(image_bytes, model=m)


def test_assess_many_keeps_going_after_failures(image_bytes, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff junk")
    m = ScriptedChatModel.from_replies(
        [RUBRIC_REPLY, "<answer>4</answer>", RUBRIC_REPLY, _connection_error]
    )

    async def collect():
        return [
            x async for x in assess_many([image_bytes, bad, image_bytes], model=m, concurrency=1)
        ]

    results = dict(asyncio.run(collect()))
    assert results[0].score == 4.0
    assert results[1].score is None and "not a recognised image format" in results[1].error
    assert results[2].score is None and "unreachable" in results[2].error


def test_unreachable_server_fails_when_the_context_is_made():
    with pytest.raises(BackendError, match="cannot reach"):
        make_context(server="http://127.0.0.1:9/v1")


def test_app_graph_defaults_to_classic_from_a_plain_context(image_bytes):
    out = asyncio.run(graph.ainvoke({"image": image_bytes}, context=AppContext(max_tool_rounds=1)))
    assert out["assessment"]["backend"] == "classic"


def test_load_image_input_names(tmp_path, image_bytes):
    p = tmp_path / "n.png"
    p.write_bytes(image_bytes)
    assert load_image_input(p) == (image_bytes, str(p))
    assert load_image_input(image_bytes) == (image_bytes, None)


def test_app_graph_without_any_context_uses_the_classic_backend(image_bytes):
    out = asyncio.run(graph.ainvoke({"image": image_bytes}))
    assert out["assessment"]["backend"] == "classic" and 1 <= out["assessment"]["score"] <= 5


def test_bare_graph_without_a_context_says_what_is_missing(image_bytes):
    from tooliqa.graph import graph as bare

    with pytest.raises(ValueError, match=r"Context\.model is not set"):
        asyncio.run(bare.ainvoke({"image": image_bytes}))
