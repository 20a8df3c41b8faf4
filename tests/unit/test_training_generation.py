"""The vLLM generator adapter and the lockstep helper, against stand-ins for TRL's objects."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from PIL import Image

from tooliqa.training.bridge import GenerationRequest
from tooliqa.training.generation import TRLVLLMGenerator, trainer_lockstep

torch = pytest.importorskip("torch")

END, EOS = 7, 8


class Tok:
    eos_token_id = EOS

    def convert_tokens_to_ids(self, token):
        return END if token == "<|im_end|>" else 0


class FakeVLLM:
    def __init__(self):
        self.calls = []

    def generate(self, prompts, images, num_generations):
        self.calls.append((prompts, images, num_generations))
        completions = [[5, 6, END], [5, 5]]  # the second hit the length cap
        logprobs = [[[-0.1], [-0.2], [-0.3]], [[-1.0], [None]]]
        return prompts, completions[: len(prompts)], logprobs[: len(prompts)], None


def trainer(**over):
    base = dict(
        use_vllm=True,
        processing_class=SimpleNamespace(tokenizer=Tok()),
        vllm_generation=FakeVLLM(),
        args=SimpleNamespace(vllm_mode="server", vllm_tensor_parallel_size=1),
        accelerator=SimpleNamespace(num_processes=1, device="cpu"),
    )
    base.update(over)
    return SimpleNamespace(**base)


def test_vllm_generator_passes_token_ids_and_images_and_reads_sampled_logprobs():
    t = trainer()
    img = Image.new("RGB", (8, 8))
    gen = TRLVLLMGenerator(t)
    out = gen.generate(
        [
            GenerationRequest(input_ids=[1, 2], images=[img], max_new_tokens=4),
            GenerationRequest(input_ids=[3], images=[], max_new_tokens=4),
        ]
    )
    prompts, images, n = t.vllm_generation.calls[0]
    assert prompts == [[1, 2], [3]] and n == 1
    assert images == [[img], None]  # token ids in, images as they are; nothing re-rendered
    assert out[0].token_ids == [5, 6, END] and out[0].finished
    assert out[0].logprobs == pytest.approx([-0.1, -0.2, -0.3])
    assert not out[1].finished  # no stop token: cut at the length cap
    assert out[1].logprobs[0] == -1.0 and out[1].logprobs[1] != out[1].logprobs[1]  # NaN


def test_vllm_generator_sends_no_images_when_no_request_has_any():
    t = trainer()
    TRLVLLMGenerator(t).generate([GenerationRequest(input_ids=[1], images=[], max_new_tokens=2)])
    assert t.vllm_generation.calls[0][1] is None


def test_vllm_generator_needs_a_vllm_trainer():
    with pytest.raises(ValueError, match="use_vllm"):
        TRLVLLMGenerator(trainer(use_vllm=False))


class Acc:
    num_processes = 4
    device = "cpu"

    def __init__(self, others_busy):
        self.others_busy = others_busy

    def reduce(self, tensor, reduction):
        assert reduction == "sum"
        return tensor + self.others_busy


def test_lockstep_only_where_generation_is_a_collective():
    assert trainer_lockstep(trainer()) is None  # one process
    colocate = trainer(
        args=SimpleNamespace(vllm_mode="colocate", vllm_tensor_parallel_size=1),
        accelerator=Acc(0),
    )
    assert trainer_lockstep(colocate) is None  # each process generates alone
    assert trainer_lockstep(trainer(use_vllm=False, accelerator=Acc(0))) is None


def test_lockstep_keeps_a_finished_process_in_the_collective_while_others_work():
    busy = trainer_lockstep(trainer(accelerator=Acc(others_busy=1)))
    idle = trainer_lockstep(trainer(accelerator=Acc(others_busy=0)))
    assert busy is not None and idle is not None
    assert busy(False) is True  # nothing here, but another process still generates
    assert idle(False) is False and idle(True) is True
