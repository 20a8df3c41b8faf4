"""The assessment as a LangChain tool for agent apps: ``tooliqa.as_tool()``.

An agent (``create_react_agent``, ``create_agent`` or any tool-calling loop) calls it
with an image and, optionally, a question about it, and gets a compact result: the
score, the rubric, a short rationale, the answer to the question and (when asked
for) the distorted regions. Failures come back as a result with ``error`` and
``error_kind``, never as an exception that ends the agent's turn.

The image is a file path (only inside ``root`` when one is given: the path is the
model's choice), base64 text, a ``data:`` URL or, with ``fetch_urls=True``, an
``http(s)://`` URL (public hosts only: the URL is the model's choice too).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel, Field

from tooliqa.failures import classify
from tooliqa.graph import Assessment, Context
from tooliqa.tools import (
    ImageError,
    fetch_image_bytes,
    image_bytes,
    is_url,
    read_image_bytes,
    url_label,
)

__all__ = ["AssessImageArgs", "as_tool", "compact_result"]

#: The rationale an agent gets is cut to this many characters.
RATIONALE_CHARS = 400


class AssessImageArgs(BaseModel):
    """What an agent passes."""

    image: str = Field(
        description="the image: a file path, an http(s) URL, base64 text or a data: URL"
    )
    question: str | None = Field(
        default=None,
        description="optional: a question about the image's quality, e.g. 'Is the sky noisy?'",
    )


def compact_result(a: Assessment, *, regions: bool = False) -> dict[str, Any]:
    """The few fields an agent needs from an Assessment (JSON-ready)."""
    out: dict[str, Any] = {
        "image": a.image,
        "score": a.score,
        "scale": "1 (bad) to 5 (excellent)",
        "rubric": dict(a.rubric),
        "rationale": (a.rationale or "")[:RATIONALE_CHARS],
        "tools_used": [s.tool for s in a.steps if s.ok],
    }
    if a.query_answer:
        out["answer"] = a.query_answer.get("answer")
        out["verdict"] = a.query_answer.get("verdict")
    if regions:
        out["regions"] = list(a.regions)
    if a.score is None:
        out["error"], out["error_kind"] = a.error, a.error_kind
    return out


def _load(image: str, root: Path | None, limits: Any) -> tuple[bytes, str | None]:
    text = image.strip()
    if text.startswith("data:") or len(text) > 1024:  # no path is that long; base64 is
        return image_bytes(text, limits), None
    path = Path(os.path.expanduser(text[len("file://") :] if text.startswith("file://") else text))
    if root is not None:
        real = path.resolve() if path.is_absolute() else (root / path).resolve()
        if not real.is_relative_to(root):
            raise ImageError(f"{text[:200]!r} is outside the folder this tool may read")
        path = real
    return read_image_bytes(path, limits), path.name


def as_tool(
    *,
    context: Context | None = None,
    root: str | os.PathLike[str] | None = None,
    regions: bool = False,
    deadline: float | None = None,
    fetch_urls: bool = False,
    name: str = "assess_image_quality",
    description: str | None = None,
) -> BaseTool:
    """A LangChain tool that assesses one image (see the module docstring).

    ``context``: the run context (default: the classic backend, or whatever
    :func:`tooliqa.api.make_context` builds); ``root``: the only folder whose files the
    tool reads (recommended: the file path is chosen by a model); ``regions``: also
    return the distorted regions; ``deadline``: seconds per call (default
    :data:`tooliqa.api.DEFAULT_DEADLINE`); ``fetch_urls``: fetch ``http(s)://`` images
    (size cap ``image_limits.max_bytes``; hosts on private networks refused unless
    ``TOOLIQA_FETCH_PRIVATE_URLS=1``).
    """
    from tooliqa.api import DEFAULT_DEADLINE, aassess, make_context

    ctx = context or make_context()
    folder = Path(root).resolve() if root is not None else None
    limit = DEFAULT_DEADLINE if deadline is None else deadline

    async def assess_image(image: str, question: str | None = None) -> dict[str, Any]:
        try:
            if is_url(image):
                if not fetch_urls:
                    raise ImageError("this tool does not fetch URLs: give a file path or base64")
                data = await fetch_image_bytes(image, ctx.image_limits)
                shown: str | None = url_label(image)
            else:
                data, shown = await asyncio.to_thread(_load, image, folder, ctx.image_limits)
            a = await aassess(data, context=ctx, name=shown, query=question, deadline=limit)
        except Exception as exc:  # the agent gets a result it can read, not a crash
            failure = classify(exc)
            a = Assessment.failure(failure.reason, kind=failure.kind)
        return compact_result(a, regions=regions)

    return StructuredTool.from_function(
        coroutine=assess_image,
        name=name,
        description=description
        or (
            "Assess the technical quality of an image (sharpness, noise, artifacts, exposure) "
            "and return a score from 1 (bad) to 5 (excellent) with the reasons; optionally "
            "answer a question about its quality."
        ),
        args_schema=AssessImageArgs,
    )
