"""Outside text made safe: lone surrogates and control characters (tooliqa.tools.text)."""

from __future__ import annotations

import doctest
import json

from tooliqa.tools import clean_text, clean_value
from tooliqa.tools import text as text_module


def test_doctests():
    assert doctest.testmod(text_module).failed == 0


def test_cleaned_text_encodes_and_keeps_layout():
    dirty = "a\ud800b\udfff\x00c\x1b[2Jd\x9be\tf\ng\r\n"
    clean = clean_text(dirty)
    clean.encode("utf-8")  # would raise on a lone surrogate
    assert clean == "a\ufffdb\ufffd\ufffdc\ufffd[2Jd\ufffde\tf\ng\r\n"
    assert clean_text("plain ascii and ünïcödé 分") == "plain ascii and ünïcödé 分"


def test_nested_values():
    out = clean_value({"k\ud800": ["x\x07", ("y", 3)], "n": None})
    assert out == {"k\ufffd": ["x\ufffd", ("y", 3)], "n": None}
    json.dumps(out, ensure_ascii=False).encode("utf-8")
