"""The view tools of Tool-IQA as pure numpy/PIL functions.

- Magnifier: crop a box ``[x1, y1, x2, y2]`` and present it as a larger view.
- Gamma corrector: ``I_out = I_in ** gamma`` on intensities in [0, 1], through a
  256-entry lookup table on 8-bit data.

Boxes come in one of three conventions:

``rel1000``  Qwen-VL's relative coordinates, 0–1000 on each axis (the default).
``pixel``    pixel coordinates of the original image.
``unit``     relative coordinates in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from PIL import Image

__all__ = [
    "GAMMA_PRESETS",
    "GAMMA_RANGE",
    "MIN_REGION_SIDE",
    "BBoxConvention",
    "ToolArgumentError",
    "apply_gamma",
    "bbox_to_pixels",
    "covering_crop",
    "crop",
    "gamma_lut",
    "magnify",
    "resolve_gamma",
]

BBoxConvention = Literal["rel1000", "pixel", "unit"]
CONVENTION_SCALE: dict[str, float | None] = {"rel1000": 1000.0, "unit": 1.0, "pixel": None}

#: Smallest side of a magnifier region, in pixels of the original image
#: (one Qwen-VL vision token covers 28×28 pixels after merging).
MIN_REGION_SIDE = 28
#: Largest |value| a box coordinate may have in any convention (pixels included).
MAX_BOX_VALUE = 1e6
#: Allowed explicit gamma values.
GAMMA_RANGE = (0.2, 5.0)
#: The paper's two options: brighten reveals shadows, darken reveals highlights.
GAMMA_PRESETS: dict[str, float] = {"brighten": 0.5, "darken": 2.0}
#: Other words for the two options: the paper's own ("the Gamma Corrector provided
#: darkening and brightening options", §4.1) and their short forms.
GAMMA_MODE_ALIASES: dict[str, str] = {
    "brightening": "brighten",
    "bright": "brighten",
    "brighter": "brighten",
    "lighten": "brighten",
    "lightening": "brighten",
    "darkening": "darken",
    "dark": "darken",
    "darker": "darken",
}


def gamma_mode(mode: object) -> str | None:
    """The canonical gamma option (``brighten``/``darken``) for ``mode`` or one of its
    :data:`GAMMA_MODE_ALIASES`, case-insensitive; None stays None.

    >>> gamma_mode("Darkening"), gamma_mode("bright"), gamma_mode(None)
    ('darken', 'brighten', None)
    """
    if mode is None:
        return None
    if not isinstance(mode, str):
        raise ToolArgumentError(f"mode must be 'brighten' or 'darken', got {_shown(mode)}")
    key = mode.strip().lower()
    key = GAMMA_MODE_ALIASES.get(key, key)
    if key not in GAMMA_PRESETS:
        raise ToolArgumentError(f"mode must be 'brighten' or 'darken', got {_shown(mode)}")
    return key


class ToolArgumentError(ValueError):
    """A tool call's arguments cannot be used; the message tells the model what to change."""


def _shown(value: object, limit: int = 200) -> str:
    """``repr(value)`` for an error message, cut to ``limit`` characters."""
    try:
        text = repr(value)
    except ValueError:  # an integer too long to write out
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _too_far(bbox: object) -> ToolArgumentError:
    return ToolArgumentError(f"bbox values must lie within ±{MAX_BOX_VALUE:g}, got {_shown(bbox)}")


def _coerce_box(bbox: object) -> tuple[float, float, float, float]:
    if isinstance(bbox, str | bytes) or not isinstance(bbox, Sequence) or len(bbox) != 4:
        raise ToolArgumentError(
            f"bbox must be a list of four numbers [x1, y1, x2, y2], got {_shown(bbox)}"
        )
    values: list[float] = []
    for v in bbox:
        if isinstance(v, bool):
            raise ToolArgumentError(f"bbox values must be numbers, got {_shown(bbox)}")
        try:
            f = float(v)
        except OverflowError:  # an integer past the float range
            raise _too_far(bbox) from None
        except (TypeError, ValueError):
            raise ToolArgumentError(f"bbox values must be numbers, got {_shown(bbox)}") from None
        if not math.isfinite(f):
            raise ToolArgumentError(f"bbox values must be finite numbers, got {_shown(bbox)}")
        if abs(f) > MAX_BOX_VALUE:  # no convention reaches this; it would overflow the pixels
            raise _too_far(bbox)
        values.append(f)
    return values[0], values[1], values[2], values[3]


def bbox_to_pixels(
    bbox: object,
    width: int,
    height: int,
    convention: BBoxConvention = "rel1000",
    *,
    min_side: int = MIN_REGION_SIDE,
) -> tuple[int, int, int, int]:
    """Turn a model's box into pixel bounds ``(x1, y1, x2, y2)`` (x2, y2 exclusive).

    The box is converted from ``convention``, clamped to the image, and widened
    outwards to whole pixels. Non-numeric, NaN, inverted or empty boxes, boxes
    wholly outside the image and regions under ``min_side`` pixels per side
    (or the image side, for images smaller than that; at least one pixel) raise
    :class:`ToolArgumentError`.
    """
    if convention not in CONVENTION_SCALE:
        raise ValueError(f"unknown bbox convention {convention!r}; use rel1000, pixel or unit")
    min_side = max(1, min_side)  # a region is never empty, whatever the setting
    given = _coerce_box(bbox)
    shown = "[" + ", ".join(f"{v:g}" for v in given) + "]"
    x1, y1, x2, y2 = given
    if x2 <= x1 or y2 <= y1:
        raise ToolArgumentError(
            f"bbox {shown} is inverted or empty: it must satisfy x1 < x2 and y1 < y2"
        )
    scale = CONVENTION_SCALE[convention]
    if scale is not None:
        x1, x2 = x1 * width / scale, x2 * width / scale
        y1, y2 = y1 * height / scale, y2 * height / scale
    if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
        limit = {"rel1000": "0-1000", "unit": "0-1", "pixel": f"0-{width} x 0-{height}"}[convention]
        raise ToolArgumentError(f"bbox {shown} lies outside the image; coordinates are {limit}")
    px1 = max(0, math.floor(x1))
    py1 = max(0, math.floor(y1))
    px2 = min(width, math.ceil(x2))
    py2 = min(height, math.ceil(y2))
    need_w = min(min_side, width)
    need_h = min(min_side, height)
    if px2 - px1 < need_w or py2 - py1 < need_h:
        raise ToolArgumentError(
            f"region is too small ({px2 - px1}x{py2 - py1} px); each side must cover at least "
            f"{min_side} px of the {width}x{height} image, so choose a larger box"
        )
    return px1, py1, px2, py2


def crop(rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The pixels inside a pixel box ``(x1, y1, x2, y2)``, x2/y2 exclusive (a copy)."""
    x1, y1, x2, y2 = box
    return np.array(rgb[y1:y2, x1:x2], copy=True)


def covering_crop(
    rgb: np.ndarray,
    box: tuple[int, int, int, int],
    scale: int = 1,
    size: tuple[int, int] | None = None,
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The pixels showing the pixel box ``box`` of an image, and the box they show.

    ``rgb`` may hold the image reduced ``scale`` times from its ``size`` (width,
    height), as :class:`~tooliqa.tools.image_io.DecodedImage` does for large
    images: ``box`` is then in the full image's pixels, the crop is of the reduced
    pixels covering it (widened outwards) and the box returned is what they show,
    in full-image pixels. With ``scale`` 1 this is :func:`crop` and ``box``.

    >>> img = np.zeros((50, 100, 3), np.uint8)  # a 200 x 100 image reduced 2 times
    >>> view, shown = covering_crop(img, (41, 20, 120, 60), scale=2, size=(200, 100))
    >>> view.shape[:2], shown
    ((20, 40), (40, 20, 120, 60))
    """
    if scale == 1:
        return crop(rgb, box), box
    height, width = rgb.shape[:2]
    full_w, full_h = size or (width * scale, height * scale)
    x1, y1, x2, y2 = box
    cx1, cy1 = x1 // scale, y1 // scale
    cx2, cy2 = min(width, -(-x2 // scale)), min(height, -(-y2 // scale))
    shown = (cx1 * scale, cy1 * scale, min(full_w, cx2 * scale), min(full_h, cy2 * scale))
    return crop(rgb, (cx1, cy1, cx2, cy2)), shown


def magnify(
    rgb: np.ndarray,
    bbox: object,
    convention: BBoxConvention = "rel1000",
    *,
    max_pixels: int | None = None,
    max_zoom: float = 4.0,
    min_side: int = MIN_REGION_SIDE,
    scale: int = 1,
    size: tuple[int, int] | None = None,
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Crop the box and enlarge it (bicubic) to fill ``max_pixels``, at most ``max_zoom``×.

    Returns the view and the pixel box it came from. Without ``max_pixels`` the
    crop is returned at its native resolution. For an image decoded reduced
    ``scale`` times from ``size`` (see :func:`covering_crop`), the box is read,
    checked and returned in the full image's pixels.
    """
    height, width = rgb.shape[:2]
    full_w, full_h = size or (width * scale, height * scale)
    box = bbox_to_pixels(bbox, full_w, full_h, convention, min_side=min_side)
    view, box = covering_crop(rgb, box, scale, (full_w, full_h))
    if max_pixels is None:
        return view, box
    h, w = view.shape[:2]
    zoom = min(max_zoom, math.sqrt(max_pixels / float(w * h)))
    if zoom > 1.0:
        size = (max(1, math.floor(w * zoom)), max(1, math.floor(h * zoom)))
        view = np.asarray(Image.fromarray(view).resize(size, Image.Resampling.BICUBIC))
    return view, box


def resolve_gamma(mode: str | None = None, gamma: float | None = None) -> float:
    """The gamma to apply, from the paper's ``brighten``/``darken`` option (or an alias such as
    ``darkening``, see :data:`GAMMA_MODE_ALIASES`) and/or an explicit value.

    An explicit gamma must lie in :data:`GAMMA_RANGE` and agree with the mode
    (brighten needs gamma < 1, darken gamma > 1).
    """
    mode = gamma_mode(mode)
    if gamma is None:
        if mode is None:
            raise ToolArgumentError("give a mode ('brighten' or 'darken') or a gamma value")
        return GAMMA_PRESETS[mode]
    if (
        isinstance(gamma, bool)
        or not isinstance(gamma, int | float)
        or (isinstance(gamma, float) and not math.isfinite(gamma))
    ):
        raise ToolArgumentError(f"gamma must be a finite number, got {_shown(gamma)}")
    lo, hi = GAMMA_RANGE
    if not lo <= gamma <= hi:  # an integer past the float range compares without overflow
        raise ToolArgumentError(
            f"gamma {_shown(gamma, 40)} is outside the allowed range [{lo}, {hi}]"
        )
    if mode == "brighten" and gamma >= 1.0:
        raise ToolArgumentError(f"brighten needs gamma < 1 (got {gamma})")
    if mode == "darken" and gamma <= 1.0:
        raise ToolArgumentError(f"darken needs gamma > 1 (got {gamma})")
    return float(gamma)


def gamma_lut(gamma: float) -> np.ndarray:
    """The 256-entry uint8 table ``round(255 * (i / 255) ** gamma)``."""
    x = np.arange(256, dtype=np.float64) / 255.0
    return np.clip(np.rint(255.0 * np.power(x, gamma)), 0, 255).astype(np.uint8)


def apply_gamma(rgb: np.ndarray, gamma: float) -> np.ndarray:
    """``I_out = I_in ** gamma`` per channel on 8-bit data, by table lookup."""
    if rgb.dtype != np.uint8:
        raise TypeError(f"apply_gamma expects uint8 data, got {rgb.dtype}")
    return np.take(gamma_lut(gamma), rgb)
