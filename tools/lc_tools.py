"""LangChain tool wrappers around the registered tools, for use in any LangChain agent.

Each tool is bound to one image (the original): the model supplies only the
tool arguments. The tool returns ``(content, artifact)``: a content list (text,
plus the image for a view tool) and the :class:`~tooliqa.tools.registry.ViewResult`
(for NIQE, BRISQUE and PIQE: ``view=None`` and ``extra`` = metric, raw, score_1_5).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any

from langchain_core.tools import BaseTool, StructuredTool

from .image_io import DecodedImage, ImageLimits, decode_image_cached, image_bytes
from .registry import DEFAULT_TOOLS, MEASURE_TOOLS, TOOLS, ViewResult, ViewSettings, run_view_tool

__all__ = ["make_iqa_tools", "make_view_tools", "view_content"]


def view_content(result: ViewResult) -> list[dict[str, Any]]:
    """A LangChain content list for a view result: the message, then the view image."""
    blocks: list[dict[str, Any]] = [{"type": "text", "text": result.message}]
    if result.ok and result.view is not None:
        blocks.append(
            {
                "type": "image",
                "base64": base64.b64encode(result.view).decode("ascii"),
                "mime_type": result.mime or "image/png",
            }
        )
    return blocks


def make_view_tools(
    image: bytes | str | DecodedImage,
    settings: ViewSettings | None = None,
    *,
    enabled: Iterable[str] | None = None,
    limits: ImageLimits | None = None,
) -> list[BaseTool]:
    """LangChain tools operating on ``image``: by default the paper's views (magnifier,
    gamma corrector); ``enabled`` may name any registered tool (``niqe``, ...).

    A bad call returns a failure message as content (``ok=False`` in the
    artifact) rather than raising, as in the Tool-IQA protocol.
    """
    if isinstance(image, str):  # a graph state's reference (or base64 / a data URL)
        image = image_bytes(image, limits)
    decoded = image if isinstance(image, DecodedImage) else decode_image_cached(image, limits)
    settings = settings or ViewSettings()
    names = list(DEFAULT_TOOLS if enabled is None else enabled)
    tools: list[BaseTool] = []
    for name in names:
        spec = TOOLS[name]

        def _call(_name: str = name, **kwargs: Any) -> tuple[list[dict[str, Any]], ViewResult]:
            result = run_view_tool(_name, kwargs, decoded, settings, enabled=names)
            return view_content(result), result

        tools.append(
            StructuredTool.from_function(
                func=_call,
                name=spec.name,
                description=spec.description_for(settings.convention),
                args_schema=spec.args_model,
                response_format="content_and_artifact",
                handle_validation_error=True,
            )
        )
    return tools


def make_iqa_tools(
    image: bytes | DecodedImage,
    settings: ViewSettings | None = None,
    *,
    enabled: Iterable[str] | None = None,
    limits: ImageLimits | None = None,
) -> list[BaseTool]:
    """LangChain measurement tools (NIQE, BRISQUE, PIQE by default) operating on ``image``.

    Each returns a text message with the raw value and the 1–5 score; the artifact's
    ``extra`` holds ``metric``, ``raw`` and ``score_1_5``.
    """
    names = list(MEASURE_TOOLS if enabled is None else enabled)
    return make_view_tools(image, settings, enabled=names, limits=limits)
