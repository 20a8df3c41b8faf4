"""The assessment graph end to end against a REAL vLLM server (tiny random Qwen3-VL).

The model is random, so its turns are made well-formed with vLLM's own
constraints: a named ``tool_choice`` with strict tool schemas for the gate and
``response_format`` JSON schemas for the rubric and the answer. What the server
received is checked through a recording proxy.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from tooliqa import assess
from tooliqa.backends.openai_compat import ServerConfig, check_server, make_chat_model
from tooliqa.graph import Assessment, Context, graph
from tooliqa.tools import apply_gamma

from vllm_server import RecordingProxy, constrained_context

pytestmark = pytest.mark.integration


def scene(size: int = 160) -> np.ndarray:
    rng = np.random.default_rng(3)
    ys, xs = np.mgrid[0:size, 0:size] / size
    base = 90 + 70 * np.sin(9 * xs) * np.cos(7 * ys)
    img = base[..., None] * [1.0, 0.85, 0.7] + rng.normal(0, 6, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def image_urls(message: dict) -> list[str]:
    content = message.get("content")
    if not isinstance(content, list):
        return []
    return [p["image_url"]["url"] for p in content if p.get("type") == "image_url"]


def decode_data_url(url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))


def constrained(base_url: str, model: str, tool: str, **overrides) -> Context:
    return constrained_context(base_url, model, tool=tool, **overrides)


def test_check_server_lists_the_tiny_model(vllm_server):
    assert vllm_server.model in check_server(vllm_server.base_url)


def test_gamma_round_trip_through_a_real_server(vllm_server):
    original = scene()
    with RecordingProxy(vllm_server.url) as proxy:
        ctx = constrained(proxy.base_url, vllm_server.model, "gamma_corrector")
        out = asyncio.run(
            graph.ainvoke({"image": png(original), "image_name": "scene.png"}, context=ctx)
        )
        bodies = proxy.bodies()
    a = Assessment.model_validate(out["assessment"])

    # The Assessment: one successful gamma round, then a score in range.
    assert a.backend == "openai" and a.model == vllm_server.model
    assert len(a.steps) == 1 and a.steps[0].tool == "gamma_corrector" and a.steps[0].ok
    assert a.steps[0].source == "native" and a.forced_answer
    assert a.score is not None and 1.0 <= a.score <= 5.0
    assert set(a.rubric) == {"sharpness", "noise", "artifacts", "exposure", "colour", "visibility"}
    assert all(level is not None for level in a.rubric.values())
    assert a.usage.model_calls == 3 and a.usage.output_tokens > 0 and a.usage.input_tokens > 0

    # What the server received: rubric turn, gate turn with the forced tool, answer turn.
    assert len(bodies) == 3
    rubric, gate, final = bodies
    assert rubric["response_format"]["type"] == "json_schema"
    assert image_urls(rubric["messages"][1]) and "tools" not in rubric
    assert gate["tool_choice"] == {"type": "function", "function": {"name": "gamma_corrector"}}
    assert gate["tools"][0]["function"]["strict"] is True
    assert (
        "tools" not in final and final["response_format"]["json_schema"]["name"] == "final_answer"
    )

    # The answer turn carries the tool call, the tool message and then the VIEW in a user turn.
    roles = [m["role"] for m in final["messages"]]
    assert roles[-3:] == ["assistant", "tool", "user"]
    call = final["messages"][-3]["tool_calls"][0]
    assert call["function"]["name"] == "gamma_corrector"
    args = json.loads(call["function"]["arguments"])
    gamma = args.get("gamma", {"brighten": 0.5, "darken": 2.0}[args["mode"]])
    assert a.steps[0].gamma == pytest.approx(gamma)
    assert final["messages"][-2]["tool_call_id"] == call["id"]
    (view_url,) = image_urls(final["messages"][-1])
    expected = apply_gamma(original, gamma)
    np.testing.assert_array_equal(decode_data_url(view_url), expected)
    assert image_urls(final["messages"][1])  # the original is still in the history


def test_magnifier_round_is_a_view_or_a_failure_observation(vllm_server):
    with RecordingProxy(vllm_server.url) as proxy:
        ctx = constrained(proxy.base_url, vllm_server.model, "magnifier")
        out = asyncio.run(graph.ainvoke({"image": png(scene())}, context=ctx))
        final = proxy.bodies()[-1]
    a = Assessment.model_validate(out["assessment"])
    step = a.steps[0]
    assert step.tool == "magnifier" and step.source == "native"
    views = image_urls(final["messages"][-1])
    if step.ok:
        assert len(views) == 1 and step.box is not None
    else:
        assert views == [] and "Tool call failed" in json.dumps(final["messages"][-1])
    assert a.score is not None


def test_assess_api_and_cli_against_the_server(vllm_server, tmp_path, capsys):
    from tooliqa.cli import main

    path = tmp_path / "scene.png"
    path.write_bytes(png(scene()))
    ctx = constrained(vllm_server.base_url, vllm_server.model, "gamma_corrector")
    a = assess(path, context=ctx)
    assert a.image == str(path) and a.score is not None and a.steps[0].ok
    # The same model object again, in a new event loop (each assess() runs its own).
    assert assess(path, context=ctx).score == a.score

    # The CLI without constraints: the random model's free text may not parse, but the
    # run must end with a defined outcome (a score or an error), never a crash.
    code = main(
        ["assess", str(path), "--server", vllm_server.base_url, "--json", "--max-tokens", "48"]
    )
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["backend"] == "openai"
    assert (record["score"] is None) == (record["error"] is not None)
    assert code == (1 if record["score"] is None else 0)


def test_replies_cut_at_max_tokens_end_in_a_defined_outcome(vllm_server):
    """Structured replies truncated by max_tokens are malformed text, not exceptions."""
    chat = make_chat_model(ServerConfig(vllm_server.base_url, vllm_server.model, max_tokens=3))
    ctx = Context(model=chat, max_tool_rounds=1, structured_output=True, answer_retries=1)
    out = asyncio.run(graph.ainvoke({"image": png(scene())}, context=ctx))
    a = Assessment.model_validate(out["assessment"])
    assert a.score is None and a.error == "no valid score after the repair prompt(s)"
    assert "rubric note could not be parsed" in a.errors
    assert a.usage.model_calls >= 3


def test_score_logprobs_from_a_real_server(vllm_server):
    """``score_logprobs``: the answer call asks for logprobs, vLLM returns them, and the
    Assessment carries the expected score or the reason there is none."""
    with RecordingProxy(vllm_server.url) as proxy:
        ctx = constrained(proxy.base_url, vllm_server.model, "gamma_corrector", score_logprobs=True)
        out = asyncio.run(graph.ainvoke({"image": png(scene())}, context=ctx))
        bodies = proxy.bodies()
    a = Assessment.model_validate(out["assessment"])
    assert a.score is not None

    # The gate and answer calls asked for logprobs (either may answer), not the rubric;
    # the server answered with per-token entries.
    assert [("logprobs" in b) for b in bodies] == [False, True, True]
    assert bodies[-1]["logprobs"] is True and bodies[-1]["top_logprobs"] == 5
    content = out["messages"][-1].response_metadata["logprobs"]["content"]
    assert content and all("top_logprobs" in t for t in content)
    # The tokens spell the reply (vLLM may add the end-of-turn token).
    assert "".join(t["token"] for t in content).startswith(out["messages"][-1].content)

    u = a.uncertainty
    assert u is not None and u["source"] == "logprobs"
    if u["mean"] is None:
        assert u["note"], "no distribution must come with a reason"
    else:
        lo, hi = u["interval"]
        assert 1.0 <= lo <= u["mean"] <= hi <= 5.0 and u["std"] >= 0.0 and u["n"] == 1
    print(f"\nanswer {out['messages'][-1].content!r} -> uncertainty {u}")


def test_samples_from_a_real_server(vllm_server):
    """``samples=3``: three sampled trajectories reach the server, and the score is the
    mean of those that gave one, with the sample std and a t interval."""
    import statistics

    from tooliqa.graph.prompts import RUBRIC_PROMPT

    with RecordingProxy(vllm_server.url) as proxy:
        ctx = constrained(
            proxy.base_url,
            vllm_server.model,
            "gamma_corrector",
            max_tokens=600,
            sampling={"temperature": 1.0},
        )
        a = assess(png(scene()), context=ctx, samples=3)
        bodies = proxy.bodies()
    rubric_calls = [b for b in bodies if RUBRIC_PROMPT[:60] in json.dumps(b["messages"][-1])]
    assert len(rubric_calls) == 3 and len(bodies) >= 9  # (rubric, gate, answer) x 3 at least
    assert all(b["temperature"] == 1.0 for b in bodies)
    u = a.uncertainty
    assert u is not None and u["source"] == "samples"
    scores = u["scores"]
    assert u["n"] == len(scores) >= 1
    if len(scores) < 3:
        assert f"{3 - len(scores)} of 3 samples gave no score" in u["note"]
    assert a.score == pytest.approx(statistics.fmean(scores), abs=1e-4)
    if len(scores) > 1:
        assert u["std"] == pytest.approx(statistics.stdev(scores), abs=1e-4)
    lo, hi = u["interval"]
    assert lo <= a.score <= hi
    print(f"\nsampled scores {scores} -> {a.score:.2f} ± {u['std']:.2f} [{lo:.2f}, {hi:.2f}]")


def test_query_attributes_and_regions_under_a_real_servers_json_schema(vllm_server):
    """A query with attribute scores and regions under structured output: vLLM accepts the
    extended answer schema and the graph reads every part of the answer."""
    with RecordingProxy(vllm_server.url) as proxy:
        ctx = constrained(
            proxy.base_url,
            vllm_server.model,
            "magnifier",
            max_tokens=1500,
            attribute_scores=True,
            report_regions=True,
        )
        out = asyncio.run(
            graph.ainvoke(
                {"image": png(scene()), "image_question": "Is the sky noisy?"}, context=ctx
            )
        )
        bodies = proxy.bodies()
    a = Assessment.model_validate(out["assessment"])
    schema = bodies[-1]["response_format"]["json_schema"]["schema"]
    assert set(schema["required"]) == {"thinking", "score", "attributes", "regions", "query_answer"}
    first = json.dumps(bodies[0]["messages"])
    assert "Plan: the question is about Noise in the sky." in first
    answer = json.loads(out["messages"][-1].content)
    assert a.score == pytest.approx(answer["score"], abs=1e-4)
    assert set(a.attribute_scores) == set(schema["properties"]["attributes"]["required"])
    assert all(1.0 <= v <= 5.0 for v in a.attribute_scores.values())
    kept = [r for r in a.regions if r["source"] == "answer"]
    dropped = [e for e in a.errors if e.startswith("answer region dropped")]
    assert len(kept) + len(dropped) == len(answer["regions"])
    assert a.query_answer is not None
    assert a.query_answer["answer"] == " ".join(answer["query_answer"].split())
    assert a.query_answer["kind"] == "yes_no" and a.query_answer["region"] == "sky"
