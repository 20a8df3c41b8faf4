"""tooliqa: tool-augmented image quality assessment with vision-language models.

An implementation of Tool-IQA (arXiv 2606.16082) as a LangGraph agent:
observe with a rubric note, inspect with view tools (magnifier, gamma
corrector), then give a calibrated 1.00-5.00 score with reasons.

    >>> from tooliqa import assess            # doctest: +SKIP
    >>> a = assess("photo.jpg")               # embedded classic backend
    >>> a = assess("photo.jpg", server="http://127.0.0.1:8000/v1")  # a vLLM server

Heavy parts (the API helpers, backends) import lazily.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "assess": "tooliqa.api",
    "aassess": "tooliqa.api",
    "assess_many": "tooliqa.api",
    "make_context": "tooliqa.api",
    "AppContext": "tooliqa.api",
    "as_tool": "tooliqa.agent_tool",
    "Assessment": "tooliqa.graph",
    "Context": "tooliqa.graph",
    "ImageError": "tooliqa.tools",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tooliqa' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
