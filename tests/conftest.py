"""Shared fixtures: small test images and the examples folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from _support import REPO, png_bytes


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
