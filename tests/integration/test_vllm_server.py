"""The real vLLM server (CPU) hosting the tiny Qwen3-VL accepts the request
shapes the agent relies on: images, strict tool calls, tool-view images in a
user turn after the tool message, json_schema outputs, logprobs.

The model is random: the tests check structure, never content.
"""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

openai = pytest.importorskip("openai")

from vllm_server import RecordingProxy  # noqa: E402

pytestmark = pytest.mark.integration

MAX_TOKENS = 24


def png_data_url(color: tuple[int, int, int] = (120, 30, 200), size=(320, 240)) -> str:
    img = Image.new("RGB", size, color)
    for x in range(0, size[0], 16):  # some structure, not a flat field
        for y in range(size[1]):
            img.putpixel((x, y), (255 - color[0], 255 - color[1], 255 - color[2]))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def image_part(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


ZOOM_PARAMS = {
    "type": "object",
    "properties": {
        "x": {"type": "integer", "minimum": 0, "maximum": 255},
        "y": {"type": "integer", "minimum": 0, "maximum": 255},
        "scale": {"type": "number", "minimum": 1, "maximum": 4},
    },
    "required": ["x", "y", "scale"],
    "additionalProperties": False,
}
ZOOM_TOOL = {
    "type": "function",
    "function": {
        "name": "zoom",
        "description": "Zoom into a region of the image.",
        "parameters": ZOOM_PARAMS,
        "strict": True,
    },
}
FINISH_TOOL = {
    "type": "function",
    "function": {
        "name": "finish",
        "description": "Give the final quality score.",
        "parameters": {
            "type": "object",
            "properties": {"score": {"type": "number", "minimum": 1, "maximum": 5}},
            "required": ["score"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}


def check_zoom_args(arguments: str) -> dict:
    args = json.loads(arguments)
    assert set(args) == {"x", "y", "scale"}
    assert isinstance(args["x"], int) and 0 <= args["x"] <= 255
    assert isinstance(args["y"], int) and 0 <= args["y"] <= 255
    assert isinstance(args["scale"], (int, float)) and 1 <= args["scale"] <= 4
    return args


@pytest.fixture(scope="module")
def client(vllm_server):
    return openai.OpenAI(base_url=vllm_server.base_url, api_key="EMPTY", timeout=120)


def test_models_endpoint(client, vllm_server):
    ids = [m.id for m in client.models.list().data]
    assert vllm_server.model in ids


def test_chat_with_image(client, vllm_server):
    resp = client.chat.completions.create(
        model=vllm_server.model,
        messages=[
            {
                "role": "user",
                "content": [image_part(png_data_url()), {"type": "text", "text": "Rate it."}],
            }
        ],
        max_tokens=MAX_TOKENS,
        temperature=0,
    )
    choice = resp.choices[0]
    assert choice.finish_reason in {"stop", "length"}
    assert isinstance(choice.message.content, str)
    # 320x240 is resized under 256x256 px: a few dozen image tokens, not thousands.
    assert 20 < resp.usage.prompt_tokens < 200


def test_two_images_in_one_request(client, vllm_server):
    def prompt_tokens(n_images: int) -> int:
        content = [image_part(png_data_url((40 * i, 90, 200))) for i in range(n_images)]
        resp = client.chat.completions.create(
            model=vllm_server.model,
            messages=[
                {"role": "user", "content": [*content, {"type": "text", "text": "Compare."}]}
            ],
            max_tokens=4,
            temperature=0,
        )
        return resp.usage.prompt_tokens

    one, two = prompt_tokens(1), prompt_tokens(2)
    assert two > one + 10


@pytest.mark.parametrize(
    "tool_choice",
    ["required", {"type": "function", "function": {"name": "zoom"}}],
    ids=["required", "named"],
)
def test_strict_tool_call(client, vllm_server, tool_choice):
    resp = client.chat.completions.create(
        model=vllm_server.model,
        messages=[
            {"role": "system", "content": "You assess image quality with tools."},
            {
                "role": "user",
                "content": [image_part(png_data_url()), {"type": "text", "text": "Inspect."}],
            },
        ],
        tools=[ZOOM_TOOL, FINISH_TOOL] if tool_choice == "required" else [ZOOM_TOOL],
        tool_choice=tool_choice,
        max_tokens=64,
        temperature=0,
    )
    msg = resp.choices[0].message
    assert msg.tool_calls, msg
    call = msg.tool_calls[0]
    assert call.id
    if call.function.name == "zoom":
        check_zoom_args(call.function.arguments)
    else:
        assert call.function.name == "finish"
        assert 1 <= json.loads(call.function.arguments)["score"] <= 5


def test_hermes_parser_with_auto_tool_choice(client, vllm_server):
    # The random model never writes <tool_call> by itself: force the text with
    # a regex and check that the hermes parser turns it into a tool call.
    regex = r'<tool_call>\n\{"name": "zoom", "arguments": \{"x": [1-9], "y": [1-9], "scale": 2\}\}\n</tool_call>'
    resp = client.chat.completions.create(
        model=vllm_server.model,
        messages=[{"role": "user", "content": "Inspect."}],
        tools=[ZOOM_TOOL],
        tool_choice="auto",
        max_tokens=48,
        temperature=0,
        extra_body={"structured_outputs": {"regex": regex}},
    )
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls and choice.message.tool_calls[0].function.name == "zoom"
    check_zoom_args(choice.message.tool_calls[0].function.arguments)


def test_tool_result_then_view_image_in_user_turn(vllm_server):
    """How the agent sends a tool view: tool message (text), then a user turn with the image."""
    with RecordingProxy(vllm_server.server.url) as proxy:
        client = openai.OpenAI(base_url=proxy.base_url, api_key="EMPTY", timeout=120)
        messages = [
            {"role": "system", "content": "You assess image quality with tools."},
            {
                "role": "user",
                "content": [image_part(png_data_url()), {"type": "text", "text": "Rate it."}],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {
                            "name": "zoom",
                            "arguments": json.dumps({"x": 10, "y": 20, "scale": 2}),
                        },
                    }
                ],
            },
            {
                "role": "tool",
                "tool_call_id": "call_1",
                "content": "Zoomed view of (10, 20) x2 follows.",
            },
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Tool view:"},
                    image_part(png_data_url((10, 200, 60), (128, 128))),
                ],
            },
        ]
        resp = client.chat.completions.create(
            model=vllm_server.model,
            messages=messages,
            tools=[ZOOM_TOOL, FINISH_TOOL],
            tool_choice="required",
            max_tokens=64,
            temperature=0,
        )
        assert resp.choices[0].message.tool_calls
        bodies = proxy.bodies()
    assert len(bodies) == 1
    sent = bodies[0]
    assert [m["role"] for m in sent["messages"]] == ["system", "user", "assistant", "tool", "user"]
    assert sent["messages"][4]["content"][1]["type"] == "image_url"
    assert sent["tools"][0]["function"]["strict"] is True


def test_json_schema_response_format(client, vllm_server):
    schema = {
        "type": "object",
        "properties": {
            "quality": {"type": "string", "enum": ["excellent", "good", "fair", "poor", "bad"]},
            "reason": {"type": "string", "maxLength": 12},
            "score": {"type": "number", "minimum": 1, "maximum": 5},
            "code": {"type": "string", "pattern": "^IQA-[0-9]{3}$"},
        },
        "required": ["quality", "reason", "score", "code"],
        "additionalProperties": False,
    }
    resp = client.chat.completions.create(
        model=vllm_server.model,
        messages=[
            {
                "role": "user",
                "content": [image_part(png_data_url()), {"type": "text", "text": "Rate as JSON."}],
            }
        ],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "iqa", "schema": schema, "strict": True},
        },
        max_tokens=96,
        temperature=0,
    )
    assert resp.choices[0].finish_reason == "stop"
    data = json.loads(resp.choices[0].message.content)
    assert data["quality"] in schema["properties"]["quality"]["enum"]
    assert isinstance(data["reason"], str) and len(data["reason"]) <= 12
    assert isinstance(data["score"], (int, float)) and 1 <= data["score"] <= 5
    assert len(data["code"]) == 7 and data["code"].startswith("IQA-") and data["code"][4:].isdigit()


def test_unsupported_json_schema_keyword_is_rejected(client, vllm_server):
    schema = {
        "type": "object",
        "properties": {"v": {"type": "array", "items": {"type": "integer"}, "uniqueItems": True}},
        "required": ["v"],
    }
    with pytest.raises(openai.BadRequestError, match="uniqueItems"):
        client.chat.completions.create(
            model=vllm_server.model,
            messages=[{"role": "user", "content": "x"}],
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
            max_tokens=8,
        )


def test_logprobs_and_top_logprobs(client, vllm_server):
    resp = client.chat.completions.create(
        model=vllm_server.model,
        messages=[
            {
                "role": "user",
                "content": [image_part(png_data_url()), {"type": "text", "text": "Score 1-5."}],
            }
        ],
        max_tokens=6,
        temperature=0,
        logprobs=True,
        top_logprobs=5,
        extra_body={"structured_outputs": {"choice": ["1", "2", "3", "4", "5"]}},
    )
    choice = resp.choices[0]
    assert choice.message.content in {"1", "2", "3", "4", "5"}
    content = choice.logprobs.content
    assert content and len(content) >= 1
    first = content[0]
    assert first.logprob <= 0
    assert len(first.top_logprobs) == 5
    # Logprobs are reported after the constraint: the five digits carry the mass.
    allowed = {t.token for t in first.top_logprobs if t.logprob > -100}
    assert allowed <= {"1", "2", "3", "4", "5"}


def test_streaming_through_recording_proxy(vllm_server):
    with RecordingProxy(vllm_server.server.url) as proxy:
        client = openai.OpenAI(base_url=proxy.base_url, api_key="EMPTY", timeout=120)
        stream = client.chat.completions.create(
            model=vllm_server.model,
            messages=[{"role": "user", "content": "Describe."}],
            max_tokens=8,
            temperature=0,
            stream=True,
        )
        chunks = [c for c in stream if c.choices]
        assert chunks
        assert chunks[-1].choices[0].finish_reason in {"stop", "length"}
        assert proxy.bodies()[0]["stream"] is True
