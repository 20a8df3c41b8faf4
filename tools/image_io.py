"""Image input/output with limits: decode anything Pillow reads into 8-bit RGB,
and encode views for a model within a pixel budget.

Pure functions over bytes and numpy arrays; no LangChain. Errors that the caller
must act on (an unreadable or oversized image) raise :class:`ImageError` with a
message that names the problem.
"""

from __future__ import annotations

import base64
import hashlib
import io
import math
import os
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from threading import Lock
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

__all__ = [
    "DecodedImage",
    "ImageError",
    "ImageLimits",
    "data_url",
    "decode_image",
    "decode_image_cached",
    "encode_image",
    "fit_within_pixels",
    "image_digest",
    "model_image",
    "read_image_bytes",
]

# Formats a vision-language server decodes natively; others are re-encoded as PNG.
_PASSTHROUGH_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}


class ImageError(ValueError):
    """An image cannot be used: unreadable, empty, truncated or over a limit."""


@dataclass(frozen=True)
class ImageLimits:
    """Limits applied before and while decoding an image.

    ``max_pixels`` guards against decompression bombs: the pixel count is read
    from the header and checked before any pixel data is decoded.
    """

    max_bytes: int = 100 * 1024 * 1024
    max_pixels: int = 80_000_000
    min_side: int = 8

    def __post_init__(self) -> None:
        if self.max_bytes <= 0 or self.max_pixels <= 0 or self.min_side <= 0:
            raise ValueError("image limits must be positive")


@dataclass(frozen=True)
class DecodedImage:
    """An image decoded to 8-bit RGB, with what is known of its source."""

    rgb: np.ndarray
    format: str | None
    mode: str
    transposed: bool

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])


def read_image_bytes(path: str | os.PathLike[str], limits: ImageLimits | None = None) -> bytes:
    """Read an image file, refusing files over ``limits.max_bytes`` before reading them."""
    limits = limits or ImageLimits()
    p = Path(path)
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        raise ImageError(f"{p}: no such file") from None
    except OSError as exc:
        raise ImageError(f"{p}: cannot read ({exc.strerror or exc})") from None
    if p.is_dir():
        raise ImageError(f"{p}: is a directory, not an image")
    if size > limits.max_bytes:
        raise ImageError(f"{p}: file is {size} bytes, over the limit of {limits.max_bytes} bytes")
    try:
        return p.read_bytes()
    except OSError as exc:
        raise ImageError(f"{p}: cannot read ({exc.strerror or exc})") from None


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    """Convert any Pillow mode to an 8-bit RGB array.

    16- and 32-bit integer images are scaled from their full range, float images
    from [0, 1]; transparency is composited over white.
    """
    mode = img.mode
    if mode in {"I;16", "I;16B", "I;16L", "I;16N", "I"}:
        arr = np.asarray(img, dtype=np.float64)
        # 16-bit sources (PNG/TIFF) arrive as I;16 or I; scale their full range to 8 bits.
        scale = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        grey = np.clip(np.rint(arr * (255.0 / scale)), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        arr = np.nan_to_num(arr, nan=0.0, posinf=1.0, neginf=0.0)
        top = 1.0 if arr.max(initial=0) <= 1.0 else 255.0
        grey = np.clip(np.rint(arr * (255.0 / top)), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    has_alpha = mode in {"RGBA", "LA", "PA", "RGBa", "La"} or (
        mode == "P" and "transparency" in img.info
    )
    if has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def decode_image(data: bytes, limits: ImageLimits | None = None) -> DecodedImage:
    """Decode encoded image bytes into an 8-bit RGB array (H×W×3, C-contiguous).

    Applies the EXIF orientation, takes the first frame of animations, and
    converts CMYK, palette, greyscale, 16-bit and alpha images. Raises
    :class:`ImageError` for empty, unknown, truncated or oversized input.
    """
    limits = limits or ImageLimits()
    if not data:
        raise ImageError("empty image data (0 bytes)")
    if len(data) > limits.max_bytes:
        raise ImageError(f"image is {len(data)} bytes, over the limit of {limits.max_bytes}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError("not a recognised image format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(
            f"image is over the limit of decodable pixels (possible decompression bomb): {exc}"
        ) from None
    except OSError as exc:
        raise ImageError(f"cannot open image: {exc}") from None
    width, height = img.size
    if width * height > limits.max_pixels:
        raise ImageError(
            f"image is {width}x{height} = {width * height} pixels, over the limit of "
            f"{limits.max_pixels} (refused before decoding: possible decompression bomb)"
        )
    if min(width, height) < limits.min_side:
        raise ImageError(
            f"image is {width}x{height}; each side must be at least {limits.min_side} px"
        )
    fmt = img.format
    mode = img.mode
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    try:
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img.seek(0)
            img.load()
            transposed_img = ImageOps.exif_transpose(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(
            f"image is over the limit of decodable pixels (possible decompression bomb): {exc}"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"truncated or corrupt image data: {exc}") from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous
    transposed = img.getexif().get(0x0112, 1) not in (None, 1)
    rgb = np.ascontiguousarray(_to_rgb_array(transposed_img))
    rgb.setflags(write=False)
    return DecodedImage(rgb=rgb, format=fmt, mode=mode, transposed=transposed)


def image_digest(data: bytes) -> str:
    """A short, stable content hash of encoded image bytes."""
    return hashlib.blake2b(data, digest_size=12).hexdigest()


class _DecodeCache:
    """A small thread-safe LRU of decoded images keyed by content hash."""

    def __init__(self, size: int = 8) -> None:
        self._size = size
        self._items: OrderedDict[tuple[str, ImageLimits], DecodedImage] = OrderedDict()
        self._lock = Lock()

    def get(self, data: bytes, limits: ImageLimits) -> DecodedImage:
        key = (image_digest(data), limits)
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return hit
        decoded = decode_image(data, limits)
        with self._lock:
            self._items[key] = decoded
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return decoded


_CACHE = _DecodeCache()


def decode_image_cached(data: bytes, limits: ImageLimits | None = None) -> DecodedImage:
    """:func:`decode_image` with a small in-process cache (the graph decodes once per run)."""
    return _CACHE.get(data, limits or ImageLimits())


def fit_within_pixels(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """The largest size with the same aspect ratio and at most ``max_pixels`` pixels."""
    if max_pixels <= 0:
        raise ValueError("max_pixels must be positive")
    if width * height <= max_pixels:
        return width, height
    scale = math.sqrt(max_pixels / (width * height))
    w = max(1, math.floor(width * scale))
    h = max(1, math.floor(height * scale))
    while w * h > max_pixels:  # guard against rounding up past the budget
        if w >= h:
            w -= 1
        else:
            h -= 1
    return w, h


def encode_image(
    rgb: np.ndarray,
    *,
    max_pixels: int | None = None,
    fmt: str = "PNG",
    quality: int = 95,
) -> bytes:
    """Encode an RGB array, first downscaling (Lanczos) to at most ``max_pixels`` pixels."""
    img = Image.fromarray(np.asarray(rgb, dtype=np.uint8), mode="RGB")
    if max_pixels is not None:
        size = fit_within_pixels(img.width, img.height, max_pixels)
        if size != img.size:
            img = img.resize(size, Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    fmt = fmt.upper()
    if fmt == "JPEG":
        img.save(buf, format="JPEG", quality=quality)
    elif fmt == "PNG":
        img.save(buf, format="PNG", compress_level=1)
    elif fmt == "WEBP":
        img.save(buf, format="WEBP", quality=quality)
    else:
        raise ValueError(f"unsupported output format {fmt!r}; use PNG, JPEG or WEBP")
    return buf.getvalue()


def _sniff_mime(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


def data_url(data: bytes, mime: str | None = None) -> str:
    """A ``data:`` URL for encoded image bytes (MIME type sniffed when not given)."""
    return f"data:{mime or _sniff_mime(data)};base64,{base64.b64encode(data).decode('ascii')}"


def model_image(
    data: bytes, decoded: DecodedImage, max_pixels: int
) -> tuple[bytes, str, dict[str, Any]]:
    """The bytes to send a model for an image, within ``max_pixels``.

    The original bytes go unchanged when the server can decode them as they are
    (JPEG, PNG or WebP, already upright, RGB or greyscale, within budget): no
    re-encoding loss. Otherwise the decoded RGB is re-encoded as PNG, downscaled
    to the budget. Returns (bytes, MIME type, info about what was done).
    """
    within = decoded.width * decoded.height <= max_pixels
    mime = _PASSTHROUGH_FORMATS.get(decoded.format or "")
    if within and mime and not decoded.transposed and decoded.mode in {"RGB", "L"}:
        return data, mime, {"reencoded": False, "size": [decoded.width, decoded.height]}
    out = encode_image(decoded.rgb, max_pixels=max_pixels, fmt="PNG")
    w, h = fit_within_pixels(decoded.width, decoded.height, max_pixels)
    return out, "image/png", {"reencoded": True, "size": [w, h]}
