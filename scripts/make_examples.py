"""Regenerate the bundled example images in ``examples/``.

The sources are public-domain / CC0 photographs bundled with scikit-image
(``skimage.data``: astronaut — NASA, public domain; coffee — CC0; chelsea —
CC0; rocket — SpaceX, CC0), each given one known distortion so the examples
span the quality range. Needs scikit-image (a development dependency only).

    python scripts/make_examples.py
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter
from skimage import data

OUT = Path(__file__).resolve().parents[1] / "examples"


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _gamma(img: Image.Image, gamma: float, gain: float = 1.0) -> Image.Image:
    a = np.asarray(img, dtype=np.float64) / 255.0
    return Image.fromarray(np.clip(np.rint(255 * gain * a**gamma), 0, 255).astype(np.uint8))


def main() -> None:
    OUT.mkdir(exist_ok=True)
    rng = np.random.default_rng(7)
    astronaut = Image.fromarray(data.astronaut())
    coffee = Image.fromarray(data.coffee())
    chelsea = Image.fromarray(data.chelsea()).resize((602, 400), Image.Resampling.LANCZOS)
    rocket = Image.fromarray(data.rocket())
    noisy = np.asarray(chelsea, dtype=np.float64) + rng.normal(0, 22, (400, 602, 3))
    examples = {
        "astronaut_pristine.jpg": astronaut,
        "coffee_blurred.jpg": coffee.filter(ImageFilter.GaussianBlur(3.0)),
        "chelsea_noisy.jpg": Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)),
        "rocket_jpeg_q6.jpg": _jpeg(rocket, 6),
        "coffee_underexposed.jpg": _gamma(coffee, 2.6, 0.45),
        "astronaut_overexposed.jpg": _gamma(astronaut, 0.35, 1.35),
    }
    for name, img in examples.items():
        img.save(OUT / name, format="JPEG", quality=92)
        print(OUT / name)


if __name__ == "__main__":
    main()
