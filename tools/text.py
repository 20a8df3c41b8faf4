"""Text from outside (model replies, tool names a model chose, server names) made safe to
store, print and send back.

A reply may carry a lone UTF-16 surrogate (``"\\ud800"``, which no UTF-8 encoder accepts:
printing, SQLite and the next request would fail on it) or control characters (terminal
escape codes, NULs). :func:`clean_text` replaces both with U+FFFD and keeps tabs and new
lines, so the text stays readable and every later step gets a valid string.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["JSONLimitError", "clean_text", "clean_value", "load_json", "one_line"]

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


def one_line(text: Any, limit: int) -> str:
    """:func:`clean_text` of ``str(text)`` on one line (runs of white space made one
    space), cut to at most ``limit`` characters with an ellipsis.

    >>> one_line("two\\nlines\\x00" + "x" * 100, 12)
    'two lines\\ufffdx…'
    """
    line = " ".join(clean_text(str(text)).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


class JSONLimitError(json.JSONDecodeError):
    """JSON that Python's parser refuses for its own limits, not its syntax: an integer
    of more than 4300 digits, or nesting past the recursion limit."""


def load_json(text: str) -> Any:
    """``json.loads`` whose only error is :class:`json.JSONDecodeError`: the parser's own
    limits (see :class:`JSONLimitError`) raise one too, ``msg`` saying which."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except (ValueError, RecursionError) as exc:
        what = "nested too deeply" if isinstance(exc, RecursionError) else "a number too long"
        raise JSONLimitError(what, text, 0) from exc
