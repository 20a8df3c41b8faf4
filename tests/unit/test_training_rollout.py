"""Rollout requests, protocol checks on real graph runs, rollout records, the turn
batcher and the message conversion of the training bridge (all CPU, no model)."""

from __future__ import annotations

import asyncio
import base64
import json

import numpy as np
import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from PIL import Image

from tooliqa.graph import Assessment, Context, graph
from tooliqa.graph.testing import ScriptedChatModel
from tooliqa.training.bridge import (
    BridgeError,
    GenerationRequest,
    GenerationResult,
    TokenLedger,
    TurnBatcher,
    to_hf_messages,
)
from tooliqa.training.rewards import FormatReward, format_scores
from tooliqa.training.rollout import (
    REQUEST_KIND,
    GraphRollout,
    RolloutError,
    collate,
    parse_request,
    rollout_request,
)
from tooliqa.training.trajectory import ROLLOUT_KEYS, protocol_checks, rollout_record

from _support import RUBRIC_REPLY, png_bytes

ALL_GOOD = {
    "rubric_ok": True,
    "thinking": True,
    "single_action": True,
    "tool_calls_valid": True,
    "answer_tagged": True,
    "score_in_range": True,
    "repaired": False,
}


def text_call(name: str, args: dict) -> str:
    return f"<tool_call>{json.dumps({'name': name, 'arguments': args})}</tool_call>"


def assess(image: bytes, replies: list, **ctx) -> Assessment:
    """Run the real graph with the text tool protocol, as rollouts do."""
    model = ScriptedChatModel.from_replies(replies)
    out = asyncio.run(
        graph.ainvoke(
            {"image": image, "image_name": "t.png"},
            context=Context(model=model, tool_protocol="text", **ctx),
        )
    )
    return Assessment.model_validate(out["assessment"])


# --- rollout requests --------------------------------------------------------------------


class TestRolloutRequest:
    def test_round_trip_without_query(self):
        prompt = rollout_request("/data/kadid/I01_01_01.png")
        assert [m["role"] for m in prompt] == ["user"]
        assert json.loads(prompt[0]["content"]) == {
            "kind": REQUEST_KIND,
            "image": "/data/kadid/I01_01_01.png",
        }
        assert parse_request(prompt) == ("/data/kadid/I01_01_01.png", None)

    def test_round_trip_with_a_non_ascii_query(self):
        prompt = rollout_request("im.png", "Ist der Himmel verrauscht? ü")
        assert "ü" in prompt[0]["content"]  # kept readable in logs
        assert parse_request(prompt) == ("im.png", "Ist der Himmel verrauscht? ü")

    def test_path_objects_become_strings(self, tmp_path):
        assert parse_request(rollout_request(tmp_path / "a.png")) == (str(tmp_path / "a.png"), None)

    def test_trl_content_blocks_are_joined(self):
        text = rollout_request("im.png", "q?")[0]["content"]
        half = len(text) // 2
        prompt = [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": text[:half]},
                    {"type": "text", "text": text[half:]},
                ],
            }
        ]
        assert parse_request(prompt) == ("im.png", "q?")

    def test_the_last_message_and_bare_strings_are_read(self):
        text = rollout_request("im.png")[0]["content"]
        assert parse_request(
            [{"role": "system", "content": "x"}, {"role": "user", "content": text}]
        )
        assert parse_request(text) == ("im.png", None)

    @pytest.mark.parametrize(
        "prompt, detail",
        [
            ([{"role": "user", "content": "rate this image please"}], "Expecting value"),
            ([{"role": "user", "content": '{"kind": "other/1", "image": "a.png"}'}], "'other/1'"),
            ([{"role": "user", "content": json.dumps({"kind": REQUEST_KIND})}], "'image'"),
            ([{"role": "user"}], "'content'"),
            ([], "list index"),
            (None, ""),
        ],
        ids=["not-json", "wrong-kind", "missing-image", "no-content", "empty", "none"],
    )
    def test_malformed_prompts_raise_a_helpful_error(self, prompt, detail):
        with pytest.raises(RolloutError) as info:
            parse_request(prompt)
        message = str(info.value)
        assert "not a rollout request" in message and detail in message
        assert "rollout_request" in message  # says how to build a good one
        assert info.value.__cause__ is None and info.value.__suppress_context__

    @pytest.mark.parametrize("content", ["[1, 2]", "null", "3"])
    def test_json_that_is_not_an_object_is_a_rollout_error(self, content):
        with pytest.raises(RolloutError, match="not a rollout request"):
            parse_request([{"role": "user", "content": content}])

    def test_graph_rollout_rejects_bad_prompts_before_generating(self):
        class NeverCalled:
            def generate(self, requests):
                raise AssertionError("generator must not be called")

        rollout = GraphRollout(make_generator=lambda trainer: NeverCalled())
        with pytest.raises(RolloutError, match="not a rollout request"):
            rollout.run(
                [rollout_request("a.png"), [{"role": "user", "content": "hi"}]],
                NeverCalled(),
                processor=None,
            )


# --- protocol checks on real graph runs --------------------------------------------------


def thought(reply: str, why: str = "looked again") -> str:
    """A reply in the Appendix A form: a thinking block, then the action."""
    return f"<thinking>{why}</thinking> {reply}"


class TestProtocolChecks:
    def test_clean_run_passes_every_check(self, image_bytes):
        a = assess(
            image_bytes,
            [
                RUBRIC_REPLY,
                thought(text_call("magnifier", {"bbox": [0, 0, 500, 500]})),
                thought("<answer>3.50</answer>"),
            ],
        )
        assert a.score == 3.5 and [s.ok for s in a.steps] == [True]
        assert protocol_checks(a) == ALL_GOOD
        assert [(t.turn, t.action) for t in a.protocol] == [
            ("rubric", "rubric"),
            ("gate", "tool_call"),
            ("gate", "answer"),
        ]

    def test_failed_tool_call_is_not_a_protocol_violation(self, image_bytes):
        a = assess(
            image_bytes,
            [
                RUBRIC_REPLY,
                thought(text_call("magnifier", {"bbox": [0, 0, 5, 5]})),
                thought("<answer>3</answer>"),
            ],
        )
        assert [s.ok for s in a.steps] == [False] and a.errors  # the failure is recorded
        assert protocol_checks(a) == ALL_GOOD
        assert a.protocol[1].tool_call_valid is True

    @pytest.mark.parametrize(
        "call",
        [
            text_call("sharpen", {"amount": 2}),  # no such tool
            text_call("gamma_corrector", {"mode": "sideways"}),  # not one of its options
            text_call("gamma_corrector", {"gamma": 9}),  # outside the schema's range
            text_call("gamma_corrector", {"mode": "brighten", "gamma": 3}),  # contradicts itself
            '<tool_call>{"name": "magnifier", "arguments": {bbox: [1, 2</tool_call>',  # not JSON
        ],
    )
    def test_an_invalid_call_breaks_tool_calls_valid(self, image_bytes, call):
        a = assess(image_bytes, [RUBRIC_REPLY, thought(call), thought("<answer>3</answer>")])
        assert a.score == 3.0 and [s.ok for s in a.steps] == [False]
        assert protocol_checks(a) == {**ALL_GOOD, "tool_calls_valid": False}

    def test_the_papers_gamma_words_are_valid_calls(self, image_bytes):
        call = text_call("gamma_corrector", {"mode": "darkening"})
        a = assess(image_bytes, [RUBRIC_REPLY, thought(call), thought("<answer>3</answer>")])
        assert [(s.ok, s.gamma) for s in a.steps] == [(True, 2.0)]
        assert protocol_checks(a) == ALL_GOOD

    def test_answer_without_tag_is_read_leniently(self, image_bytes):
        a = assess(image_bytes, [RUBRIC_REPLY, thought("Overall the quality score is 3.5.")])
        assert a.score == 3.5
        assert protocol_checks(a) == {**ALL_GOOD, "answer_tagged": False}

    def test_a_reply_without_thinking_breaks_thinking(self, image_bytes):
        a = assess(image_bytes, [RUBRIC_REPLY, "<answer>3.5</answer>"])
        assert a.score == 3.5
        assert protocol_checks(a) == {**ALL_GOOD, "thinking": False}
        assert [t.thinking for t in a.protocol] == [True, False]

    def test_tool_call_and_answer_in_one_turn_break_single_action(self, image_bytes):
        both = thought(text_call("magnifier", {"bbox": [0, 0, 500, 500]}) + "<answer>4</answer>")
        a = assess(image_bytes, [RUBRIC_REPLY, both, thought("<answer>3</answer>")])
        assert [s.tool for s in a.steps] == ["magnifier"]  # the first action is taken
        assert protocol_checks(a) == {**ALL_GOOD, "single_action": False}

    def test_two_tool_calls_in_one_turn_break_single_action(self, image_bytes):
        two = text_call("gamma_corrector", {"mode": "darken"}) + text_call(
            "magnifier", {"bbox": [0, 0, 500, 500]}
        )
        a = assess(image_bytes, [RUBRIC_REPLY, thought(two), thought("<answer>3</answer>")])
        assert [s.tool for s in a.steps] == ["gamma_corrector"]  # the extra one was not run
        assert any("extra tool call(s) ignored" in e for e in a.errors)
        assert protocol_checks(a) == {**ALL_GOOD, "single_action": False}

    def test_unparseable_rubric_note(self, image_bytes):
        a = assess(image_bytes, [thought("no idea what you want"), thought("<answer>3</answer>")])
        assert a.rubric == {} and a.score == 3.0
        assert protocol_checks(a) == {**ALL_GOOD, "rubric_ok": False}

    def test_malformed_final_answer_needs_the_repair_prompt(self, image_bytes):
        a = assess(
            image_bytes,
            [RUBRIC_REPLY, thought("It looks fine to me."), thought("<answer>3.3</answer>")],
        )
        assert a.score == 3.3 and a.error is None
        assert protocol_checks(a) == {**ALL_GOOD, "repaired": True}
        assert [t.turn for t in a.protocol] == ["rubric", "gate", "repair"]

    def test_malformed_answer_after_the_tool_limit_is_repaired(self, image_bytes):
        a = assess(
            image_bytes,
            [
                RUBRIC_REPLY,
                thought(text_call("magnifier", {"bbox": [0, 0, 900, 900]})),
                thought("hmm"),
                thought("<answer>2</answer>"),
            ],
            max_tool_rounds=1,
        )
        assert a.score == 2.0 and a.forced_answer
        assert any("final answer unusable" in e for e in a.errors)
        assert protocol_checks(a) == {**ALL_GOOD, "repaired": True}
        assert [t.turn for t in a.protocol] == ["rubric", "gate", "final", "repair"]

    def test_score_out_of_range_never_fixed(self, image_bytes):
        a = assess(
            image_bytes,
            [RUBRIC_REPLY, thought("<answer>7</answer>"), thought("<answer>9</answer>")],
        )
        assert a.score is None and a.error == "no valid score after the repair prompt(s)"
        assert protocol_checks(a) == {
            **ALL_GOOD,
            "answer_tagged": False,
            "score_in_range": False,
            "repaired": True,
        }
        assert [t.score_in_range for t in a.protocol[1:]] == [False, False]

    def test_score_range_is_a_parameter(self, image_bytes):
        a = assess(image_bytes, [RUBRIC_REPLY, thought("<answer>4.5</answer>")])
        assert protocol_checks(a)["score_in_range"]
        assert not protocol_checks(a, score_range=(1.0, 4.0))["score_in_range"]
        assert not protocol_checks(a.model_copy(update={"score": float("nan")}))["score_in_range"]

    def test_checks_read_the_typed_record_not_the_error_text(self, image_bytes):
        a = assess(image_bytes, [RUBRIC_REPLY, thought("<answer>4.5</answer>")])
        reworded = a.model_copy(
            update={"errors": ["score read leniently", "extra tool call(s) ignored"]}
        )
        assert protocol_checks(reworded) == protocol_checks(a) == ALL_GOOD
        unrecorded = protocol_checks(a.model_copy(update={"protocol": []}))
        assert unrecorded == {**dict.fromkeys(ALL_GOOD, False), "score_in_range": True}


class TestRepliesOfARealModel:
    """The issue's first three rows through the real graph: score, tool call, format reward."""

    def _format(self, a: Assessment) -> float:
        rec = rollout_record(TokenLedger(prompt_ids=[1]), a)
        return FormatReward()(protocol=[rec["protocol"]], pred_score=[rec["pred_score"]])[0]

    def test_a_tag_named_in_the_thinking_does_not_hide_the_tool_call(self, image_bytes):
        call = (
            "<thinking>Too early for an <answer>; zoom into the face.</thinking>"
            '<tool_call>{"name": "magnifier", "arguments": {"bbox_2d": [100, 200, 600, 700]}}'
            "</tool_call>"
        )
        a = assess(image_bytes, [RUBRIC_REPLY, call, thought("<answer>3.10</answer>")])
        assert [(s.tool, s.ok) for s in a.steps] == [("magnifier", True)]
        assert a.score == 3.1  # not the "2" of bbox_2d
        rec = rollout_record(TokenLedger(prompt_ids=[1]), a)
        assert (rec["tool_calls"], rec["tool_successes"]) == (1, 1)
        assert self._format(a) == 1.0

    def test_a_tag_named_in_the_thinking_is_not_a_tool_call(self, image_bytes):
        reply = "<thinking>No need for a <tool_call>: it is clean.</thinking><answer>4.2</answer>"
        a = assess(image_bytes, [RUBRIC_REPLY, reply])
        assert a.score == 4.2 and a.steps == [] and a.errors == []
        rec = rollout_record(TokenLedger(prompt_ids=[1]), a)
        assert rec["tool_calls"] == 0  # not tool use for BATE or the tool rate
        assert self._format(a) == 1.0

    def test_the_gate_wording_echoed_is_not_the_score(self, image_bytes):
        reply = thought("<answer>Final answer (1.00 - 5.00): 3.62</answer>")
        a = assess(image_bytes, [RUBRIC_REPLY, reply])
        assert a.score == 3.62 and a.errors == []
        assert self._format(a) == 1.0

    def test_a_tool_call_and_an_answer_in_one_turn_lose_format_reward(self, image_bytes):
        both = thought(text_call("magnifier", {"bbox": [0, 0, 500, 500]}) + "<answer>4</answer>")
        a = assess(image_bytes, [RUBRIC_REPLY, both, thought("<answer>3</answer>")])
        assert self._format(a) < 1.0

    def test_replies_without_thinking_lose_format_reward(self, image_bytes):
        a = assess(image_bytes, [RUBRIC_REPLY, "<answer>3.5</answer>"])
        assert a.score == 3.5 and self._format(a) < 1.0


# --- rollout records ---------------------------------------------------------------------


def ledger_with_turns() -> TokenLedger:
    """prompt [1, 2, 3]; reply [10, 11]; environment [20, 21, 22]; reply [12] (cut short)."""
    ledger = TokenLedger(prompt_ids=[1, 2, 3])
    ledger.add_model(GenerationResult([10, 11], [-0.5, -0.25], finished=True))
    ledger.add_env([20, 21, 22])
    ledger.add_model(GenerationResult([12], [-1.0], finished=False))
    ledger.images.append(Image.new("RGB", (4, 4)))
    return ledger


def decode(ids) -> str:
    return ",".join(map(str, ids))


class TestRolloutRecord:
    def test_tokens_mask_and_logprobs(self, image_bytes):
        ledger = ledger_with_turns()
        a = assess(image_bytes, [RUBRIC_REPLY, thought("<answer>3.25</answer>")])
        rec = rollout_record(ledger, a, decode=decode)
        assert tuple(rec) == ROLLOUT_KEYS
        assert rec["prompt_ids"] == [1, 2, 3]
        assert rec["completion_ids"] == [10, 11, 20, 21, 22, 12]
        assert rec["env_mask"] == [1, 1, 0, 0, 0, 1]
        assert rec["logprobs"] == [-0.5, -0.25, 0.0, 0.0, 0.0, -1.0]
        assert rec["completion_text"] == "10,11,20,21,22,12"
        assert len(rec["images"]) == 1 and ledger.truncated_turns == 1
        assert rec["pred_score"] == 3.25 and rec["rollout_error"] is None
        assert rec["protocol"] == ALL_GOOD
        ledger.add_env([99])  # the record holds copies
        assert rec["completion_ids"][-1] == 12 and rec["env_mask"][-1] == 1

    def test_without_decode_the_text_is_empty(self, image_bytes):
        a = assess(image_bytes, [RUBRIC_REPLY, "<answer>3</answer>"])
        assert rollout_record(ledger_with_turns(), a)["completion_text"] == ""

    @pytest.mark.parametrize(
        "ledger",
        [
            TokenLedger(completion_ids=[1, 2], completion_mask=[1], logprobs=[0.0, 0.0]),
            TokenLedger(completion_ids=[1, 2], completion_mask=[1, 1], logprobs=[0.0]),
        ],
        ids=["mask", "logprobs"],
    )
    def test_inconsistent_ledger_raises(self, ledger, image_bytes):
        a = assess(image_bytes, [RUBRIC_REPLY, "<answer>3</answer>"])
        with pytest.raises(ValueError, match="ledger is inconsistent"):
            rollout_record(ledger, a)

    def test_ledger_refuses_a_logprob_count_that_differs(self):
        with pytest.raises(BridgeError, match="logprob count"):
            TokenLedger().add_model(GenerationResult([1, 2], [0.0], finished=True))

    def test_tool_counts_come_from_the_steps(self, image_bytes):
        a = assess(
            image_bytes,
            [
                RUBRIC_REPLY,
                text_call("magnifier", {"bbox": [0, 0, 500, 500]}),
                text_call("gamma_corrector", {"gamma": 99}),  # refused: out of range
                "<answer>2.5</answer>",
            ],
        )
        assert [s.ok for s in a.steps] == [True, False]
        rec = rollout_record(ledger_with_turns(), a)
        assert rec["tool_calls"] == 2 and rec["tool_successes"] == 1
        assert rec["tools_used"] == ["magnifier", "gamma_corrector"]

    def test_failed_graph_run_is_penalised_and_says_why(self):
        rec = rollout_record(ledger_with_turns(), None, error="BridgeError: history edited")
        assert tuple(rec) == ROLLOUT_KEYS
        assert rec["pred_score"] is None and rec["rollout_error"] == "BridgeError: history edited"
        assert (rec["tool_calls"], rec["tool_successes"], rec["tools_used"]) == (0, 0, [])
        assert set(rec["protocol"]) == set(ALL_GOOD)
        p = rec["protocol"]
        assert not (p["rubric_ok"] or p["answer_tagged"] or p["score_in_range"])
        assert rec["completion_ids"] == [10, 11, 20, 21, 22, 12]  # the tokens still train

    def test_failed_graph_run_earns_no_format_reward(self):
        rec = rollout_record(ledger_with_turns(), None, error="RuntimeError: boom")
        assert format_scores([rec["protocol"]], [rec["pred_score"]]).tolist() == [0.0]

    def test_collate_gives_columns_in_order(self, image_bytes):
        a = assess(image_bytes, [RUBRIC_REPLY, "<answer>4</answer>"])
        records = [
            rollout_record(ledger_with_turns(), a),
            rollout_record(TokenLedger(prompt_ids=[5]), None, error="x"),
        ]
        cols = collate(records)
        assert tuple(cols) == ROLLOUT_KEYS
        assert cols["pred_score"] == [4.0, None]
        assert cols["rollout_error"] == [None, "x"]
        assert cols["prompt_ids"] == [[1, 2, 3], [5]]
        assert all(len(v) == 2 for v in cols.values())
        assert collate([]) == {k: [] for k in ROLLOUT_KEYS}


# --- the turn batcher --------------------------------------------------------------------


class FakeGenerator:
    """Records batch sizes; every reply is [7, 8]. ``fail_on`` (1-based call numbers) raise."""

    def __init__(self, fail_on=(), short=False):
        self.sizes: list[int] = []
        self.fail_on = set(fail_on)
        self.short = short

    def generate(self, requests):
        self.sizes.append(len(requests))
        if len(self.sizes) in self.fail_on:
            raise RuntimeError(f"boom on call {len(self.sizes)}")
        results = [GenerationResult([7, 8], [-0.1, -0.2], True) for _ in requests]
        return results[:-1] if self.short else results


def request(i: int = 0) -> GenerationRequest:
    return GenerationRequest(input_ids=[i], images=[], max_new_tokens=4)


async def conversation(batcher: TurnBatcher, turns: int) -> list[list[int]]:
    replies = []
    for i in range(turns):
        result = await batcher.generate(request(i))
        replies.append(result.token_ids)
    return replies


async def run_with_timeout(batcher: TurnBatcher, coros) -> list:
    return await asyncio.wait_for(batcher.run(coros), timeout=10)


class TestTurnBatcher:
    async def test_lockstep_conversations_batch_into_one_call_per_turn(self):
        gen = FakeGenerator()
        batcher = TurnBatcher(gen)
        out = await run_with_timeout(batcher, [conversation(batcher, 3) for _ in range(4)])
        assert gen.sizes == [4, 4, 4]
        assert out == [[[7, 8]] * 3] * 4
        assert batcher.calls == 3 and batcher.batch_sizes == [4, 4, 4]

    async def test_conversations_that_finish_early_shrink_later_batches(self):
        gen = FakeGenerator()
        batcher = TurnBatcher(gen)
        out = await run_with_timeout(batcher, [conversation(batcher, k) for k in (0, 1, 3, 2)])
        assert gen.sizes == [3, 2, 1]
        assert [len(r) for r in out] == [0, 1, 3, 2]

    async def test_a_conversation_doing_other_async_work_is_waited_for(self):
        gen = FakeGenerator()
        batcher = TurnBatcher(gen)

        async def slow(turns):
            await asyncio.sleep(0.05)  # e.g. reading the image
            return await conversation(batcher, turns)

        await run_with_timeout(batcher, [conversation(batcher, 2), slow(2)])
        assert gen.sizes == [2, 2]

    async def test_batches_go_out_in_conversation_order_not_arrival_order(self):
        seen: list[list[int]] = []

        class Recording(FakeGenerator):
            def generate(self, requests):
                seen.append([r.input_ids[0] for r in requests])
                return super().generate(requests)

        batcher = TurnBatcher(Recording())

        async def late(k: int):
            await asyncio.sleep(0.01 * (4 - k))  # the last conversation asks first
            for turn in range(2):
                await batcher.generate(request(10 * k + turn), order=k)

        await run_with_timeout(batcher, [late(k) for k in range(4)])
        assert seen == [[0, 10, 20, 30], [1, 11, 21, 31]]

    async def test_generator_error_reaches_exactly_the_waiting_conversations(self):
        gen = FakeGenerator(fail_on={2})
        batcher = TurnBatcher(gen)
        out = await run_with_timeout(batcher, [conversation(batcher, k) for k in (1, 2, 2)])
        assert gen.sizes == [3, 2]
        assert out[0] == [[7, 8]]
        for exc in out[1:]:
            assert isinstance(exc, RuntimeError) and str(exc) == "boom on call 2"

    async def test_a_conversation_may_retry_after_a_generator_error(self):
        gen = FakeGenerator(fail_on={1})
        batcher = TurnBatcher(gen)

        async def retrying():
            try:
                await batcher.generate(request())
            except RuntimeError:
                return (await batcher.generate(request())).token_ids
            return None

        out = await run_with_timeout(batcher, [retrying(), retrying()])
        assert out == [[7, 8], [7, 8]] and gen.sizes == [2, 2]

    async def test_wrong_result_count_is_a_bridge_error_for_the_batch(self):
        batcher = TurnBatcher(FakeGenerator(short=True))
        out = await run_with_timeout(batcher, [conversation(batcher, 1) for _ in range(2)])
        assert all(isinstance(e, BridgeError) and "1 results for 2" in str(e) for e in out)

    async def test_a_conversation_that_raises_before_asking_does_not_hang(self):
        gen = FakeGenerator()
        batcher = TurnBatcher(gen)

        async def broken():
            raise ValueError("unreadable image")

        out = await run_with_timeout(
            batcher, [conversation(batcher, 2), broken(), conversation(batcher, 2)]
        )
        assert out[0] == out[2] == [[7, 8], [7, 8]]
        assert isinstance(out[1], ValueError) and str(out[1]) == "unreadable image"
        assert gen.sizes == [2, 2]

    async def test_no_conversations(self):
        gen = FakeGenerator()
        assert await run_with_timeout(TurnBatcher(gen), []) == []
        assert gen.sizes == []

    async def test_lockstep_joins_empty_calls_until_every_rank_is_done(self):
        gen = FakeGenerator()
        asked: list[bool] = []
        answers = iter([True, True, True, False])  # other ranks still busy for two more calls

        def lockstep(local_has_work: bool) -> bool:
            asked.append(local_has_work)
            return next(answers)

        batcher = TurnBatcher(gen, lockstep=lockstep)
        out = await run_with_timeout(batcher, [conversation(batcher, 1)])
        assert out == [[[7, 8]]]
        assert asked == [True, False, False, False]
        assert gen.sizes == [1, 0, 0]
        assert batcher.calls == 3

    async def test_lockstep_false_with_no_local_work_stops_at_once(self):
        gen = FakeGenerator()
        batcher = TurnBatcher(gen, lockstep=lambda has_work: has_work)
        out = await run_with_timeout(batcher, [conversation(batcher, 2), conversation(batcher, 1)])
        assert [len(r) for r in out] == [2, 1] and gen.sizes == [2, 1]

    async def test_generate_outside_run_is_an_error(self):
        batcher = TurnBatcher(FakeGenerator())
        with pytest.raises(BridgeError, match=r"outside TurnBatcher\.run"):
            await batcher.generate(request())
        await run_with_timeout(batcher, [conversation(batcher, 1)])
        with pytest.raises(BridgeError, match=r"outside TurnBatcher\.run"):
            await batcher.generate(request())  # and again once run() has returned


# --- LangChain messages -> chat-template dicts ------------------------------------------


def data_url(arr: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(arr)).decode()


class TestToHfMessages:
    def test_roles_placeholders_and_images_in_order(self):
        first = np.full((6, 10, 3), 50, np.uint8)
        view = np.zeros((8, 4, 4), np.uint8)  # RGBA: converted to RGB
        view[..., 0] = 200
        view[..., 3] = 255
        messages = [
            SystemMessage(content="You are a judge."),
            HumanMessage(
                content=[
                    {"type": "image_url", "image_url": {"url": data_url(first)}},
                    {"type": "text", "text": "Rate it."},
                ]
            ),
            AIMessage(content="<tool_call>{}</tool_call>"),
            ToolMessage(content="zoomed", tool_call_id="c1"),
            HumanMessage(
                content=[
                    {"type": "image_url", "image_url": data_url(view)},  # bare string URL
                    "Here is the view.",
                ]
            ),
            HumanMessage(content="Answer now."),
        ]
        hf, images = to_hf_messages(messages)
        assert hf == [
            {"role": "system", "content": "You are a judge."},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Rate it."}]},
            {"role": "assistant", "content": "<tool_call>{}</tool_call>"},
            {"role": "tool", "content": "zoomed"},
            {
                "role": "user",
                "content": [{"type": "image"}, {"type": "text", "text": "Here is the view."}],
            },
            {"role": "user", "content": [{"type": "text", "text": "Answer now."}]},
        ]
        assert [im.size for im in images] == [(10, 6), (4, 8)]
        assert all(im.mode == "RGB" for im in images)
        np.testing.assert_array_equal(np.asarray(images[0]), first)
        np.testing.assert_array_equal(np.asarray(images[1]), view[..., :3])

    def test_pil_image_parts_are_accepted(self):
        img = Image.new("L", (3, 2), 9)
        hf, images = to_hf_messages([HumanMessage(content=[{"type": "image", "image": img}])])
        assert hf == [{"role": "user", "content": [{"type": "image"}]}]
        assert images[0].mode == "RGB" and images[0].size == (3, 2)

    def test_non_data_url_is_refused(self):
        msg = HumanMessage(
            content=[{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]
        )
        with pytest.raises(BridgeError, match="base64 data URLs"):
            to_hf_messages([msg])

    def test_undecodable_image_is_refused(self):
        bad = "data:image/png;base64," + base64.b64encode(b"not a png").decode()
        msg = HumanMessage(content=[{"type": "image_url", "image_url": {"url": bad}}])
        with pytest.raises(BridgeError, match="could not be decoded"):
            to_hf_messages([msg])

    def test_unsupported_parts_and_messages_are_refused(self):
        with pytest.raises(BridgeError, match="unsupported message part 'audio'"):
            to_hf_messages([HumanMessage(content=[{"type": "audio", "data": "..."}])])
        from langchain_core.messages import ChatMessage

        with pytest.raises(BridgeError, match="unsupported message type ChatMessage"):
            to_hf_messages([ChatMessage(role="critic", content="hi")])
