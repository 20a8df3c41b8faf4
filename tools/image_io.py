"""Image input/output with limits: decode anything Pillow reads into 8-bit RGB,
and encode views for a model within a pixel budget.

Pure functions over bytes and numpy arrays; no LangChain. Errors that the caller
must act on (an unreadable or oversized image) raise :class:`ImageError` with a
message that names the problem.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import math
import os
import re
import stat
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from threading import Lock
from typing import Any

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

__all__ = [
    "DecodedImage",
    "ImageError",
    "ImageLimits",
    "data_url",
    "decode_image",
    "decode_image_cached",
    "encode_image",
    "fit_within_pixels",
    "image_bytes",
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
    from the header and checked before any pixel data is decoded. JPEG images
    may have up to ``max_jpeg_pixels``: above ``max_decode_pixels`` they are
    decoded downscaled in the DCT domain, so their full-size pixels are never
    held (one over ``max_pixels`` that cannot be is refused; Pillow's own limit,
    about 179 MP, still applies).

    ``max_decode_pixels`` is the working resolution: a larger image is decoded
    reduced by the smallest integer factor that brings it within (JPEG: 2, 4 or
    8 while decoding; other formats: loaded, then box-averaged strip by strip),
    so the decoded array and everything computed on it stay within the budget.
    :attr:`DecodedImage.scale` records the factor.
    """

    max_bytes: int = 100 * 1024 * 1024
    max_pixels: int = 80_000_000
    min_side: int = 8
    max_decode_pixels: int = 32_000_000
    max_jpeg_pixels: int = 160_000_000

    def __post_init__(self) -> None:
        pixels = (self.max_pixels, self.max_decode_pixels, self.max_jpeg_pixels)
        if min(self.max_bytes, self.min_side, *pixels) <= 0:
            raise ValueError("image limits must be positive")

    def pixel_cap(self, fmt: str | None) -> int:
        """The most pixels an image of format ``fmt`` may declare in its header."""
        if fmt in _DRAFT_FORMATS:
            return max(self.max_pixels, self.max_jpeg_pixels)
        return self.max_pixels


#: Formats Pillow decodes downscaled (``Image.draft``: DCT scaling by 1/2, 1/4, 1/8).
_DRAFT_FORMATS = frozenset({"JPEG", "MPO"})
#: Source pixels converted at a time when building the decoded array.
_STRIP_PIXELS = 1 << 22


@dataclass(frozen=True)
class DecodedImage:
    """An image decoded to 8-bit RGB, with what is known of its source.

    ``width`` and ``height`` are the image's own size, upright. ``rgb`` holds it
    at that size, or, for an image over :attr:`ImageLimits.max_decode_pixels`,
    reduced ``scale`` times: pixel ``(x, y)`` of ``rgb`` averages the image's
    pixels ``[x * scale, (x + 1) * scale) x [y * scale, (y + 1) * scale)`` (an
    EXIF-rotated image is reduced as stored, so there the blocks may be offset by
    less than ``scale`` pixels). Boxes given to or reported by the tools are in the
    image's own pixels (:func:`~tooliqa.tools.views.covering_crop`).
    """

    rgb: np.ndarray
    format: str | None
    mode: str
    transposed: bool
    size: tuple[int, int] | None = None
    scale: int = 1

    @property
    def width(self) -> int:
        return self.size[0] if self.size else int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return self.size[1] if self.size else int(self.rgb.shape[0])


def _file_kind(mode: int) -> str:
    kinds = {
        stat.S_ISDIR: "a directory",
        stat.S_ISFIFO: "a FIFO (named pipe)",
        stat.S_ISCHR: "a character device",
        stat.S_ISBLK: "a block device",
        stat.S_ISSOCK: "a socket",
    }
    return next((name for test, name in kinds.items() if test(mode)), "a special file")


def _check_file(p: Path, st: os.stat_result, limits: ImageLimits) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(f"{p}: is {_file_kind(st.st_mode)}, not an image file")
    if st.st_size > limits.max_bytes:
        raise ImageError(
            f"{p}: file is {st.st_size} bytes, over the limit of {limits.max_bytes} bytes"
        )


def read_image_bytes(path: str | os.PathLike[str], limits: ImageLimits | None = None) -> bytes:
    """Read an image file, refusing anything but a regular file and files over
    ``limits.max_bytes``: the size is checked before reading, and at most
    ``max_bytes + 1`` bytes are read, so a file that grows or misreports its size
    is refused too. FIFOs and devices are refused without blocking on them.
    """
    limits = limits or ImageLimits()
    p = Path(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    flags |= getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        _check_file(p, os.stat(p), limits)
        fd = os.open(p, flags)  # non-blocking: a FIFO swapped in after the check cannot hang us
    except FileNotFoundError:
        raise ImageError(f"{p}: no such file") from None
    except OSError as exc:
        raise ImageError(f"{p}: cannot read ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            _check_file(p, st, limits)
            data = f.read(st.st_size + 1)  # one byte more tells a file longer than it said
            if len(data) > st.st_size:  # it grew, or misreports its size: read on to the cap
                data += f.read(limits.max_bytes + 1 - len(data))
    except OSError as exc:
        raise ImageError(f"{p}: cannot read ({exc.strerror or exc})") from None
    if len(data) > limits.max_bytes:
        raise ImageError(
            f"{p}: file is over the limit of {limits.max_bytes} bytes (it grew while being read)"
        )
    return data


def _peak_value(img: Image.Image) -> float | None:
    """The largest value of a 32-bit (``I``/``F``) image as :func:`_to_rgb_array` reads
    it (NaN as 0, infinities as 1 and 0), found strip by strip; None for other modes."""
    if img.mode not in {"I", "F"}:
        return None
    peak = 0.0
    for strip in _strips(img, _strip_rows(img.width)):
        arr = np.asarray(strip, dtype=np.float64)
        if img.mode == "F":
            arr = np.nan_to_num(arr, nan=0.0, posinf=1.0, neginf=0.0)
        peak = max(peak, float(arr.max(initial=0)))
    return peak


_DATA_URL = re.compile(r"data:(?P<mime>[\w/+.-]*)(?P<params>(?:;[\w=.-]+)*?);base64,", re.I)
_PATH_LIKE = re.compile(r"(?:file://|/|\./|\.\./|~|[A-Za-z]:[\\/])")


def is_path_like(value: object) -> bool:
    """Whether ``value`` is text that reads as a local path or ``file://`` URL (short, and
    starting like one), not base64 or a URL of another kind."""
    return isinstance(value, str) and len(value) < 4096 and bool(_PATH_LIKE.match(value.strip()))


def image_bytes(
    value: bytes | bytearray | memoryview | str,
    limits: ImageLimits | None = None,
    *,
    allow_files: bool = False,
) -> bytes:
    """The encoded image in a graph input: bytes as they are; a ``tooliqa-blob:sha256:...``
    reference (:mod:`tooliqa.tools.blobs`) as the bytes it names; text as a ``data:`` URL
    or plain base64 (what a JSON client such as LangGraph Studio, ``langgraph_sdk`` or
    ``RemoteGraph`` can send); a local path or ``file://`` URL only with
    ``allow_files`` (a served graph must not read its server's files for any
    client). The byte cap applies before decoding. Raises :class:`ImageError`."""
    limits = limits or ImageLimits()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if not isinstance(value, str):
        raise ImageError(
            f"an image is bytes or text (base64, a data URL), not {type(value).__name__}"
        )
    text = value.strip()
    if text.startswith("tooliqa-blob:"):
        from .blobs import BLOBS

        return BLOBS.get(text)
    if text.lower().startswith(("http://", "https://")):
        raise ImageError(
            "image URLs are fetched only when the run's context allows it (fetch_urls): send "
            "the image itself, as base64 or a data: URL"
        )
    if is_path_like(text):
        if not allow_files:
            raise ImageError(
                "the image is a file path, and reading files named in the input is off "
                "(TOOLIQA_ALLOW_IMAGE_FILES=1 where the graph runs turns it on): send the image "
                "itself, as base64 or a data: URL"
            )
        path = text[len("file://") :] if text.lower().startswith("file://") else text
        return read_image_bytes(os.path.expanduser(path), limits)
    match = _DATA_URL.match(text)
    payload = text[match.end() :] if match else text
    payload = "".join(payload.split())
    if len(payload) * 3 // 4 > limits.max_bytes:
        raise ImageError(
            f"the image text holds about {len(payload) * 3 // 4} bytes, over the limit of "
            f"{limits.max_bytes}"
        )
    try:
        return base64.b64decode(payload + "=" * (-len(payload) % 4), validate=True)
    except (binascii.Error, ValueError):
        what = "data: URL" if match else "image text"
        raise ImageError(
            f"the {what} is not valid base64 (an image is bytes, base64 or a data: URL)"
        ) from None


def _to_rgb_array(img: Image.Image, peak: float | None = None) -> np.ndarray:
    """Convert any Pillow mode to an 8-bit RGB array.

    16- and 32-bit integer images are scaled from their full range, float images
    from [0, 1]; transparency is composited over white. ``peak`` is the image's
    largest value (:func:`_peak_value`) when ``img`` is a strip of it.
    """
    mode = img.mode
    if mode in {"I;16", "I;16B", "I;16L", "I;16N", "I"}:
        arr = np.asarray(img, dtype=np.float64)
        top = arr.max(initial=0) if peak is None else peak
        # 16-bit sources (PNG/TIFF) arrive as I;16 or I; scale their full range to 8 bits.
        scale = 65535.0 if mode.startswith("I;16") or top > 255 else 255.0
        grey = np.clip(np.rint(arr * (255.0 / scale)), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        arr = np.nan_to_num(arr, nan=0.0, posinf=1.0, neginf=0.0)
        top = 1.0 if (arr.max(initial=0) if peak is None else peak) <= 1.0 else 255.0
        grey = np.clip(np.rint(arr * (255.0 / top)), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    has_alpha = mode in {"RGBA", "LA", "PA", "RGBa", "La"} or (
        mode == "P" and "transparency" in img.info
    )
    if has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return np.asarray(img if img.mode == "RGB" else img.convert("RGB"), dtype=np.uint8)


def _strip_rows(width: int, factor: int = 1) -> int:
    """Source rows per strip: a multiple of ``factor``, about :data:`_STRIP_PIXELS` pixels."""
    return max(1, _STRIP_PIXELS // (width * factor)) * factor


def _strips(img: Image.Image, rows: int) -> Iterator[Image.Image]:
    for top in range(0, img.height, rows):
        yield img.crop((0, top, img.width, min(img.height, top + rows)))


def _reduction(width: int, height: int, budget: int) -> int:
    """The smallest integer ``k`` with ``ceil(width / k) * ceil(height / k) <= budget``.

    >>> _reduction(8888, 8888, 32_000_000), _reduction(4000, 3000, 32_000_000)
    (2, 1)
    """
    k = max(1, math.ceil(math.sqrt(width * height / budget)))
    while -(-width // k) * -(-height // k) > budget:
        k += 1
    return k


def _draft(img: Image.Image, budget: int) -> int:
    """Ask a JPEG decoder for DCT-domain downscaling (1/2, 1/4 or 1/8: the least that
    fits ``budget``, else 1/8); the factor it will decode at."""
    w, h = img.size
    if w * h <= budget:
        return 1
    factor = next((s for s in (2, 4, 8) if -(-w // s) * -(-h // s) <= budget), 8)
    img.draft(None, (w // factor, h // factor))
    return 1 if img.size == (w, h) else factor


#: EXIF orientation -> the numpy view that makes the pixels upright (as ImageOps.exif_transpose).
_UPRIGHT: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


def _rgb_of(img: Image.Image, budget: int) -> tuple[np.ndarray, int]:
    """The loaded image as 8-bit RGB within ``budget`` pixels (reduced by the smallest
    integer factor that fits), built strip by strip; and the factor."""
    factor = _reduction(img.width, img.height, budget)
    peak = _peak_value(img)
    out = np.empty((-(-img.height // factor), -(-img.width // factor), 3), np.uint8)
    top = 0
    for strip in _strips(img, _strip_rows(img.width, factor)):
        rgb = _to_rgb_array(strip, peak)
        if factor > 1:
            rgb = np.asarray(Image.fromarray(rgb).reduce(factor))
        out[top : top + rgb.shape[0]] = rgb
        top += rgb.shape[0]
    return out, factor


def _open(data: bytes) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # Pillow's warning threshold (89 MP) is replaced by the format-aware
            # ImageLimits.pixel_cap, checked next; its hard limit still raises.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError("not a recognised image format") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(
            f"image is over the limit of decodable pixels (possible decompression bomb): {exc}"
        ) from None
    except OSError as exc:
        raise ImageError(f"cannot open image: {exc}") from None


def _check_header(img: Image.Image, limits: ImageLimits) -> None:
    width, height = img.size
    cap = limits.pixel_cap(img.format)
    if width * height > cap:
        raise ImageError(
            f"image is {width}x{height} = {width * height} pixels, over the limit of "
            f"{cap} (refused before decoding: possible decompression bomb)"
        )
    if min(width, height) < limits.min_side:
        raise ImageError(
            f"image is {width}x{height}; each side must be at least {limits.min_side} px"
        )


@contextmanager
def _strict_decoding() -> Iterator[None]:
    """Truncated data and decompression bombs raise :class:`ImageError` inside."""
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    try:
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(
            f"image is over the limit of decodable pixels (possible decompression bomb): {exc}"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"truncated or corrupt image data: {exc}") from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def decode_image(data: bytes, limits: ImageLimits | None = None) -> DecodedImage:
    """Decode encoded image bytes into an 8-bit RGB array (H×W×3, C-contiguous).

    Applies the EXIF orientation, takes the first frame of animations, and
    converts CMYK, palette, greyscale, 16-bit and alpha images. An image over
    ``limits.max_decode_pixels`` is decoded reduced (see :class:`ImageLimits`,
    :attr:`DecodedImage.scale`). Raises :class:`ImageError` for empty, unknown,
    truncated or oversized input.
    """
    limits = limits or ImageLimits()
    if not data:
        raise ImageError("empty image data (0 bytes)")
    if len(data) > limits.max_bytes:
        raise ImageError(f"image is {len(data)} bytes, over the limit of {limits.max_bytes}")
    img = _open(data)
    _check_header(img, limits)
    fmt, mode, size = img.format, img.mode, img.size
    with _strict_decoding():
        img.seek(0)
        budget = min(limits.max_decode_pixels, limits.max_pixels)
        drafted = _draft(img, budget) if fmt in _DRAFT_FORMATS else 1
        if img.width * img.height > limits.max_pixels:  # never decoded at this size
            raise ImageError(
                f"image is {size[0]}x{size[1]} = {size[0] * size[1]} pixels, over the limit of "
                f"{limits.max_pixels} for decoding at full size, and it cannot be decoded downscaled"
            )
        img.load()
        orientation = img.getexif().get(0x0112, 1)
        rgb, reduced = _rgb_of(img, limits.max_decode_pixels)
    del img
    upright = _UPRIGHT.get(orientation)
    if upright is not None:
        rgb = upright(rgb)
        size = (size[1], size[0]) if orientation in (5, 6, 7, 8) else size
    rgb = np.ascontiguousarray(rgb)
    rgb.setflags(write=False)
    transposed = orientation not in (None, 1)
    scale = drafted * reduced
    return DecodedImage(
        rgb=rgb, format=fmt, mode=mode, transposed=transposed, size=size, scale=scale
    )


def image_digest(data: bytes) -> str:
    """A short, stable content hash of encoded image bytes."""
    return hashlib.blake2b(data, digest_size=12).hexdigest()


class _DecodeCache:
    """A small thread-safe LRU of decoded images keyed by content hash, holding at most
    ``size`` images and, beyond the newest, ``max_bytes`` of pixels."""

    def __init__(self, size: int = 8, max_bytes: int = 256 * 1024 * 1024) -> None:
        self._size = size
        self._max_bytes = max_bytes
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
            held = sum(item.rgb.nbytes for item in self._items.values())
            while len(self._items) > 1 and (
                len(self._items) > self._size or held > self._max_bytes
            ):
                held -= self._items.popitem(last=False)[1].rgb.nbytes
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
    w, h = fit_within_pixels(decoded.rgb.shape[1], decoded.rgb.shape[0], max_pixels)
    return out, "image/png", {"reencoded": True, "size": [w, h]}
