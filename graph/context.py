"""Per-run settings (not state): the chat model, tool budget, view settings."""

from __future__ import annotations

import typing
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from pydantic.json_schema import SkipJsonSchema

from tooliqa.tools import DEFAULT_TOOLS, TOOLS, BBoxConvention, ImageLimits, ViewSettings

from .prompts import answer_extras

__all__ = ["DEFAULT_MAX_PIXELS", "MAX_TOOL_ROUNDS", "Context"]

#: Qwen-VL's customary image budget (1280 vision tokens of 28x28 pixels).
DEFAULT_MAX_PIXELS = 1280 * 28 * 28

#: The most tool rounds a run may allow: every round resends the conversation with its
#: views, so requests grow with each one (the paper uses 2).
MAX_TOOL_ROUNDS = 8


def _expected_types(f: Field[Any]) -> tuple[type, ...] | None:
    """The types a plain setting may take, read off its default (None: not checked here)."""
    default = f.default
    if default is MISSING:
        return (dict,) if f.default_factory is dict else None
    if default is None:
        return (str,) if "str" in str(f.type) else None
    if isinstance(default, bool):
        return (bool,)
    if isinstance(default, int):
        return (int,)
    if isinstance(default, float):
        return (int, float)
    if isinstance(default, tuple):
        return (list, tuple)
    return (type(default),)


@dataclass(kw_only=True)
class Context:
    """Settings for one assessment run, passed as ``context=`` to the graph.

    Attributes:
        model: any LangChain chat model; required (see :meth:`get_model`).
        max_tool_rounds: tool rounds allowed before the answer is demanded (paper: 2).
        enabled_tools: names from :data:`tooliqa.tools.TOOLS`: the paper's views
            (default) and/or the measurement tools ``niqe``, ``brisque``, ``piqe``.
        bbox_convention: how the model writes magnifier boxes.
        max_pixels: pixel budget of every image sent to the model.
        tool_protocol: ``native`` binds tools (OpenAI ``tools``); ``text`` lists them
            in the system prompt in Qwen3's format. Both kinds of replies parse either way.
        tool_choice: None/"auto", "required" or a tool name (forces a call).
        strict_tools: mark tool schemas strict (vLLM then constrains the arguments).
        structured_output: ask for JSON rubric/answers through ``response_format``.
        prompt_style: ``paper`` (Appendix A verbatim) or ``extended`` (adds a colour line).
        answer_retries: repair prompts allowed when a final answer has no valid score.
        sampling: extra model call settings (temperature, top_p, max_tokens, seed, ...).
        score_logprobs: ask the gate and final-answer calls for ``logprobs`` (top 5) and report
            the expected score and its spread in ``Assessment.uncertainty``
            (see :mod:`tooliqa.graph.uncertainty`).
        attribute_scores: also ask the final answer for a 1-5 score per rubric attribute
            (``<attributes>``, MG-IQA style); reported in ``Assessment.attribute_scores``.
        report_regions: also ask the final answer for distorted regions (``<regions>``,
            iDETEX / Zoom-IQA style); reported in ``Assessment.regions`` next to the
            magnifier steps' regions (see :mod:`tooliqa.graph.regions`).
        fetch_urls: fetch an ``image`` input that is an ``http(s)://`` URL, where the
            process running the graph allows it (``TOOLIQA_FETCH_URLS=1``: a served graph
            would otherwise fetch whatever its clients name); private and loopback hosts
            stay refused unless ``TOOLIQA_FETCH_PRIVATE_URLS=1`` there too.
        fetch_timeout: seconds such a fetch may take; its size cap is ``image_limits``.
        include_views: the assessment's steps also carry their views as ``data:`` URLs
            (``view``); by default only a reference (``view_ref``), valid in this process.
    """

    model: SkipJsonSchema[BaseChatModel | None] = None  # in process only: not in the JSON schema
    max_tool_rounds: int = 2
    enabled_tools: tuple[str, ...] = DEFAULT_TOOLS
    bbox_convention: BBoxConvention = "rel1000"
    max_pixels: int = DEFAULT_MAX_PIXELS
    min_region_side: int = 28
    max_zoom: float = 4.0
    view_format: Literal["PNG", "JPEG", "WEBP"] = "PNG"
    image_limits: ImageLimits = field(default_factory=ImageLimits)
    tool_protocol: Literal["native", "text"] = "native"
    tool_choice: str | None = None
    strict_tools: bool = False
    structured_output: bool = False
    prompt_style: Literal["paper", "extended"] = "paper"
    answer_retries: int = 1
    sampling: dict[str, Any] = field(default_factory=dict)
    score_logprobs: bool = False
    attribute_scores: bool = False
    report_regions: bool = False
    fetch_urls: bool = False
    fetch_timeout: float = 20.0
    include_views: bool = False

    def __new__(cls, *args: Any, **kwargs: Any) -> Context:
        """Refuse unknown settings by name (a context may arrive as JSON from a client)."""
        known = {f.name for f in fields(cls) if f.init}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ValueError(
                f"unknown context setting(s) {unknown}; known: {', '.join(sorted(known))}"
            )
        return super().__new__(cls)

    def _check_types(self) -> None:
        """Settings of the wrong type or outside their choices (what a JSON client may send)
        are a ValueError naming the setting, not a TypeError deep in a node."""
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            if not f.init or f.name == "model":
                continue
            value = getattr(self, f.name)
            hint = hints.get(f.name)
            if typing.get_origin(hint) is Literal:
                if value not in typing.get_args(hint):
                    choices = ", ".join(map(str, typing.get_args(hint)))
                    raise ValueError(f"context setting {f.name} must be one of {choices}")
                continue
            want = _expected_types(f)
            if want is None or (value is None and f.default is None):
                continue
            if not isinstance(value, want) or (isinstance(value, bool) and bool not in want):
                names = " or ".join(t.__name__ for t in want)
                raise ValueError(
                    f"context setting {f.name} must be {names}, not {type(value).__name__}"
                )
            if float in want:
                object.__setattr__(self, f.name, float(value))  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        if isinstance(self.view_format, str):
            self.view_format = self.view_format.upper()  # type: ignore[assignment]
        self._check_types()
        if isinstance(self.image_limits, dict):  # a context sent as JSON (LangGraph Server)
            # a client may tighten the limits, never loosen them past the defaults
            defaults = ImageLimits()
            given = {k: min(int(v), getattr(defaults, k)) for k, v in self.image_limits.items()}
            self.image_limits = ImageLimits(**given)
        if not 0 <= self.max_tool_rounds <= MAX_TOOL_ROUNDS:
            raise ValueError(f"max_tool_rounds must be between 0 and {MAX_TOOL_ROUNDS}")
        unknown = [t for t in self.enabled_tools if t not in TOOLS]
        if unknown:
            raise ValueError(f"unknown tools {unknown}; available: {sorted(TOOLS)}")
        self.enabled_tools = tuple(self.enabled_tools)
        if self.bbox_convention not in ("rel1000", "pixel", "unit"):
            raise ValueError("bbox_convention must be rel1000, pixel or unit")
        if self.max_pixels < 28 * 28:
            raise ValueError("max_pixels must be at least 784")
        if self.tool_protocol not in ("native", "text"):
            raise ValueError("tool_protocol must be native or text")
        if self.answer_retries < 0:
            raise ValueError("answer_retries must be >= 0")
        if not 0 < self.fetch_timeout <= 600:
            raise ValueError("fetch_timeout must be in (0, 600] seconds")

    def get_model(self) -> BaseChatModel:
        """The chat model for this run. Subclasses may build one from other settings."""
        if self.model is None:
            raise ValueError(
                "Context.model is not set: pass a LangChain chat model, e.g. "
                "Context(model=ChatOpenAI(base_url=...)), or use tooliqa.assess() for the defaults"
            )
        return self.model

    async def aget_model(self) -> BaseChatModel:
        """:meth:`get_model` for the graph's async nodes; a subclass whose model is built
        with blocking work (network, files) does that work off the event loop."""
        return self.get_model()

    @property
    def tools_available(self) -> bool:
        return self.max_tool_rounds > 0 and bool(self.enabled_tools)

    def answer_extras(self) -> str:
        """Text appended to every answer-asking turn ("" when both options are off)."""
        return answer_extras(
            attribute_scores=self.attribute_scores,
            report_regions=self.report_regions,
            style=self.prompt_style,
            convention=self.bbox_convention,
        )

    def view_settings(self) -> ViewSettings:
        return ViewSettings(
            convention=self.bbox_convention,
            max_pixels=self.max_pixels,
            min_side=self.min_region_side,
            max_zoom=self.max_zoom,
            view_format=self.view_format,
        )
