"""bot/images.py: probing untrusted image bytes and fitting JPEGs under a size limit."""

from __future__ import annotations

import io
import os
import random
import struct
import zlib

import pytest
from PIL import Image

from bot import images
from bot.images import ImageInfo, InvalidImage, fit_jpeg, probe_image


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def noise(width: int, height: int) -> Image.Image:
    """Incompressible pixels: the worst case for fitting under a byte limit."""
    return Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` with almost no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


def test_probe_jpeg() -> None:
    data = encode(Image.new("RGB", (64, 32), (200, 10, 10)), "JPEG")
    assert probe_image(data) == ImageInfo(format="JPEG", width=64, height=32)


def test_probe_png_with_alpha() -> None:
    data = encode(Image.new("RGBA", (17, 33), (0, 0, 0, 0)), "PNG")
    assert probe_image(data) == ImageInfo(format="PNG", width=17, height=33)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"hello, I am not an image", id="text"),
        pytest.param(b"\xff\xd8\xff\xe0 broken jpeg", id="jpeg-magic-garbage"),
        pytest.param(b"<html><body>502 Bad Gateway</body></html>", id="html"),
    ],
)
def test_probe_rejects_garbage(data: bytes) -> None:
    with pytest.raises(InvalidImage):
        probe_image(data)


def test_probe_rejects_truncated_jpeg() -> None:
    data = encode(noise(128, 128), "JPEG", quality=90)
    with pytest.raises(InvalidImage, match="corrupt"):
        probe_image(data[: len(data) // 2])


@pytest.mark.parametrize("cut", [0.5, 0.99], ids=["half", "last-percent"])
def test_probe_of_a_large_jpeg_reports_full_size_and_catches_truncation(cut: float) -> None:
    # probe_image decodes JPEGs at 1/8 scale: the size must still be the real one,
    # and a stream cut anywhere must still fail.
    data = encode(noise(1024, 1024), "JPEG", quality=90)
    assert probe_image(data) == ImageInfo(format="JPEG", width=1024, height=1024)
    with pytest.raises(InvalidImage, match="corrupt"):
        probe_image(data[: int(len(data) * cut)])


def test_probe_judges_damaged_jpegs_like_a_full_size_decode() -> None:
    # The reduced-scale decode must refuse exactly what a full-size decode refuses.
    pixels = random.Random(7).randbytes(512 * 512 * 3)
    original = encode(Image.frombytes("RGB", (512, 512), pixels), "JPEG", quality=90)
    refused = 0
    for offset in range(1000, len(original) - 400, len(original) // 25):
        garbled = bytearray(original)
        garbled[offset : offset + 41] = b"\x00\xff" * 20 + b"\xd3"  # bytes, then a stray marker
        for data in (bytes(garbled), original[:offset]):
            try:
                Image.open(io.BytesIO(data)).load()
            except OSError:
                full_size_refuses = True
            else:
                full_size_refuses = False
            try:
                probe_image(data)
            except InvalidImage:
                probe_refuses = True
            else:
                probe_refuses = False
            assert probe_refuses == full_size_refuses, offset
            refused += probe_refuses
    assert refused > 0  # the damage is real, not a no-op


@pytest.mark.parametrize("mode", ["L", "CMYK"])
def test_probe_accepts_greyscale_and_cmyk_jpegs(mode: str) -> None:
    data = encode(Image.new(mode, (40, 24)), "JPEG")
    assert probe_image(data) == ImageInfo(format="JPEG", width=40, height=24)


def test_probe_rejects_truncated_png() -> None:
    data = encode(noise(64, 64), "PNG")
    with pytest.raises(InvalidImage):
        probe_image(data[: len(data) // 2])


def test_probe_rejects_unsupported_format() -> None:
    data = encode(Image.new("RGB", (8, 8)), "GIF")
    with pytest.raises(InvalidImage, match="unsupported image format GIF"):
        probe_image(data)


def test_probe_rejects_oversized_header_before_decoding() -> None:
    # Just above MAX_PIXELS: rejected by our own check from the header alone.
    side = int(images.MAX_PIXELS**0.5) + 1
    with pytest.raises(InvalidImage, match="out of bounds"):
        probe_image(png_header_only(side, side))


def test_probe_rejects_decompression_bomb() -> None:
    # Far beyond Pillow's own limit: Pillow refuses to open it at all.
    with pytest.raises(InvalidImage, match=r"too large|out of bounds"):
        probe_image(png_header_only(100_000, 100_000))


def test_invalid_image_is_a_value_error() -> None:
    assert issubclass(InvalidImage, ValueError)


def test_fit_jpeg_shrinks_a_large_png_under_the_limit() -> None:
    source = encode(noise(768, 512), "PNG")
    limit = 120_000
    assert len(source) > limit * 5

    fitted = fit_jpeg(source, limit)

    assert len(fitted) <= limit
    info = probe_image(fitted)
    assert info.format == "JPEG"
    assert info.width <= 768
    # The aspect ratio survives any downscaling.
    assert info.width / info.height == pytest.approx(768 / 512, rel=0.05)


def test_fit_jpeg_prefers_quality_over_downscaling_when_possible() -> None:
    gradient = Image.linear_gradient("L").resize((512, 512)).convert("RGB")
    source = encode(gradient, "PNG")

    fitted = fit_jpeg(source, 1_000_000)

    assert probe_image(fitted) == ImageInfo(format="JPEG", width=512, height=512)


def test_fit_jpeg_downscales_when_quality_alone_is_not_enough() -> None:
    source = encode(noise(512, 512), "PNG")

    fitted = fit_jpeg(source, 8_000)

    assert len(fitted) <= 8_000
    info = probe_image(fitted)
    assert info.width < 512
    assert info.width == info.height


def test_fit_jpeg_returns_a_fitting_jpeg_unchanged() -> None:
    source = encode(Image.new("RGB", (64, 64), (1, 2, 3)), "JPEG")
    assert fit_jpeg(source, len(source)) is source


def test_fit_jpeg_flattens_transparency_onto_white() -> None:
    source = encode(Image.new("RGBA", (32, 32), (0, 0, 0, 0)), "PNG")

    fitted = fit_jpeg(source, 100_000)

    with Image.open(io.BytesIO(fitted)) as image:
        assert image.format == "JPEG"
        assert image.mode == "RGB"
        red, green, blue = image.getpixel((16, 16))  # type: ignore[misc]
        assert min(red, green, blue) >= 250


def test_fit_jpeg_converts_palette_and_greyscale_images() -> None:
    for mode in ("P", "L", "1"):
        source = encode(Image.new(mode, (40, 20)), "PNG")
        assert probe_image(fit_jpeg(source, 100_000)).format == "JPEG"


def test_fit_jpeg_raises_when_impossible() -> None:
    source = encode(noise(64, 64), "PNG")
    with pytest.raises(InvalidImage, match="cannot be made to fit"):
        fit_jpeg(source, 10)


@pytest.mark.parametrize("max_bytes", [0, -1])
def test_fit_jpeg_rejects_a_non_positive_limit(max_bytes: int) -> None:
    source = encode(Image.new("RGB", (8, 8)), "PNG")
    with pytest.raises(InvalidImage, match="positive"):
        fit_jpeg(source, max_bytes)


def test_fit_jpeg_rejects_garbage() -> None:
    with pytest.raises(InvalidImage):
        fit_jpeg(b"not an image at all", 100_000)
