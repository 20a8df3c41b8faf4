"""Bounded image input: only regular files are read, never more than the byte cap, and
huge images are decoded downscaled in bounded memory, with boxes still in the
image's own pixels."""

from __future__ import annotations

import asyncio
import io
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tooliqa.backends.classic import ClassicChatModel
from tooliqa.graph import Assessment, Context, graph
from tooliqa.tools import (
    ImageError,
    ImageLimits,
    ViewSettings,
    decode_image,
    magnify,
    read_image_bytes,
    run_view_tool,
)

from _support import REPO, png_bytes

linux_only = pytest.mark.skipif(
    not Path("/proc/self/status").exists(), reason="reads peak memory from /proc"
)


def child(code: str, *args: str, memory_gb: float | None = None) -> str:
    """Run ``code`` in a fresh interpreter (optionally under an address-space limit) and
    return its stdout; the child's own peak memory is unaffected by this process."""

    cap = int((memory_gb or 0) * 2**30)

    def limit() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
        preexec_fn=limit if cap else None,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


#: Decodes the file named by argv[1]; prints its size, scale, decoded size and the
#: peak resident memory of this process (VmHWM: its own, not inherited at exec).
DECODE_AND_REPORT = """
import sys
from tooliqa.tools import decode_image, read_image_bytes

def peak_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

before = peak_mb()
d = decode_image(read_image_bytes(sys.argv[1]))
print(d.width, d.height, d.scale, d.rgb.shape[1], d.rgb.shape[0], round(before), round(peak_mb()))
"""


def write_png(path: Path, width: int, height: int) -> None:
    """A width x height RGB PNG written row by row (never held in memory): smooth
    gradients that shift per row."""
    xs = np.arange(width)
    base = np.stack([xs * 255 // width, (width - xs) * 255 // width, xs % 256], axis=1)
    base = base.astype(np.uint8)

    def chunk(f, kind: bytes, body: bytes) -> None:
        f.write(struct.pack(">I", len(body)) + kind + body)
        f.write(struct.pack(">I", zlib.crc32(kind + body)))

    z = zlib.compressobj(1)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        chunk(f, b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        rows = bytearray()
        for y in range(height):
            rows += b"\x00" + np.roll(base, y // 16, axis=0).tobytes()
            if len(rows) > 1 << 23 or y == height - 1:
                out = z.compress(bytes(rows)) + (z.flush() if y == height - 1 else b"")
                rows.clear()
                if out:
                    chunk(f, b"IDAT", out)
        chunk(f, b"IEND", b"")


class TestOnlyRegularFilesAreRead:
    @pytest.mark.timeout(10)
    @pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
    def test_a_fifo_is_refused_without_blocking(self, tmp_path):
        fifo = tmp_path / "image.png"
        os.mkfifo(fifo)  # no writer: opening it for reading would block
        with pytest.raises(ImageError, match="FIFO"):
            read_image_bytes(fifo)

    @pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero here")
    def test_a_character_device_is_refused(self):
        # In a child under a memory limit: reading /dev/zero to the end never ends.
        code = (
            "from tooliqa.tools import ImageError, ImageLimits, read_image_bytes\n"
            "try:\n"
            "    read_image_bytes('/dev/zero', ImageLimits(max_bytes=1000))\n"
            "except ImageError as exc:\n"
            "    print(exc)\n"
        )
        assert "character device" in child(code, memory_gb=2)

    @pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="no /proc here")
    def test_the_byte_cap_holds_for_a_file_that_misreports_its_size(self):
        # /proc files are regular files that report 0 bytes: the cap must hold on the read.
        assert os.stat("/proc/self/maps").st_size == 0
        with pytest.raises(ImageError, match="over the limit of 100 bytes"):
            read_image_bytes("/proc/self/maps", ImageLimits(max_bytes=100))

    def test_a_regular_file_within_the_cap_is_read_whole(self, tmp_path, image_bytes):
        path = tmp_path / "ok.png"
        path.write_bytes(image_bytes)
        limits = ImageLimits(max_bytes=len(image_bytes))
        assert read_image_bytes(path, limits) == image_bytes


@linux_only
class TestHugeImagesDecodeInBoundedMemory:
    def test_a_64_mp_png_is_decoded_reduced_within_600_mb(self, tmp_path):
        path = tmp_path / "huge.png"
        write_png(path, 8000, 8000)
        w, h, scale, dw, dh, before, peak = map(int, child(DECODE_AND_REPORT, str(path)).split())
        assert (w, h, scale, dw, dh) == (8000, 8000, 2, 4000, 4000)
        # Full-size decoding alone holds 256 MB in Pillow; the old path peaked over 1 GB.
        assert peak < 600, f"peak {peak} MB (after imports {before} MB)"

    def test_a_100_mp_jpeg_is_accepted_and_decoded_at_half_size(self, tmp_path):
        path = tmp_path / "huge.jpg"
        img = Image.new("L", (10_000, 10_000), 90)
        ImageDraw.Draw(img).rectangle((2000, 3000, 7000, 6000), fill=200)
        img.save(path, quality=80)
        del img
        w, h, scale, dw, dh, before, peak = map(int, child(DECODE_AND_REPORT, str(path)).split())
        assert (w, h, scale, dw, dh) == (10_000, 10_000, 2, 5000, 5000)
        assert peak < 400, f"peak {peak} MB (after imports {before} MB)"


def jpeg_with_size(width: int, height: int) -> bytes:
    """A small JPEG whose header claims ``width`` x ``height`` pixels."""
    data = bytearray(png_to_jpeg(np.full((16, 16, 3), 128, np.uint8)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def png_to_jpeg(rgb: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", **kw)
    return buf.getvalue()


def blocks(width: int, height: int) -> np.ndarray:
    """An image of 2x2 blocks of one colour each, distinct per block."""
    ys, xs = np.mgrid[0:height, 0:width] // 2
    return np.stack([xs % 256, ys % 256, (xs * 7 + ys * 3) % 256], axis=2).astype(np.uint8)


class TestReducedDecoding:
    def test_pixel_caps_by_format(self):
        with pytest.raises(ImageError, match="over the limit of 160000000"):
            decode_image(jpeg_with_size(13_000, 13_000))  # over the JPEG cap
        assert ImageLimits().pixel_cap("JPEG") > ImageLimits().pixel_cap("PNG")

    def test_reduction_is_a_box_average_by_the_smallest_integer_factor(self):
        rgb = blocks(300, 200)
        d = decode_image(png_bytes(rgb), ImageLimits(max_decode_pixels=7_000))
        assert (d.width, d.height, d.scale, d.rgb.shape) == (300, 200, 3, (67, 100, 3))
        np.testing.assert_array_equal(d.rgb, np.asarray(Image.fromarray(rgb).reduce(3)))

    def test_an_image_within_the_budget_is_decoded_at_full_size(self):
        rgb = blocks(300, 200)
        d = decode_image(png_bytes(rgb), ImageLimits(max_decode_pixels=60_000))
        assert d.scale == 1
        np.testing.assert_array_equal(d.rgb, rgb)

    def test_jpeg_is_reduced_while_decoding_and_stays_upright(self):
        exif = Image.Exif()
        exif[0x0112] = 6  # stored on its side: rotate 90° clockwise to view
        data = png_to_jpeg(blocks(400, 240), quality=95, exif=exif.tobytes())
        d = decode_image(data, ImageLimits(max_decode_pixels=10_000))
        assert (d.width, d.height, d.scale) == (240, 400, 4)
        assert d.rgb.shape == (100, 60, 3) and d.transposed


class TestBoxesOnAReducedImage:
    @pytest.fixture
    def decoded(self):
        return decode_image(png_bytes(blocks(400, 300)), ImageLimits(max_decode_pixels=30_000))

    def test_pixel_boxes_are_in_the_image_own_pixels(self, decoded):
        assert (decoded.width, decoded.height, decoded.scale) == (400, 300, 2)
        settings = ViewSettings(convention="pixel", max_zoom=1.0)  # the crop as it is
        r = run_view_tool("magnifier", {"bbox": [100, 60, 301, 240]}, decoded, settings)
        assert r.ok and r.box == [100, 60, 302, 240]  # widened to whole reduced pixels
        assert "pixels of the 400x300 image" in r.message
        view = decode_image(r.view).rgb
        np.testing.assert_array_equal(view, decoded.rgb[30:120, 50:151])

    def test_relative_boxes_map_to_the_same_region(self, decoded):
        rel = run_view_tool("magnifier", {"bbox": [250, 200, 750, 800]}, decoded)
        assert rel.box == [100, 60, 300, 240]

    def test_measurement_tools_report_the_image_own_pixels(self, decoded):
        r = run_view_tool("sharpness", {"bbox": [0, 0, 500, 500]}, decoded, enabled=["sharpness"])
        assert r.ok and r.box == [0, 0, 200, 150]
        assert "400x300 image, decoded at 1/2 scale" in r.message

    def test_magnify_keeps_the_minimum_region_in_full_pixels(self, decoded):
        view, box = magnify(decoded.rgb, [0, 0, 28, 28], "pixel", scale=2, size=(400, 300))
        assert box == (0, 0, 28, 28) and view.shape[:2] == (14, 14)


def assess(image: bytes, **ctx) -> Assessment:
    model = ClassicChatModel(bbox_convention=ctx.get("bbox_convention", "rel1000"))
    out = asyncio.run(graph.ainvoke({"image": image}, context=Context(model=model, **ctx)))
    return Assessment.model_validate(out["assessment"])


@pytest.mark.parametrize("convention", ["rel1000", "pixel"])
def test_an_assessment_reports_the_same_regions_whatever_the_decode_scale(convention):
    data = read_image_bytes(REPO / "examples" / "astronaut_pristine.jpg")
    whole = decode_image(data)
    reduced = ImageLimits(max_decode_pixels=whole.width * whole.height // 4)
    full = assess(data, bbox_convention=convention, report_regions=True)
    half = assess(data, bbox_convention=convention, report_regions=True, image_limits=reduced)
    assert decode_image(data, reduced).scale == 2
    assert [s.tool for s in full.steps] == ["magnifier"] and full.regions
    assert [s.box for s in half.steps] == [s.box for s in full.steps]
    assert half.regions == full.regions


def test_the_decode_cache_holds_a_bounded_number_of_bytes():
    from tooliqa.tools.image_io import _DecodeCache

    images = [png_bytes(np.full((100, 100, 3), v, np.uint8)) for v in (1, 2, 3)]
    cache = _DecodeCache(size=8, max_bytes=2 * 100 * 100 * 3)
    for data in images:
        cache.get(data, ImageLimits())
    assert len(cache._items) == 2  # the oldest went to keep within the byte budget
