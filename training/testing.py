"""A scripted generator for the rollout bridge: replies chosen from the last user turn.

For tests (deterministic trajectories with known tool calls) and for making
cold-start data (the tiny model's warm start records a teacher's replies
through the real graph and bridge, so the targets are exactly rollout tokens).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .bridge import GenerationRequest, GenerationResult

__all__ = ["ScriptedGenerator", "last_user_text"]


def last_user_text(tokenizer: Any, input_ids: Sequence[int], tail: int = 600) -> str:
    """The text of the last user turn in a token history (Qwen chat format)."""
    text = str(tokenizer.decode(list(input_ids[-tail:])))
    return text.rsplit("<|im_start|>user", 1)[-1]


class ScriptedGenerator:
    """A :class:`~tooliqa.training.bridge.Generator` whose replies come from
    ``policy(last_user_text) -> reply text``; each reply is tokenised and ends
    with ``<|im_end|>``. Log-probabilities are 0.0 (the replies are not sampled)."""

    def __init__(self, tokenizer: Any, policy: Callable[[str], str]) -> None:
        self.tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
        self.policy = policy
        self.stop = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.replies: list[str] = []

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        out = []
        for req in requests:
            reply = self.policy(last_user_text(self.tokenizer, req.input_ids))
            self.replies.append(reply)
            ids = [*self.tokenizer(reply, add_special_tokens=False)["input_ids"], self.stop]
            out.append(GenerationResult(token_ids=ids, logprobs=[0.0] * len(ids), finished=True))
        return out
