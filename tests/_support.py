"""Helpers shared by the tests (imported as ``_support``; fixtures live in conftest.py)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
CALIBRATION = SHARED_DATA / "calibration"

RUBRIC_REPLY = """<thinking>Whole image inspected.</thinking>
<answer>
Sharpness: [Medium] - slightly soft
Noise: [None] - clean
Artifacts: [Minor] - faint blocking
Exposure: [Poor] - dark
Saliency Visibility: [Obscured] - subject in shadow
</answer>"""


def official_scores(method: str) -> dict[str, float]:
    """One row of ``calibration/official_scores.csv``: image name -> the official value."""
    import csv

    with open(CALIBRATION / "official_scores.csv", newline="", encoding="utf-8") as fh:
        row = {r["Method"]: r for r in csv.DictReader(fh)}[method]
    return {name: float(v) for name, v in row.items() if name != "Method"}


def calibration_rgb(name: str) -> np.ndarray:
    """A calibration image (``calibration/dist/NAME``) as RGB uint8."""
    with Image.open(CALIBRATION / "dist" / name) as im:
        return np.asarray(im.convert("RGB"))


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def synthetic_dataset(
    root: Path,
    n: int,
    *,
    size: tuple[int, int] = (64, 80),
    fmt: str = "PNG",
    seed: int = 1,
    name: str = "toy",
):
    """``n`` noisy images of ``size`` (h, w) written to ``root``, as a Dataset with MOS 1, 1.5, 2, ..."""
    from tooliqa.eval.datasets import Dataset, Sample

    rng = np.random.default_rng(seed)
    samples = []
    ext = {"PNG": "png", "JPEG": "jpg"}[fmt]
    for i in range(n):
        img = np.clip(rng.normal(100 + 10 * (i % 12), 30, (*size, 3)), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format=fmt)
        (root / f"im{i}.{ext}").write_bytes(buf.getvalue())
        samples.append(
            Sample(image=f"im{i}.{ext}", mos=1.0 + 0.5 * (i % 9), std=None, split="test", ref=None)
        )
    return Dataset(
        name=name, root=root, samples=samples, mos_range=(0.0, 5.0), higher_better=True, problems=[]
    )


GAMMA_CALL = (
    '<thinking>dark</thinking> <tool_call>{"name": "gamma_corrector", '
    '"arguments": {"mode": "brighten"}}</tool_call>'
)
ZOOM_CALL = (
    '<thinking>zoom</thinking> <tool_call>{"name": "magnifier", '
    '"arguments": {"bbox": [0, 0, 500, 500]}}</tool_call>'
)
ANSWER = "<thinking>evidence combined</thinking> <answer>2.75</answer>"


def two_tools_then_answer(last_user: str) -> str:
    """Rubric, gamma, magnifier, then the answer (the budget is two rounds)."""
    if "Single-Action per Turn" in last_user:
        return ZOOM_CALL if "Gamma" in last_user or "gamma" in last_user else GAMMA_CALL
    if "final answer now" in last_user:
        return ANSWER
    return RUBRIC_REPLY
