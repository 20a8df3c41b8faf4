"""Classic IQA measurement tools (NIQE, BRISQUE, PIQE and the classic backend's simple
measures): fitted logistics, runner, LangChain wrappers and a scripted-model graph run."""

from __future__ import annotations

import asyncio
import json
import math

import numpy as np
import pytest
from langchain_core.messages import HumanMessage, ToolMessage

from tooliqa.graph import Assessment, Context, graph
from tooliqa.graph.testing import ScriptedChatModel, tool_call_message
from tooliqa.tools import (
    DEFAULT_TOOLS,
    MEASURE_TOOLS,
    decode_image,
    measures,
    run_view_tool,
    score_1_5,
    tool_specs,
)
from tooliqa.tools.brisque import brisque
from tooliqa.tools.iqa_tools import (
    IQA_METRICS,
    LOGISTIC_FILE,
    SIMPLE_METRICS,
    load_logistic,
    logistic_5pl,
)
from tooliqa.tools.lc_tools import make_iqa_tools
from tooliqa.tools.niqe import niqe
from tooliqa.tools.piqe import piqe

from _support import REPO, RUBRIC_REPLY

CLASSIC = ("niqe", "brisque", "piqe")
METRICS = CLASSIC + SIMPLE_METRICS
#: Each tool's reference: the metric function, or the field of measures.measure().
FUNCTIONS = {
    "niqe": niqe,
    "brisque": brisque,
    "piqe": piqe,
    "sharpness": lambda rgb: measures.measure(rgb).sharpness,
    "noise": lambda rgb: measures.measure(rgb).noise_sigma,
    "blockiness": lambda rgb: measures.measure(rgb).blockiness,
    "contrast": lambda rgb: measures.measure(rgb).rms_contrast,
    "colourfulness": lambda rgb: measures.measure(rgb).colourfulness,
    "exposure_error": lambda rgb: (
        lambda m: abs(m.mean_luminance - 0.45) + m.shadow_clip + m.highlight_clip
    )(measures.measure(rgb)),
}


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return decode_image((REPO / "examples" / "coffee_underexposed.jpg").read_bytes()).rgb


class TestLogisticData:
    def test_loads_with_provenance_and_fit_quality(self):
        doc = json.loads(LOGISTIC_FILE.read_text(encoding="utf-8"))
        assert set(doc["metrics"]) == set(METRICS) == set(IQA_METRICS)
        assert doc["provenance"]["fit_split"] == "dev"
        assert doc["provenance"]["script"] == "scripts/fit_classic_iqa_logistic.py"
        for name, m in doc["metrics"].items():
            up = IQA_METRICS[name].higher_is_better
            assert len(m["beta"]) == 5 and all(math.isfinite(b) for b in m["beta"])
            assert m["direction"] == ("higher_is_better" if up else "lower_is_better")
            # the curve follows the dev correlation; the flag says whether that is the meaning
            assert (m["curve"] == "increasing") == (m["dev_raw_srcc"] > 0)
            assert m["agrees_with_meaning"] == ((m["curve"] == "increasing") == up)
            assert m["dev_fit"]["n"] > 1900 and m["dev_fit"]["srcc"] >= 0.0
            assert set(m["test_report"]) == {"n", "srcc", "plcc"}
        for name in (*CLASSIC, "sharpness", "blockiness"):
            m = doc["metrics"][name]
            assert m["agrees_with_meaning"] and m["dev_fit"]["srcc"] > 0.3, name
        # on AI-generated images the noise estimate rises with texture raters liked
        assert doc["metrics"]["noise"]["agrees_with_meaning"] is False
        assert len(doc["metrics"]["niqe"]["undefined_images"]) == 3

    @pytest.mark.parametrize("metric", METRICS)
    def test_curve_is_monotone_and_maps_into_1_5(self, metric):
        entry = json.loads(LOGISTIC_FILE.read_text())["metrics"][metric]
        lo, hi = entry["raw_range_dev"]
        xs = np.linspace(lo - 0.5 * (hi - lo), hi + 0.5 * (hi - lo), 400)
        ys = np.array([score_1_5(metric, float(x)) for x in xs])
        if entry["curve"] == "increasing":
            ys = ys[::-1]
        assert np.all(np.diff(ys) <= 1e-12)
        assert ys.min() >= 1.0 and ys.max() <= 5.0
        if entry["dev_fit"]["srcc"] > 0.3:
            assert ys[0] > ys[-1] + 1.0  # it really separates good from bad

    def test_score_is_the_clipped_5pl(self):
        beta = load_logistic()["brisque"].beta
        assert score_1_5("brisque", 40.0) == pytest.approx(logistic_5pl(40.0, *beta))


class TestRunner:
    @pytest.mark.parametrize("metric", METRICS)
    def test_whole_image(self, photo, metric):
        r = run_view_tool(metric, {}, photo, enabled=[metric])
        assert r.ok and r.view is None and r.mime is None
        raw = FUNCTIONS[metric](photo)
        assert r.extra["raw"] == pytest.approx(raw, rel=1e-12)
        assert r.extra["score_1_5"] == pytest.approx(score_1_5(metric, raw))
        h, w = photo.shape[:2]
        assert r.box == [0, 0, w, h]
        m = IQA_METRICS[metric]
        assert r.message.startswith(f"{m.title} {raw:.2f} ({m.direction}) → ")
        assert "5-parameter logistic fitted to AGIQA-3K dev" in r.message
        assert f"whole {w}x{h} image" in r.message
        against = "went with better-rated images" in r.message
        assert against == (not load_logistic()[metric].agrees_with_meaning)

    def test_region_measures_only_the_crop(self, photo):
        h, w = photo.shape[:2]
        r = run_view_tool("niqe", {"bbox": [0, 0, 500, 500]}, photo, enabled=["niqe"])
        x2, y2 = math.ceil(w / 2), math.ceil(h / 2)
        assert r.ok and r.box == [0, 0, x2, y2]
        assert r.extra["raw"] == pytest.approx(niqe(photo[:y2, :x2]), rel=1e-12)
        assert r.extra["raw"] != pytest.approx(niqe(photo))
        assert f"region x 0-{x2}, y 0-{y2}" in r.message

    def test_region_too_small_for_niqe_is_a_failure_message(self, photo):
        r = run_view_tool("niqe", {"bbox": [0, 0, 100, 100]}, photo, enabled=["niqe"])
        assert not r.ok and r.message.startswith("Tool call failed: NIQE needs a region")
        assert "96" in r.message

    def test_flat_image_is_a_failure_message(self):
        r = run_view_tool("niqe", {}, np.zeros((200, 200, 3), np.uint8), enabled=["niqe"])
        assert not r.ok and "undefined" in r.message

    def test_not_enabled_by_default(self, photo):
        assert DEFAULT_TOOLS == ("magnifier", "gamma_corrector")
        r = run_view_tool("niqe", {}, photo)
        assert not r.ok and "unknown tool" in r.message


class TestSpecs:
    def test_only_when_enabled(self):
        assert [s["function"]["name"] for s in tool_specs()] == list(DEFAULT_TOOLS)
        names = [s["function"]["name"] for s in tool_specs(["magnifier", "niqe", "piqe"])]
        assert names == ["magnifier", "niqe", "piqe"]

    @pytest.mark.parametrize("metric", METRICS)
    def test_strict_schema_lists_every_property_as_required(self, metric):
        (spec,) = tool_specs([metric], "pixel", strict=True)
        params = spec["function"]["parameters"]
        assert spec["function"]["strict"] is True
        assert params["required"] == list(params["properties"]) == ["bbox"]
        assert params["additionalProperties"] is False
        assert params["properties"]["bbox"]["type"] == ["array", "null"]
        assert "pixel coordinates" in spec["function"]["description"]
        loose = tool_specs([metric])[0]["function"]["parameters"]
        assert loose["required"] == [] and loose["properties"]["bbox"]["type"] == "array"

    def test_null_bbox_means_whole_image(self, photo):
        r = run_view_tool("piqe", {"bbox": None}, photo, enabled=["piqe"])
        assert r.ok and r.extra["raw"] == pytest.approx(piqe(photo))

    def test_context_accepts_measure_tools(self):
        ctx = Context(enabled_tools=("magnifier", "niqe", "brisque", "piqe"))
        assert ctx.enabled_tools == ("magnifier", "niqe", "brisque", "piqe")
        assert Context().enabled_tools == DEFAULT_TOOLS
        with pytest.raises(ValueError, match="unknown tools"):
            Context(enabled_tools=("nique",))


def test_langchain_wrappers(image_bytes, image_array):
    tools = {t.name: t for t in make_iqa_tools(image_bytes)}
    assert set(tools) == set(MEASURE_TOOLS) == set(METRICS)
    sharp = tools["sharpness"].invoke(
        {"type": "tool_call", "name": "sharpness", "args": {}, "id": "s1"}
    )
    assert sharp.artifact.extra["raw"] == pytest.approx(measures.sharpness_index(image_array))
    msg = tools["brisque"].invoke({"type": "tool_call", "name": "brisque", "args": {}, "id": "b1"})
    assert isinstance(msg, ToolMessage)
    assert [b["type"] for b in msg.content] == ["text"]  # no image block
    assert msg.artifact.ok and msg.artifact.extra["raw"] == pytest.approx(brisque(image_array))
    bad = tools["niqe"].invoke(
        {"type": "tool_call", "name": "niqe", "args": {"bbox": [0, 0, 10, 10]}, "id": "n1"}
    )
    assert not bad.artifact.ok and "Tool call failed" in bad.content[0]["text"]


def _images(message) -> int:
    if isinstance(message.content, str):
        return 0
    return sum(1 for b in message.content if isinstance(b, dict) and b.get("type") == "image_url")


def test_graph_records_measurement_and_sends_no_image(image_bytes, image_array):
    m = ScriptedChatModel.from_replies(
        [RUBRIC_REPLY, tool_call_message("niqe", {}, "n1"), "<answer>3.10</answer>"]
    )
    ctx = Context(model=m, enabled_tools=("magnifier", "gamma_corrector", "niqe"))
    out = asyncio.run(graph.ainvoke({"image": image_bytes, "image_name": "t.png"}, context=ctx))
    a = Assessment.model_validate(out["assessment"])
    assert a.score == 3.1 and len(a.steps) == 1
    step = a.steps[0]
    raw = niqe(image_array)
    assert step.tool == "niqe" and step.ok and step.view is None and step.mime is None
    assert step.raw == pytest.approx(raw) and step.score_1_5 == pytest.approx(
        score_1_5("niqe", raw)
    )
    gate_tools = [s["function"]["name"] for s in m.calls[1]["kwargs"]["tools"]]
    assert gate_tools == ["magnifier", "gamma_corrector", "niqe"]
    tool_msg, user_turn = m.calls[2]["messages"][-2:]
    assert isinstance(tool_msg, ToolMessage) and f"NIQE {raw:.2f}" in tool_msg.content
    assert isinstance(user_turn, HumanMessage) and _images(user_turn) == 0
    text = "".join(b["text"] for b in user_turn.content if b.get("type") == "text")
    assert f"NIQE {raw:.2f} (lower is better)" in text and "measurement" in text
    dumped = json.loads(a.model_dump_json())
    assert dumped["steps"][0]["raw"] == pytest.approx(raw)
    # older records without the new fields still load
    legacy = {k: v for k, v in dumped["steps"][0].items() if k not in ("raw", "score_1_5")}
    assert Assessment.model_validate({**dumped, "steps": [legacy]}).steps[0].raw is None


def test_metric_minimum_sides_agree_with_the_metric_modules():
    from tooliqa.tools import brisque, niqe, piqe

    assert IQA_METRICS["niqe"].min_side == niqe.NIQE_MIN_SIDE
    assert IQA_METRICS["brisque"].min_side == brisque.MIN_SIDE
    assert IQA_METRICS["piqe"].min_side == piqe.BLOCK


def test_importing_the_tools_does_not_load_the_metric_modules():
    import subprocess
    import sys

    code = (
        "import sys, tooliqa.tools; "
        "print(sorted(m for m in ('tooliqa.tools.niqe', 'tooliqa.tools.brisque', "
        "'tooliqa.tools.piqe', 'scipy.ndimage') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_langchain_tool_descriptions_follow_the_box_convention(image_bytes):
    from tooliqa.tools import ViewSettings
    from tooliqa.tools.lc_tools import make_view_tools

    tools = make_view_tools(
        image_bytes, ViewSettings(convention="pixel"), enabled=["magnifier", "niqe"]
    )
    specs = {
        s["function"]["name"]: s["function"] for s in tool_specs(["magnifier", "niqe"], "pixel")
    }
    for t in tools:
        assert "pixel coordinates" in t.description
        assert t.description == specs[t.name]["description"]
