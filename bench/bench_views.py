"""Benchmark the view tools on a 4000x3000 RGB image.

Prints median milliseconds for: gamma by lookup table vs float pow, the
magnifier (crop + enlarge), encoding a view within the pixel budget, and the
whole tool call as the graph runs it. Run: python bench/bench_views.py
"""

from __future__ import annotations

import argparse

import numpy as np
from _timing import median_ms

from tooliqa.graph.context import DEFAULT_MAX_PIXELS
from tooliqa.tools import ViewSettings, apply_gamma, encode_image, magnify, run_view_tool


def float_gamma(rgb: np.ndarray, gamma: float) -> np.ndarray:
    """The reference: float pow on every pixel."""
    return np.clip(np.rint(255.0 * np.power(rgb / 255.0, gamma)), 0, 255).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0 : args.height, 0 : args.width]
    img = np.stack([xs % 256, ys % 256, (xs + ys) % 256], axis=2).astype(np.uint8)
    img = np.clip(img.astype(np.int16) + rng.integers(-8, 9, img.shape), 0, 255).astype(np.uint8)
    assert np.array_equal(apply_gamma(img[:64, :64], 0.5), float_gamma(img[:64, :64], 0.5))
    settings = ViewSettings(max_pixels=DEFAULT_MAX_PIXELS)
    box = [300, 300, 500, 500]  # rel1000: an 800x600 region
    view, _ = magnify(img, box, "rel1000", max_pixels=DEFAULT_MAX_PIXELS)
    gamma_view = apply_gamma(img, 0.5)
    rows = {
        "gamma LUT (full image)": median_ms(lambda: apply_gamma(img, 0.5), args.repeat),
        "gamma float pow (full image)": median_ms(
            lambda: float_gamma(img, 0.5), max(3, args.repeat // 2)
        ),
        "magnifier crop+enlarge": median_ms(
            lambda: magnify(img, box, "rel1000", max_pixels=DEFAULT_MAX_PIXELS), args.repeat
        ),
        "encode magnifier view (PNG)": median_ms(
            lambda: encode_image(view, max_pixels=DEFAULT_MAX_PIXELS), args.repeat
        ),
        "encode gamma view (downscale+PNG)": median_ms(
            lambda: encode_image(gamma_view, max_pixels=DEFAULT_MAX_PIXELS), args.repeat
        ),
        "tool call: gamma_corrector": median_ms(
            lambda: run_view_tool("gamma_corrector", {"mode": "brighten"}, img, settings),
            args.repeat,
        ),
        "tool call: magnifier": median_ms(
            lambda: run_view_tool("magnifier", {"bbox": box}, img, settings), args.repeat
        ),
    }
    print(
        f"image {args.width}x{args.height} RGB, pixel budget {DEFAULT_MAX_PIXELS}, median of {args.repeat}"
    )
    for name, ms in rows.items():
        print(f"  {name:<36} {ms:9.2f} ms")
    speedup = rows["gamma float pow (full image)"] / rows["gamma LUT (full image)"]
    print(f"  LUT gamma speed-up over float pow: {speedup:.1f}x")


if __name__ == "__main__":
    main()
