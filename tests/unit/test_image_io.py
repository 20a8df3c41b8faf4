"""Image decoding: every awkward input converts correctly or fails with a clear error."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tooliqa.tools import (
    ImageError,
    ImageLimits,
    decode_image,
    encode_image,
    fit_within_pixels,
    model_image,
    read_image_bytes,
)


def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def rgb_image(w: int = 64, h: int = 48) -> Image.Image:
    ys, xs = np.mgrid[0:h, 0:w]
    arr = np.stack([xs * 4 % 256, ys * 5 % 256, (xs + ys) % 256], axis=2).astype(np.uint8)
    return Image.fromarray(arr)


class TestErrors:
    def test_zero_bytes(self):
        with pytest.raises(ImageError, match="empty"):
            decode_image(b"")

    def test_not_an_image(self):
        with pytest.raises(ImageError, match="not a recognised image format"):
            decode_image(b"%PDF-1.4 this is not an image at all")

    def test_truncated_jpeg(self):
        data = encode(rgb_image(256, 256), "JPEG", quality=90)
        with pytest.raises(ImageError, match="truncated or corrupt"):
            decode_image(data[: len(data) // 2])

    @pytest.mark.parametrize("side", [9000, 20000])
    def test_decompression_bomb_refused_before_decoding(self, side):
        # A small file whose header claims side x side pixels (81 M: over our limit;
        # 400 M: over Pillow's own hard limit too).
        bomb = encode(Image.new("1", (side, side)), "PNG")
        assert len(bomb) < 2_000_000
        with pytest.raises(ImageError, match=r"over the limit.*decompression bomb"):
            decode_image(bomb, ImageLimits(max_pixels=50_000_000))

    def test_byte_limit(self, tmp_path):
        path = tmp_path / "big.png"
        path.write_bytes(encode(rgb_image()))
        with pytest.raises(ImageError, match="over the limit"):
            read_image_bytes(path, ImageLimits(max_bytes=100))

    def test_missing_file_and_directory(self, tmp_path):
        with pytest.raises(ImageError, match="no such file"):
            read_image_bytes(tmp_path / "nope.png")
        with pytest.raises(ImageError, match="directory"):
            read_image_bytes(tmp_path)

    def test_too_small(self):
        with pytest.raises(ImageError, match="at least"):
            decode_image(encode(rgb_image(4, 4)))


class TestConversions:
    def test_rgb_png_round_trip(self):
        img = rgb_image()
        out = decode_image(encode(img))
        np.testing.assert_array_equal(out.rgb, np.asarray(img))
        assert out.format == "PNG" and out.mode == "RGB" and not out.transposed
        assert out.rgb.dtype == np.uint8 and out.rgb.flags.c_contiguous

    def test_greyscale_becomes_three_equal_channels(self):
        grey = Image.fromarray(np.arange(64 * 48, dtype=np.uint8).reshape(48, 64))
        out = decode_image(encode(grey)).rgb
        assert out.shape == (48, 64, 3)
        np.testing.assert_array_equal(out[..., 0], out[..., 2])
        np.testing.assert_array_equal(out[..., 1], np.asarray(grey))

    def test_sixteen_bit_is_scaled_to_eight(self):
        arr = np.array([[0, 257 * 128, 65535, 257 * 10]] * 10, dtype=np.uint16)
        arr = np.tile(arr, (1, 4))
        out = decode_image(encode(Image.fromarray(arr))).rgb
        assert out[0, :4, 0].tolist() == [0, 128, 255, 10]

    def test_palette(self):
        pal = rgb_image().quantize(colors=16)
        assert pal.mode == "P"
        out = decode_image(encode(pal)).rgb
        np.testing.assert_array_equal(out, np.asarray(pal.convert("RGB")))

    def test_alpha_is_composited_over_white(self):
        rgba = np.zeros((16, 16, 4), dtype=np.uint8)
        rgba[..., 0] = 200
        rgba[:8, :, 3] = 255  # top half opaque red-ish, bottom half transparent
        out = decode_image(encode(Image.fromarray(rgba, "RGBA"))).rgb
        assert out[0, 0].tolist() == [200, 0, 0]
        assert out[15, 15].tolist() == [255, 255, 255]

    def test_cmyk_jpeg(self):
        cmyk = Image.new("CMYK", (32, 32), (0, 255, 255, 0))  # pure red in CMYK
        out = decode_image(encode(cmyk, "JPEG", quality=95)).rgb
        r, g, b = out[16, 16].tolist()
        assert r > 220 and g < 40 and b < 40

    def test_exif_rotation_is_applied(self):
        img = Image.new("RGB", (60, 30), (0, 0, 255))
        img.paste((255, 0, 0), (0, 0, 10, 10))  # red marker at top-left
        exif = Image.Exif()
        exif[0x0112] = 6  # rotate 90 degrees clockwise for display
        out = decode_image(encode(img, "JPEG", quality=95, exif=exif.tobytes()))
        assert out.transposed
        assert out.rgb.shape == (60, 30, 3)
        assert out.rgb[2, 27, 0] > 200  # marker now at top-right

    def test_first_frame_of_animation(self):
        frames = [Image.new("RGB", (16, 16), c) for c in [(255, 0, 0), (0, 255, 0)]]
        buf = io.BytesIO()
        frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
        out = decode_image(buf.getvalue()).rgb
        assert out[8, 8, 0] > 200 and out[8, 8, 1] < 50


class TestModelImage:
    def test_fit_within_pixels(self):
        assert fit_within_pixels(100, 50, 10_000) == (100, 50)
        w, h = fit_within_pixels(4000, 3000, 1_003_520)
        assert w * h <= 1_003_520 and abs(w / h - 4 / 3) < 0.01

    def test_small_jpeg_passes_through_unchanged(self):
        data = encode(rgb_image(), "JPEG", quality=90)
        out, mime, info = model_image(data, decode_image(data), 1_000_000)
        assert out is data and mime == "image/jpeg" and info["reencoded"] is False

    def test_large_image_is_reencoded_within_budget(self):
        data = encode(rgb_image(400, 300), "JPEG")
        out, mime, info = model_image(data, decode_image(data), 20_000)
        assert mime == "image/png" and info["reencoded"]
        w, h = Image.open(io.BytesIO(out)).size
        assert w * h <= 20_000 and [w, h] == info["size"]

    def test_non_passthrough_formats_are_reencoded(self):
        data = encode(rgb_image(), "BMP")
        out, mime, _ = model_image(data, decode_image(data), 10**6)
        assert mime == "image/png" and out.startswith(b"\x89PNG")

    def test_encode_image_formats(self):
        arr = np.asarray(rgb_image())
        assert encode_image(arr, fmt="JPEG").startswith(b"\xff\xd8")
        with pytest.raises(ValueError, match="unsupported"):
            encode_image(arr, fmt="TGA")
