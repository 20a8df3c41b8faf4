"""Query-aware assessment: the plan, the prompts it adds, the answer with its evidence,
structured (JSON) answers, the classic backend and the CLI."""

from __future__ import annotations

import asyncio
import doctest
import json

import pytest

from tooliqa.api import assess, make_context
from tooliqa.cli import main
from tooliqa.graph import Assessment, Context, graph
from tooliqa.graph import query as query_module
from tooliqa.graph.parsing import parse_query_answer
from tooliqa.graph.prompts import GATE_PROMPT, RUBRIC_PROMPT
from tooliqa.graph.query import QueryPlan, plan_query
from tooliqa.graph.testing import ScriptedChatModel, tool_call_message

from _support import REPO, RUBRIC_REPLY

VIEWS = ("magnifier", "gamma_corrector")


def run(model: ScriptedChatModel, image: bytes, query: str | None, **ctx) -> Assessment:
    inputs = {"image": image, "image_name": "t.png", "image_question": query}
    out = asyncio.run(graph.ainvoke(inputs, context=Context(model=model, **ctx)))
    return Assessment.model_validate(out["assessment"])


def texts(call: dict) -> list[str]:
    out = []
    for msg in call["messages"]:
        if isinstance(msg.content, str):
            out.append(msg.content)
        else:
            out.append("".join(b.get("text", "") for b in msg.content if isinstance(b, dict)))
    return out


class TestPlan:
    @pytest.mark.parametrize(
        ("query", "kind", "focus", "region", "polarity", "overall"),
        [
            ("Is the sky noisy?", "yes_no", ("noise",), "sky", "defect", True),
            ("Is the night sky noisy", "yes_no", ("noise",), "night sky", "defect", True),
            ("Is the face in focus?", "yes_no", ("sharpness",), "face", "virtue", True),
            ("Is the image too dark?", "yes_no", ("exposure",), None, "defect", True),
            ("rate only the sharpness", "attribute", ("sharpness",), None, None, False),
            ("Just the noise, please", "attribute", ("noise",), None, None, False),
            ("How noisy are the shadows?", "attribute", ("noise",), "shadows", None, True),
            (
                "How sharp and colourful is it?",
                "attribute",
                ("sharpness", "colour"),
                None,
                None,
                True,
            ),
            ("Is this a good photo?", "yes_no", (), None, "virtue", True),
            ("Is this a bad photo?", "yes_no", (), None, "defect", True),
            ("Is the exposure too dark?", "yes_no", ("exposure",), None, "defect", True),
            ("Is the image free of noise?", "yes_no", ("noise",), None, "virtue", True),
            ("Is the image noise-free?", "yes_no", ("noise",), None, "virtue", True),
            ("Isn't it blurry?", "yes_no", ("sharpness",), None, "defect", True),
            ("Is the colour washed out?", "yes_no", ("colour",), None, "defect", True),
            ("Is the lighting too dim?", "yes_no", ("exposure",), None, "defect", True),
            (
                "Is the software screenshot sharp?",
                "yes_no",
                ("sharpness",),
                "software screenshot",
                "virtue",
                True,
            ),
            ("How little detail is there?", "attribute", ("sharpness",), None, None, True),
            ("Is the subject blurry?", "yes_no", ("sharpness",), "subject", "defect", True),
            ("Are the dark areas noisy?", "yes_no", ("noise",), "dark areas", "defect", True),
            (
                "rate only the noise in the dark areas",
                "attribute",
                ("noise",),
                "dark areas",
                None,
                False,
            ),
            (
                "rate only the sharpness of the subject",
                "attribute",
                ("sharpness",),
                "subject",
                None,
                False,
            ),
            ("Is the man's face blurry?", "yes_no", ("sharpness",), "man's face", "defect", True),
            ("Is the photo out of focus?", "yes_no", ("sharpness",), None, "defect", True),
            ("Is the image\ntoo  dark?", "yes_no", ("exposure",), None, "defect", True),
            ("Rate the overall quality", "overall", (), None, None, True),
            ("What is going on here?", "open", (), None, None, True),
        ],
    )
    def test_reads_the_question(self, query, kind, focus, region, polarity, overall):
        p = plan_query(query, VIEWS)
        assert (p.kind, p.focus, p.region, p.polarity, p.overall) == (
            kind,
            focus,
            region,
            polarity,
            overall,
        )

    def test_tools_are_the_enabled_ones_that_suit_the_focus(self):
        assert plan_query("Is it noisy?", VIEWS).tools == ("magnifier",)
        assert plan_query("Is it noisy?", (*VIEWS, "noise", "brisque")).tools == (
            "magnifier",
            "noise",
            "brisque",
        )
        assert plan_query("Is it too dark?", VIEWS).tools == ("gamma_corrector",)
        assert plan_query("Is it too dark?", ()).tools == ()
        assert plan_query("What is going on?", VIEWS).tools == VIEWS

    def test_round_trips_through_the_state_dict(self):
        p = plan_query("rate only the sharpness", VIEWS)
        d = p.as_dict()
        assert d["score_of"] == "sharpness" and d["focus"] == ["sharpness"]
        assert QueryPlan.from_dict(d) == p

    def test_empty_query_is_refused(self):
        with pytest.raises(ValueError, match="empty"):
            plan_query("   ")

    def test_parse_query_answer_takes_the_last_block(self):
        assert parse_query_answer("x <query_answer> a </query_answer> <query_answer>b\nc") == "b c"
        assert parse_query_answer("<answer>3</answer>") is None

    def test_module_doctest(self):
        assert doctest.testmod(query_module).failed == 0


class TestGraphFlow:
    def test_yes_no_question_is_planned_gathered_and_answered_with_evidence(self, image_bytes):
        m = ScriptedChatModel.from_replies(
            [
                RUBRIC_REPLY,
                tool_call_message("magnifier", {"bbox": [0, 0, 500, 400]}),
                "<thinking>grain</thinking> <answer>3.10</answer>\n"
                "<query_answer>Yes: the zoomed sky shows fine grain.</query_answer>",
            ]
        )
        a = run(m, image_bytes, "Is the sky noisy?")
        first = texts(m.calls[0])[-1]
        assert first.startswith(RUBRIC_PROMPT)  # Appendix A first, unchanged
        assert 'asks about this image: "Is the sky noisy?"' in first
        assert "Plan: the question is about Noise in the sky." in first
        assert "tools before answering: magnifier (aim the magnifier at the sky)" in first
        gate = texts(m.calls[1])[-1]
        assert gate.startswith(GATE_PROMPT) and "<query_answer>Yes or No" in gate
        assert a.score == 3.10 and a.ok
        qa = a.query_answer
        assert qa is not None
        assert qa["kind"] == "yes_no" and qa["verdict"] == "yes" and qa["region"] == "sky"
        assert qa["answer"] == "Yes: the zoomed sky shows fine grain."
        sources = [e["source"] for e in qa["evidence"]]
        assert sources == ["rubric", "magnifier"]
        assert qa["evidence"][0]["text"] == "Noise: none - clean"
        assert qa["evidence"][1]["text"].startswith("Magnifier view of region")
        assert qa["score"] is None and qa["score_of"] == "overall"

    def test_rate_only_an_attribute_answers_with_it_instead_of_overall(self, image_bytes):
        m = ScriptedChatModel.from_replies(
            [
                RUBRIC_REPLY,
                "<answer>2.50</answer><query_answer>Sharpness: 2.5. Soft edges.</query_answer>",
            ]
        )
        a = run(m, image_bytes, "rate only the sharpness")
        first = texts(m.calls[0])[-1]
        assert "INSTEAD of the overall quality" in first
        assert "<query_answer>Sharpness: X.X, then one sentence" in texts(m.calls[1])[-1]
        qa = a.query_answer
        assert qa["score_of"] == "sharpness" and qa["score"] == 2.5 and a.score == 2.5

    def test_attribute_question_takes_the_score_from_the_query_answer(self, image_bytes):
        m = ScriptedChatModel.from_replies(
            [RUBRIC_REPLY, "<answer>3.6</answer><query_answer>Noise: 4.5; clean</query_answer>"]
        )
        a = run(m, image_bytes, "How noisy is it?")
        assert a.query_answer["score"] == 4.5 and a.score == 3.6

    def test_missing_query_answer_is_noted_and_the_score_kept(self, image_bytes):
        m = ScriptedChatModel.from_replies([RUBRIC_REPLY, "<answer>3.0</answer>"])
        a = run(m, image_bytes, "Is the sky noisy?")
        assert a.ok and a.score == 3.0
        assert a.query_answer["answer"] == "" and a.query_answer["verdict"] is None
        assert "the answer did not answer the question (no <query_answer>)" in a.errors
        assert [e["source"] for e in a.query_answer["evidence"]] == ["rubric"]

    def test_no_verdict_word_is_noted(self, image_bytes):
        m = ScriptedChatModel.from_replies(
            [RUBRIC_REPLY, "<answer>3</answer><query_answer>Hard to say.</query_answer>"]
        )
        a = run(m, image_bytes, "Is the sky noisy?")
        assert a.query_answer["verdict"] is None
        assert any("neither yes nor no" in e for e in a.errors)

    def test_numbers_in_the_query_answer_are_not_the_score(self, image_bytes):
        m = ScriptedChatModel.from_replies(
            [RUBRIC_REPLY, "Score: 3.3\n<query_answer>Noise: 1.5</query_answer>"]
        )
        a = run(m, image_bytes, "How noisy is it?")
        assert a.score == 3.3 and a.query_answer["score"] == 1.5

    def test_without_a_query_there_is_no_plan_and_no_query_prompt(self, image_bytes):
        m = ScriptedChatModel.from_replies([RUBRIC_REPLY, "<answer>3</answer>"])

        async def events() -> list[str]:
            seen = []
            async for mode, chunk in graph.astream(
                {"image": image_bytes},
                context=Context(model=m),
                stream_mode=["updates", "custom"],
            ):
                seen += list(chunk) if mode == "updates" else [chunk["type"]]
            return seen

        seen = asyncio.run(events())
        assert "plan" not in seen and "observe" in seen
        assert texts(m.calls[0])[-1] == RUBRIC_PROMPT
        assert texts(m.calls[1])[-1] == GATE_PROMPT

    def test_plan_is_a_node_and_an_event(self, image_bytes):
        m = ScriptedChatModel.from_replies([RUBRIC_REPLY, "<answer>3</answer>"])

        async def events() -> list:
            seen = []
            async for mode, chunk in graph.astream(
                {"image": image_bytes, "image_question": "Is it too dark?"},
                context=Context(model=m),
                stream_mode=["updates", "custom"],
            ):
                seen.append((mode, chunk))
            return seen

        seen = asyncio.run(events())
        assert seen[0][0] == "custom" and seen[0][1]["type"] == "plan"
        assert seen[0][1]["plan"]["focus"] == ["exposure"]
        assert seen[1] == ("updates", {"plan": {"plan": seen[0][1]["plan"]}})
        assert "plan" in graph.get_graph().nodes


class TestStructuredAnswers:
    def test_schema_and_json_answer_carry_attributes_regions_and_query_answer(self, image_bytes):
        answer = {
            "thinking": "soft",
            "score": 2.8,
            "attributes": {
                "sharpness": 2.0,
                "noise": 4.0,
                "artifacts": 4.5,
                "exposure": 3.0,
                "visibility": 3.5,
            },
            "regions": [{"bbox": [0, 0, 500, 500], "label": "blur", "severity": "moderate"}],
            "query_answer": "No: the sky is clean.",
        }
        rubric = {
            k: {"level": lv, "note": "n"}
            for k, lv in [
                ("sharpness", "medium"),
                ("noise", "none"),
                ("artifacts", "none"),
                ("exposure", "good"),
                ("colour", "good"),
                ("visibility", "clear"),
            ]
        }
        m = ScriptedChatModel.from_replies([json.dumps(rubric), json.dumps(answer)])
        a = run(
            m,
            image_bytes,
            "Is the sky noisy?",
            structured_output=True,
            attribute_scores=True,
            report_regions=True,
            max_tool_rounds=0,
        )
        fmt = m.calls[1]["kwargs"]["response_format"]["json_schema"]["schema"]
        assert fmt["required"] == ["thinking", "score", "attributes", "regions", "query_answer"]
        assert fmt["properties"]["attributes"]["required"] == [
            "sharpness",
            "noise",
            "artifacts",
            "exposure",
            "visibility",
        ]
        assert fmt["properties"]["regions"]["items"]["properties"]["label"]["enum"][0] == "blur"
        final = texts(m.calls[1])[-1]
        assert '"query_answer"' in final and "<query_answer>" not in final
        assert "<attributes>" not in final and '"attributes"' in final
        assert a.score == 2.8
        assert a.attribute_scores == answer["attributes"]
        assert [r["source"] for r in a.regions] == ["answer"] and a.regions[0]["label"] == "blur"
        assert a.query_answer["verdict"] == "no"

    def test_schema_without_options_is_the_plain_one(self, image_bytes):
        m = ScriptedChatModel.from_replies(
            [RUBRIC_REPLY, json.dumps({"thinking": "ok", "score": 3})]
        )
        run(m, image_bytes, None, structured_output=True, max_tool_rounds=0)
        fmt = m.calls[1]["kwargs"]["response_format"]["json_schema"]["schema"]
        assert fmt["required"] == ["thinking", "score"]


class TestClassicBackend:
    def test_dark_image_question_uses_the_gamma_corrector_and_says_yes(self):
        a = assess(REPO / "examples" / "coffee_underexposed.jpg", query="Is the image too dark?")
        assert a.ok and a.steps and a.steps[0].tool == "gamma_corrector"
        assert a.steps[0].args == {"mode": "brighten"}
        qa = a.query_answer
        assert qa["verdict"] == "yes" and qa["focus"] == ["exposure"]
        assert qa["answer"].startswith("Yes. Evidence: Exposure ")
        assert "gamma_corrector" in [e["source"] for e in qa["evidence"]]

    def test_well_exposed_image_gets_no(self):
        a = assess(REPO / "examples" / "astronaut_pristine.jpg", query="Is the image too dark?")
        assert a.query_answer["verdict"] == "no"

    def test_rate_only_noise_answers_the_noise_score_after_measuring_it(self):
        from tooliqa.backends.classic import attribute_scores
        from tooliqa.tools import decode_image
        from tooliqa.tools.measures import measure

        path = REPO / "examples" / "chelsea_noisy.jpg"
        ctx = make_context(enabled_tools=(*VIEWS, "noise"))
        a = assess(path, query="rate only the noise", context=ctx)
        expected = attribute_scores(measure(decode_image(path.read_bytes()).rgb))["noise"]
        assert a.score == pytest.approx(expected) and a.query_answer["score"] == a.score
        assert [s.tool for s in a.steps][:2] == ["magnifier", "noise"]
        assert a.steps[1].raw is not None and a.steps[1].score_1_5 is not None
        assert "Noise sigma" in a.query_answer["answer"]


def test_cli_prints_the_question_and_answer(capsys):
    path = REPO / "examples" / "coffee_underexposed.jpg"
    assert main(["assess", str(path), "--query", "Is the image too dark?"]) == 0
    out, _ = capsys.readouterr()
    assert "\n  Q: Is the image too dark?\n  A: Yes." in out
    assert main(["assess", str(path), "--query", "rate only the sharpness", "--json"]) == 0
    record = json.loads(capsys.readouterr()[0].strip().splitlines()[-1])
    assert record["query_answer"]["score_of"] == "sharpness"


class TestReviewedEdgeCases:
    def test_magnifier_is_aimed_only_when_planned(self):
        only_noise = plan_query("Is the sky noisy?", ("noise",)).instructions()
        assert "magnifier" not in only_noise and "give the sky's bbox" in only_noise
        assert (
            "aim the magnifier at the sky" in plan_query("Is the sky noisy?", VIEWS).instructions()
        )
        gamma = plan_query("Are the shadows too dark?", VIEWS).instructions()
        assert "magnifier" not in gamma and "bbox" not in gamma

    def test_score_is_read_only_from_a_stated_attribute_score(self, image_bytes):
        m = ScriptedChatModel.from_replies(
            [
                RUBRIC_REPLY,
                "<answer>3</answer><query_answer>Yes. Where the noise: 2 small patches."
                "</query_answer>",
            ]
        )
        a = run(m, image_bytes, "Is the sky noisy?")  # a yes/no question states no score
        assert a.query_answer["score"] is None
        m = ScriptedChatModel.from_replies(
            [
                RUBRIC_REPLY,
                "<answer>3</answer><query_answer>It is grainy. Noise: 2/5</query_answer>",
            ]
        )
        assert run(m, image_bytes, "How noisy is it?").query_answer["score"] == 2.0

    def test_json_answer_naming_a_tag_in_its_text_still_parses(self, image_bytes):
        answer = {"thinking": "I list them under <regions> as asked", "score": 3.4, "regions": []}
        m = ScriptedChatModel.from_replies([RUBRIC_REPLY, json.dumps(answer)])
        a = run(
            m, image_bytes, None, structured_output=True, report_regions=True, max_tool_rounds=0
        )
        assert a.score == 3.4 and a.regions == []

    def test_structured_repair_asks_for_json_only(self, image_bytes):
        m = ScriptedChatModel.from_replies(
            [
                RUBRIC_REPLY,
                '{"thinking": "x", "score": 9}',
                json.dumps(
                    {
                        "thinking": "ok",
                        "score": 3,
                        "attributes": {"sharpness": 3},
                        "query_answer": "No.",
                    }
                ),
            ]
        )
        a = run(
            m,
            image_bytes,
            "Is the sky noisy?",
            structured_output=True,
            attribute_scores=True,
            max_tool_rounds=0,
        )
        repair = texts(m.calls[2])[-1]
        assert repair.startswith("Your last reply did not contain a valid final score")
        assert '"query_answer"' in repair and '"attributes"' in repair
        assert "<answer>" not in repair and "<query_answer>" not in repair
        assert "<attributes>" not in repair
        assert a.score == 3 and a.query_answer["verdict"] == "no"

    def test_multi_line_question_reaches_the_prompt_on_one_line(self, image_bytes):
        a = assess(REPO / "examples" / "coffee_underexposed.jpg", query="Is the image\ntoo dark?")
        assert a.query_answer["query"] == "Is the image too dark?"
        assert a.query_answer["verdict"] == "yes"

    @pytest.mark.parametrize(
        ("image", "query", "verdict"),
        [
            ("coffee_underexposed.jpg", "Is the exposure too dark?", "yes"),
            ("chelsea_noisy.jpg", "Is the image free of noise?", "no"),
            ("astronaut_pristine.jpg", "Is this a bad photo?", "no"),
            ("astronaut_pristine.jpg", "Is this a good photo?", "yes"),
        ],
    )
    def test_classic_verdicts_follow_the_questions_polarity(self, image, query, verdict):
        assert assess(REPO / "examples" / image, query=query).query_answer["verdict"] == verdict

    def test_samples_combine_the_query_answers(self):
        from tooliqa.api import combine_samples

        def sample(score: float, verdict: str) -> Assessment:
            qa = {"query": "rate only the noise", "score_of": "noise", "score": score}
            return Assessment(score=score, query_answer={**qa, "verdict": verdict})

        a = combine_samples([sample(2.0, "no"), sample(3.0, "yes"), sample(4.0, "yes")])
        assert a.score == 3.0 and a.query_answer["score"] == 3.0
        assert a.query_answer["verdict"] == "yes"
        assert [s["score"] for s in a.query_answer["samples"]] == [2.0, 3.0, 4.0]


def test_a_run_without_an_answer_keeps_the_plan(image_bytes):
    m = ScriptedChatModel.from_replies([RUBRIC_REPLY, "no idea", "still no idea"])
    a = run(m, image_bytes, "Is the sky noisy?", max_tool_rounds=1)
    assert a.score is None and a.error
    qa = a.query_answer
    assert qa["focus"] == ["noise"] and qa["region"] == "sky"
    assert qa["answer"] == "" and qa["verdict"] is None and qa["evidence"] == []
