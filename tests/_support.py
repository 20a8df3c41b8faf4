"""Helpers shared by the tests (imported as ``_support``; fixtures live in conftest.py)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

RUBRIC_REPLY = """<thinking>Whole image inspected.</thinking>
<answer>
Sharpness: [Medium] - slightly soft
Noise: [None] - clean
Artifacts: [Minor] - faint blocking
Exposure: [Poor] - dark
Saliency Visibility: [Obscured] - subject in shadow
</answer>"""


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()
