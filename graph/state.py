"""Graph state: plain, small, checkpointable data only: images (the input once read, the
image sent to the model, tool views) are ``tooliqa-blob:sha256:...`` references
(:mod:`tooliqa.tools.blobs`), never pixels."""

from __future__ import annotations

import operator
from typing import Annotated, Any

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages
from typing_extensions import NotRequired, TypedDict

__all__ = ["InputState", "OutputState", "State", "merge_counts"]


def merge_counts(left: dict[str, Any] | None, right: dict[str, Any] | None) -> dict[str, Any]:
    """Reducer: add numeric values key by key (token usage, timings)."""
    out = dict(left or {})
    for key, value in (right or {}).items():
        out[key] = out.get(key, 0) + value
    return out


class InputState(TypedDict):
    """What a caller (or a parent graph, by these key names) gives the graph.

    ``image``: the encoded image as bytes (in process), or text: base64, a ``data:`` URL
    (what JSON clients send), an ``http(s)://`` URL (fetched when the context's
    ``fetch_urls`` allows it), a local path or ``file://`` URL (read when the process
    running the graph sets ``TOOLIQA_ALLOW_IMAGE_FILES=1``), or a ``tooliqa-blob:sha256:...``
    reference to an image this process holds (see :func:`tooliqa.tools.image_bytes`).
    The first node replaces it with a reference, so no later checkpoint holds pixels
    (LangGraph records the input itself as given: pass a reference, a path or a URL to
    keep the pixels out of every checkpoint, as :func:`tooliqa.aassess` does).
    ``image_name``: a label for reports. ``image_question``: a question about the image
    (:mod:`tooliqa.graph.query`); so named that a parent graph's own ``query`` or
    ``question`` is not taken for one.
    """

    image: bytes | str
    image_name: NotRequired[str | None]
    image_question: NotRequired[str | None]


class OutputState(TypedDict):
    """What a graph compiled with ``output_schema=OutputState`` gives back to its caller,
    a parent graph or a remote client: the Assessment as a JSON-ready dict, not the
    run's internals (messages, steps with views, plan)."""

    assessment: dict[str, Any]


class State(InputState, total=False):
    """Everything a run accumulates.

    ``steps`` holds one dict per tool round: tool, args, ok, message, source,
    box, gamma, elapsed_ms and the view's reference. ``pending`` carries the action
    chosen by ``decide`` to the ``tool`` node. ``replies`` records the model's
    replies after tool rounds (``{round, text}``, to label magnifier regions);
    ``answer_regions`` the answer's regions in pixels; ``protocol`` one
    :class:`~tooliqa.graph.assessment.ProtocolTurn` dict per model reply. ``assessment`` is the final
    result as a JSON-ready dict.
    """

    messages: Annotated[list[AnyMessage], add_messages]
    image_info: dict[str, Any]
    rubric: dict[str, dict[str, Any]]
    rubric_note: str
    steps: Annotated[list[dict[str, Any]], operator.add]
    rounds: int
    pending: dict[str, Any] | None
    score: float | None
    rationale: str
    answer: str
    uncertainty: dict[str, Any] | None
    attribute_scores: dict[str, float]
    answer_regions: list[dict[str, Any]]
    plan: dict[str, Any] | None
    query_answer: dict[str, Any] | None
    replies: Annotated[list[dict[str, Any]], operator.add]
    protocol: Annotated[list[dict[str, Any]], operator.add]
    forced_answer: bool
    usage: Annotated[dict[str, int], merge_counts]
    timings: Annotated[dict[str, float], merge_counts]
    errors: Annotated[list[str], operator.add]
    assessment: dict[str, Any]
