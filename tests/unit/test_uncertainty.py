"""Score uncertainty: the expected score from digit logprobs, N-sample spread, graph/API/CLI."""

from __future__ import annotations

import asyncio
import json
import math
import threading

import pytest
from langchain_core.messages import AIMessage

from tooliqa.api import aassess, assess, combine_samples
from tooliqa.cli import main
from tooliqa.graph import Assessment, Context, graph
from tooliqa.graph.testing import ScriptedChatModel
from tooliqa.graph.uncertainty import (
    ScoreDistribution,
    Unavailable,
    from_logprobs,
    from_samples,
    logprob_content,
)

from _support import REPO, RUBRIC_REPLY

Z90 = 1.6448536269514722


def tok(token: str, alternatives: dict[str, float] | None = None) -> dict:
    """One OpenAI logprob entry; ``alternatives`` maps tokens to probabilities."""
    alts = alternatives or {token: 1.0}
    top = [{"token": t, "logprob": math.log(p)} for t, p in alts.items()]
    return {"token": token, "logprob": math.log(alts.get(token, 1.0)), "top_logprobs": top}


def answer_tokens(first: dict[str, float], second: dict[str, float]) -> list[dict]:
    """``<answer>3.20</answer>``: digit-by-digit tokens with the given alternatives."""
    return [
        tok("<answer>"),
        tok("3", first),
        tok("."),
        tok("2", second),
        tok("0"),
        tok("</answer>"),
    ]


FIRST = {"3": 0.6, "4": 0.3, "2": 0.1}
SECOND = {"2": 0.5, "5": 0.5}
# By hand: E[D0] = 3*.6 + 4*.3 + 2*.1 = 3.2;  E[D0^2] = 9*.6 + 16*.3 + 4*.1 = 10.6
#          Var[D0] = 10.6 - 3.2^2 = 0.36
#          E[D1] = (2 + 5)/2 = 3.5;  E[D1^2] = (4 + 25)/2 = 14.5;  Var[D1] = 14.5 - 12.25 = 2.25
#          D2 = 0 surely.
#          E[S] = 3.2 + 0.1*3.5 = 3.55;  Var[S] = 0.36 + 0.01*2.25 = 0.3825
HAND_MEAN, HAND_VAR = 3.55, 0.3825


class TestFromLogprobs:
    def test_hand_computed_expectation_and_variance(self):
        d = from_logprobs(answer_tokens(FIRST, SECOND), 3.2)
        assert isinstance(d, ScoreDistribution) and d.source == "logprobs" and d.n == 1
        assert d.mean == pytest.approx(HAND_MEAN)
        assert d.std**2 == pytest.approx(HAND_VAR)
        half = Z90 * math.sqrt(HAND_VAR)
        assert d.interval == pytest.approx((HAND_MEAN - half, HAND_MEAN + half))

    def test_alternatives_are_renormalised_over_allowed_digits(self):
        # '7' and 'x' are not allowed for the integer digit: .5 left on '2', .25 on '4'.
        first = {"2": 0.5, "4": 0.25, "7": 0.15, "x": 0.1}
        d = from_logprobs([tok("<answer>"), tok("2", first), tok("</answer>")], 2.0)
        assert isinstance(d, ScoreDistribution)
        assert d.mean == pytest.approx((2 * 0.5 + 4 * 0.25) / 0.75)
        assert d.extra["mass"] == pytest.approx(0.75)

    def test_json_answer_with_a_space_token(self):
        tokens = [tok('{"score":'), tok(" "), tok("4", {"4": 0.8, "5": 0.2}), tok("}")]
        d = from_logprobs(tokens, 4.0)
        assert isinstance(d, ScoreDistribution)
        assert d.mean == pytest.approx(4.2) and d.std**2 == pytest.approx(0.16)

    def test_interval_is_clipped_to_the_scale(self):
        d = from_logprobs([tok("<answer>"), tok("5", {"5": 0.5, "1": 0.5}), tok("</answer>")], 5.0)
        assert isinstance(d, ScoreDistribution)
        assert d.mean == pytest.approx(3.0) and d.interval == (1.0, 5.0)

    def test_merged_digit_tokens_give_a_reason(self):
        tokens = [tok("<answer>"), tok("3.25"), tok("</answer>")]
        out = from_logprobs(tokens, 3.25)
        assert isinstance(out, Unavailable) and "merged" in out.reason and "3.25" in out.reason
        split_badly = [tok("<answer>"), tok("3"), tok(".2"), tok("5"), tok("</answer>")]
        assert isinstance(from_logprobs(split_badly, 3.25), Unavailable)

    def test_missing_logprobs_give_a_reason(self):
        for content in (None, []):
            out = from_logprobs(content, 3.0)
            assert isinstance(out, Unavailable) and "no logprobs" in out.reason
        assert out.as_dict()["mean"] is None and out.as_dict()["note"] == out.reason

    def test_score_not_among_the_tokens(self):
        out = from_logprobs([tok("<answer>"), tok("4"), tok("</answer>")], 3.0)
        assert isinstance(out, Unavailable) and "not found" in out.reason

    def test_logprob_content_reads_langchain_metadata(self):
        entries = answer_tokens(FIRST, SECOND)
        assert logprob_content({"logprobs": {"content": entries, "refusal": None}}) == entries
        assert logprob_content({}) is None and logprob_content({"logprobs": None}) is None


class TestFromSamples:
    def test_hand_computed_mean_std_and_t_interval(self):
        d = from_samples([2.5, 3.0, 4.0])
        mean = 9.5 / 3
        var = ((2.5 - mean) ** 2 + (3.0 - mean) ** 2 + (4.0 - mean) ** 2) / 2
        half = 2.919985580355516 * math.sqrt(var) * math.sqrt(1 + 1 / 3)  # t(0.95, df=2)
        assert d.mean == pytest.approx(mean) and d.std == pytest.approx(math.sqrt(var))
        assert d.interval == pytest.approx((max(1.0, mean - half), min(5.0, mean + half)))
        assert d.as_dict()["scores"] == [2.5, 3.0, 4.0] and d.n == 3

    def test_identical_samples_say_so(self):
        d = from_samples([3.0, 3.0])
        assert d.std == 0.0 and d.interval == (3.0, 3.0) and "deterministic" in d.note

    def test_empty_is_an_error(self):
        with pytest.raises(ValueError):
            from_samples([])


def with_logprobs(text: str, tokens: list[dict]) -> AIMessage:
    return AIMessage(content=text, response_metadata={"logprobs": {"content": tokens}})


def run(model: ScriptedChatModel, image: bytes, **ctx) -> Assessment:
    out = asyncio.run(graph.ainvoke({"image": image}, context=Context(model=model, **ctx)))
    return Assessment.model_validate(out["assessment"])


class TestGraph:
    def test_answer_logprobs_fill_the_assessment(self, image_bytes):
        reply = with_logprobs("<answer>3.20</answer>", answer_tokens(FIRST, SECOND))
        m = ScriptedChatModel.from_replies([RUBRIC_REPLY, reply])
        a = run(m, image_bytes, max_tool_rounds=0, score_logprobs=True)
        assert a.score == 3.2
        u = a.uncertainty
        assert u is not None and u["source"] == "logprobs" and u["n"] == 1
        assert u["mean"] == pytest.approx(HAND_MEAN) and u["std"] ** 2 == pytest.approx(
            HAND_VAR, abs=1e-3
        )
        rubric_call, answer_call = m.calls
        assert "logprobs" not in rubric_call["kwargs"]
        assert answer_call["kwargs"]["logprobs"] is True
        assert answer_call["kwargs"]["top_logprobs"] == 5
        # JSON round trip keeps it; older JSON without the field still loads.
        assert Assessment.model_validate_json(a.to_json()).uncertainty == u
        old = json.loads(a.to_json())
        del old["uncertainty"]
        assert Assessment.model_validate(old).uncertainty is None

    def test_logprobs_are_asked_on_the_gate_and_answer_calls_not_the_rubric(self, image_bytes):
        from tooliqa.graph.testing import tool_call_message

        m = ScriptedChatModel.from_replies(
            [
                RUBRIC_REPLY,
                tool_call_message("gamma_corrector", {"mode": "brighten"}, "c1"),
                "<answer>2.50</answer>",  # no logprobs returned
            ]
        )
        a = run(m, image_bytes, max_tool_rounds=1, score_logprobs=True)
        assert [("logprobs" in c["kwargs"]) for c in m.calls] == [False, True, True]
        assert a.uncertainty is not None and a.uncertainty["mean"] is None
        assert "no logprobs" in a.uncertainty["note"]

    def test_an_answer_given_at_the_gate_gets_its_distribution_too(self, image_bytes):
        reply = with_logprobs("<answer>3.20</answer>", answer_tokens(FIRST, SECOND))
        m = ScriptedChatModel.from_replies([RUBRIC_REPLY, reply])
        a = run(m, image_bytes, score_logprobs=True)
        assert len(m.calls) == 2 and m.calls[1]["kwargs"]["logprobs"] is True
        assert a.score == 3.2 and a.uncertainty["source"] == "logprobs"
        assert a.uncertainty["mean"] is not None

    def test_off_by_default(self, image_bytes):
        reply = with_logprobs("<answer>3.20</answer>", answer_tokens(FIRST, SECOND))
        m = ScriptedChatModel.from_replies([RUBRIC_REPLY, reply])
        a = run(m, image_bytes, max_tool_rounds=0)
        assert a.uncertainty is None and "logprobs" not in m.calls[-1]["kwargs"]


class TestSamples:
    def scripted(self, scores: list[str]) -> ScriptedChatModel:
        lock = threading.Lock()
        pending = list(scores)

        def reply(messages, kwargs):
            if len(messages) == 2:  # system + image: the rubric turn
                return RUBRIC_REPLY
            with lock:
                score = pending.pop(0)
            if score == "boom":  # this sample's server call fails
                raise RuntimeError("connection reset")
            return f"<answer>{score}</answer>"

        return ScriptedChatModel.from_replies([reply] * (2 * len(scores)))

    def test_a_sample_that_raises_is_a_failed_sample(self, image_bytes):
        m = self.scripted(["3.00", "boom", "4.00"])
        a = assess(image_bytes, context=Context(model=m, max_tool_rounds=0), samples=3)
        assert a.score == pytest.approx(3.5) and a.error is None
        assert a.uncertainty["n"] == 2 and "1 of 3 samples gave no score" in a.uncertainty["note"]
        assert "sample failed: RuntimeError: connection reset" in a.errors

    def test_every_sample_raising_raises(self, image_bytes):
        m = self.scripted(["boom", "boom"])
        with pytest.raises(RuntimeError, match="connection reset"):
            assess(image_bytes, context=Context(model=m, max_tool_rounds=0), samples=2)

    def test_three_samples_mean_std_interval(self, image_bytes):
        m = self.scripted(["3.00", "3.20", "3.70"])
        a = assess(image_bytes, context=Context(model=m, max_tool_rounds=0), samples=3)
        # By hand: mean 3.3; deviations -.3, -.1, .4; s^2 = (.09 + .01 + .16) / 2 = 0.13;
        # 90% prediction interval 3.3 +- t(0.95, 2) * s * sqrt(1 + 1/3).
        std = math.sqrt(0.13)
        half = 2.919985580355516 * std * math.sqrt(4 / 3)
        u = a.uncertainty
        assert a.score == pytest.approx(3.3) and u["source"] == "samples"
        assert u["n"] == 3 and sorted(u["scores"]) == [3.0, 3.2, 3.7]
        assert u["std"] == pytest.approx(std, abs=1e-4)
        assert u["interval"] == pytest.approx([3.3 - half, 3.3 + half], abs=1e-4)
        assert a.usage.model_calls == 6 and a.rubric and a.error is None

    def test_failed_samples_are_counted_not_averaged(self):
        ok = [Assessment(score=s, rationale=str(s)) for s in (3.0, 4.0)]
        bad = Assessment(error="no valid score after the repair prompt(s)")
        a = combine_samples([bad, *ok])
        assert a.score == 3.5 and a.rationale == "3.0" and a.uncertainty["n"] == 2
        assert "1 of 3 samples gave no score" in a.uncertainty["note"]
        assert any(e.startswith("sample failed") for e in a.errors)
        assert combine_samples([bad, bad]).score is None

    def test_samples_must_be_positive(self, image_bytes):
        with pytest.raises(ValueError):
            asyncio.run(aassess(image_bytes, samples=0))


def test_cli_samples_json_on_the_classic_backend(capsys):
    image = str(REPO / "examples" / "coffee_blurred.jpg")
    code = main(["assess", image, "--samples", "2", "--json"])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    record = json.loads(out[-1])
    u = record["uncertainty"]
    assert u["source"] == "samples" and u["n"] == 2 and u["std"] == 0.0
    assert "deterministic" in u["note"] and u["interval"] == [record["score"]] * 2


def test_cli_text_output_shows_score_plus_minus_std(capsys):
    image = str(REPO / "examples" / "coffee_blurred.jpg")
    assert main(["assess", image, "--samples", "2"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "± 0.00 [" in line
