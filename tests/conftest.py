"""Shared fixtures: small test images and paths to the shared data folder."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
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


@pytest.fixture
def image_array() -> np.ndarray:
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:240, 0:320]
    base = np.stack([xs * 0.7, ys, (xs + ys) * 0.4], axis=2)
    return np.clip(base + rng.normal(0, 5, base.shape), 0, 255).astype(np.uint8)


@pytest.fixture
def image_bytes(image_array: np.ndarray) -> bytes:
    return png_bytes(image_array)


@pytest.fixture
def examples_dir() -> Path:
    return REPO / "examples"
