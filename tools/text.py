"""Text from outside (model replies, tool names a model chose, server names) made safe to
store, print and send back.

A reply may carry a lone UTF-16 surrogate (``"\\ud800"``, which no UTF-8 encoder accepts:
printing, SQLite and the next request would fail on it) or control characters (terminal
escape codes, NULs). :func:`clean_text` replaces both with U+FFFD and keeps tabs and new
lines, so the text stays readable and every later step gets a valid string.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["clean_text", "clean_value"]

_UNSAFE = re.compile(r"[\ud800-\udfff\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def clean_text(text: str) -> str:
    """``text`` with lone surrogates and control characters (but tab, new line and carriage
    return) replaced by U+FFFD.

    >>> clean_text("ok\\ud800 \\x1b[31mred\\tand\\nmore")
    'ok\\ufffd \\ufffd[31mred\\tand\\nmore'
    """
    return _UNSAFE.sub("\ufffd", text) if _UNSAFE.search(text) else text


def clean_value(value: Any) -> Any:
    """:func:`clean_text` applied to every string (keys too) inside lists, tuples and dicts."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_value(k): clean_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(clean_value(v) for v in value)
    return value
