"""The rollout bridge on the tiny Qwen3-VL: token ids, masks and images of real graph runs."""

from __future__ import annotations

import asyncio
import math
import re

import pytest
import torch

from tooliqa.graph import Assessment, Context, compile_graph
from tooliqa.training.bridge import (
    BridgeError,
    ChatRenderer,
    RecordingChatModel,
    TurnBatcher,
    to_hf_messages,
)
from tooliqa.training.generation import TransformersGenerator
from tooliqa.training.testing import ScriptedGenerator

from _support import png_bytes, two_tools_then_answer


def _image(seed: int = 0) -> bytes:
    import numpy as np

    rng = np.random.default_rng(seed)
    return png_bytes(rng.integers(0, 90, (96, 128, 3)).astype(np.uint8))


def run_graph(processor, generator, image: bytes, rounds: int = 2):
    renderer = ChatRenderer(processor)
    batcher = TurnBatcher(generator)
    model = RecordingChatModel(renderer=renderer, batcher=batcher, max_new_tokens=64)
    ctx = Context(model=model, tool_protocol="text", max_tool_rounds=rounds)
    graph = compile_graph()

    async def go():
        return await batcher.run([graph.ainvoke({"image": image}, context=ctx)])

    [state] = asyncio.run(go())
    if isinstance(state, BaseException):
        raise state
    return state, model.ledger, renderer


def collapse_pads(text: str) -> str:
    return re.sub(r"(<\|image_pad\|>)+", "<|image_pad|>", text)


def test_decoded_ids_equal_the_rendered_conversation_and_mask_marks_only_model_tokens(processor):
    gen = ScriptedGenerator(processor, two_tools_then_answer)
    state, ledger, renderer = run_graph(processor, gen, _image())
    a = Assessment.model_validate(state["assessment"])
    assert [s.tool for s in a.steps] == ["gamma_corrector", "magnifier"]
    assert all(s.ok for s in a.steps)
    assert a.score == pytest.approx(2.75)

    # token in, token out: the ids decode to exactly what the chat template renders
    hf, images = to_hf_messages(state["messages"])
    rendered = processor.apply_chat_template(hf, tokenize=False)
    decoded = collapse_pads(renderer.decode(ledger.all_ids()))
    # (the ledger ends on the model's <|im_end|>; the template adds the newline after it)
    assert decoded + renderer.turn_close.removeprefix("<|im_end|>") == rendered

    # mask 1 exactly on the sampled replies: each maximal run is one reply + <|im_end|>
    mask = ledger.completion_mask
    runs, cur = [], []
    for tok, m in zip(ledger.completion_ids, mask, strict=True):
        if m:
            cur.append(tok)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    texts = [renderer.decode(r) for r in runs]
    assert texts == [reply + "<|im_end|>" for reply in gen.replies]
    # ... and 0 on everything that came from outside: tool responses, prompts, view images
    outside = renderer.decode(
        [t for t, m in zip(ledger.completion_ids, mask, strict=True) if not m]
    )
    assert "<tool_response>" in outside and "Single-Action per Turn" in outside
    assert "<|im_start|>assistant" in outside and "<|im_start|>user" in outside
    pad = renderer.image_pad_id
    assert all(m == 0 for t, m in zip(ledger.completion_ids, mask, strict=True) if t == pad)
    # env tokens carry logprob 0 and every list has one entry per token
    assert len(ledger.logprobs) == len(ledger.completion_ids) == len(mask)

    # the original and both views are in the ledger, in order, with matching pad runs
    assert len(ledger.images) == 3 == len(images)
    grids = torch.cat([v["image_grid_thw"] for v in ledger.vision if v])
    merge = processor.image_processor.merge_size**2
    assert int((torch.tensor(ledger.all_ids()) == pad).sum()) == int(grids.prod(-1).sum()) // merge
    # the view images are the tool outputs, not the original
    assert images[1].size != images[0].size or images[1].tobytes() != images[0].tobytes()


def test_real_generation_records_sampled_tokens_with_logprobs(warm_model_dir):
    from transformers import AutoProcessor, Qwen3VLForConditionalGeneration

    proc = AutoProcessor.from_pretrained(warm_model_dir)
    model = Qwen3VLForConditionalGeneration.from_pretrained(warm_model_dir, dtype=torch.float32)
    gen = TransformersGenerator(model, proc, temperature=1.0, seed=3)
    state, ledger, renderer = run_graph(proc, gen, _image(1))
    model_lps = [lp for lp, m in zip(ledger.logprobs, ledger.completion_mask, strict=True) if m]
    assert model_lps and all(math.isfinite(x) and x <= 0 for x in model_lps)
    hf, _ = to_hf_messages(state["messages"])
    if ledger.truncated_turns == 0:  # a reply cut at max_new_tokens is closed by the bridge
        rendered = proc.apply_chat_template(hf, tokenize=False)
        decoded = collapse_pads(renderer.decode(ledger.all_ids()))
        assert decoded + renderer.turn_close.removeprefix("<|im_end|>") == rendered
    # logprobs match a recomputation by the same model (token in, token out)
    ids = torch.tensor([ledger.all_ids()])
    vis = proc.image_processor(images=ledger.images, return_tensors="pt")
    with torch.no_grad():
        out = model(
            input_ids=ids,
            pixel_values=vis["pixel_values"],
            image_grid_thw=vis["image_grid_thw"],
            mm_token_type_ids=(ids == renderer.image_pad_id).long(),
        )
    logp = torch.log_softmax(out.logits[0, :-1].float(), -1)
    n_prompt = len(ledger.prompt_ids)
    targets = ids[0, 1:]
    recomputed = logp[torch.arange(len(targets)), targets][n_prompt - 1 :]
    mask = torch.tensor(ledger.completion_mask, dtype=torch.bool)
    sampled = torch.tensor(ledger.logprobs)
    assert torch.allclose(recomputed[mask], sampled[mask], atol=1e-3)


def test_a_conversation_edited_behind_the_bridge_is_refused(processor):
    gen = ScriptedGenerator(processor, two_tools_then_answer)
    state, ledger, renderer = run_graph(processor, gen, _image(), rounds=0)
    from langchain_core.messages import AIMessage, HumanMessage

    model = RecordingChatModel(
        renderer=renderer, batcher=TurnBatcher(gen), max_new_tokens=8, ledger=ledger
    )
    edited = list(state["messages"])
    edited[2] = AIMessage(content="something the model never said")
    with pytest.raises(BridgeError, match="differs"):
        model._request([*edited, HumanMessage(content="next")], None)
