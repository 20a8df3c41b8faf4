"""Generators for the rollout bridge: transformers (CPU or GPU) and TRL's vLLM.

Both return the sampled token ids and their log-probabilities under the
sampling distribution (logits divided by the temperature, before top-k/top-p
truncation: the distribution the GRPO loss recomputes).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .bridge import GenerationRequest, GenerationResult

__all__ = ["TRLVLLMGenerator", "TransformersGenerator"]


class TransformersGenerator:
    """Samples with ``model.generate`` one request at a time.

    ``unwrap`` is an optional context-manager factory yielding the model to
    generate with (TRL's ``unwrap_model_for_generation`` under DeepSpeed
    ZeRO-3 gathers the parameters once for the whole rollout). Enter it with
    :meth:`session` around a batch of conversations.
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        stop_token_ids: Sequence[int] | None = None,
        unwrap: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
        seed: int | None = None,
    ) -> None:
        if temperature < 0:
            raise ValueError("temperature must be >= 0")
        self.model = model
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.temperature = temperature
        self.top_p = top_p
        self.top_k = top_k
        self.unwrap = unwrap
        self.seed = seed
        pad = self.tokenizer.convert_tokens_to_ids("<|image_pad|>")
        self.image_pad_id = pad if isinstance(pad, int) else None
        stops = set(stop_token_ids or [])
        eos = self.tokenizer.eos_token_id
        if isinstance(eos, int):
            stops.add(eos)
        end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        if isinstance(end, int) and end != self.tokenizer.unk_token_id:
            stops.add(end)
        self.stop_ids = sorted(stops)
        self._active: Any = None

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Hold the (unwrapped, eval-mode) model for a batch of conversations."""
        import torch

        ctx = self.unwrap() if self.unwrap is not None else contextlib.nullcontext(self.model)
        with ctx as model, torch.no_grad():
            was_training = model.training
            model.eval()
            self._active = model
            try:
                yield
            finally:
                self._active = None
                model.train(was_training)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        if self._active is None:
            with self.session():
                return [self._one(r) for r in requests]
        return [self._one(r) for r in requests]

    def _one(self, req: GenerationRequest) -> GenerationResult:
        import torch

        model = self._active
        device = next(model.parameters()).device
        ids = torch.tensor([req.input_ids], device=device)
        kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        vision = req.vision
        if vision is None and req.images:
            vision = dict(self.processor.image_processor(images=req.images, return_tensors="pt"))
        if vision:
            dtype = next(model.parameters()).dtype
            kwargs["pixel_values"] = vision["pixel_values"].to(device=device, dtype=dtype)
            kwargs["image_grid_thw"] = vision["image_grid_thw"].to(device)
            if self.image_pad_id is not None:
                kwargs["mm_token_type_ids"] = (ids == self.image_pad_id).long()
        sample = self.temperature > 0
        gen: dict[str, Any] = {
            "max_new_tokens": req.max_new_tokens,
            "do_sample": sample,
            "eos_token_id": self.stop_ids,
            "pad_token_id": self.tokenizer.pad_token_id,
            "return_dict_in_generate": True,
            "output_logits": True,
        }
        if sample:
            gen.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k or None)
        if self.seed is not None:
            torch.manual_seed(self.seed)
            self.seed += 1
        out = model.generate(**kwargs, **gen)
        new = out.sequences[0, ids.shape[1] :].tolist()
        logits = torch.stack(out.logits, dim=0)[:, 0, :].float()
        if sample:
            logits = logits / self.temperature
        logp = torch.log_softmax(logits, dim=-1)
        picked = logp[torch.arange(len(new)), torch.tensor(new, dtype=torch.long)].tolist()
        finished = bool(new) and new[-1] in self.stop_ids
        return GenerationResult(token_ids=new, logprobs=picked, finished=finished)


class TRLVLLMGenerator:
    """Generates through a ``GRPOTrainer``'s vLLM integration (server or colocate).

    Token ids go in as they are (``prompt_token_ids`` with the images as
    ``multi_modal_data``); nothing is re-rendered. In server mode the call is a
    collective across processes: use it with a :class:`~.bridge.TurnBatcher`
    that has ``lockstep`` set (see :func:`trainer_lockstep`). Each turn's length
    cap is the trainer's ``max_completion_length``.
    """

    def __init__(self, trainer: Any) -> None:
        if not getattr(trainer, "use_vllm", False):
            raise ValueError("the trainer was not configured with use_vllm=True")
        self.trainer = trainer
        tok = getattr(trainer.processing_class, "tokenizer", trainer.processing_class)
        self.stop_ids = {tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")}

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        yield

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        prompts = [r.input_ids for r in requests]
        images = [r.images or None for r in requests]
        _, completion_ids, logprobs, _ = self.trainer.vllm_generation.generate(
            prompts=prompts,
            images=images if any(images) else None,
            num_generations=1,
        )
        out = []
        for ids, lps in zip(completion_ids, logprobs or [None] * len(completion_ids), strict=True):
            ids = list(ids)
            sampled = [float(t[0]) if t and t[0] is not None else float("nan") for t in lps or []]
            if len(sampled) != len(ids):
                sampled = [float("nan")] * len(ids)
            out.append(
                GenerationResult(
                    token_ids=ids, logprobs=sampled, finished=bool(ids) and ids[-1] in self.stop_ids
                )
            )
        return out


def trainer_lockstep(trainer: Any) -> Callable[[bool], bool] | None:
    """An all-reduce ``local_has_work -> any_process_has_work`` when generation is a
    collective (vLLM server mode, or colocate with tensor parallelism) on more than
    one process; else None."""
    acc = trainer.accelerator
    if acc.num_processes <= 1 or not getattr(trainer, "use_vllm", False):
        return None
    mode = getattr(trainer.args, "vllm_mode", "server")
    tp = int(getattr(trainer.args, "vllm_tensor_parallel_size", 1) or 1)
    if mode != "server" and tp <= 1:
        return None

    def lockstep(local_has_work: bool) -> bool:
        import torch

        flag = torch.tensor([1 if local_has_work else 0], device=acc.device)
        return bool(acc.reduce(flag, reduction="sum").item() > 0)

    return lockstep
