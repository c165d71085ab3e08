"""Image checks and re-encoding with Pillow: :func:`probe_image` rejects what is not a whole,
sane image (sizes read before any pixel, against decompression bombs); :func:`fit_jpeg` makes
an image fit an upload limit. CPU-bound and synchronous: callers use :func:`asyncio.to_thread`.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Final

from PIL import Image, UnidentifiedImageError

__all__ = [
    "MAX_PIXELS",
    "SUPPORTED_FORMATS",
    "ImageInfo",
    "InvalidImage",
    "fit_jpeg",
    "probe_image",
]

#: Formats the Segmind API returns and the bot passes on to Discord.
SUPPORTED_FORMATS: Final = frozenset({"JPEG", "PNG"})

#: Largest image (in pixels) we decode: 16 times 1024x1024, far below Pillow's own bomb
#: threshold, so an oversized header is rejected before Pillow allocates anything.
MAX_PIXELS: Final = 16 * 1024 * 1024

#: JPEG qualities tried, best first; the search picks the best that fits.
_QUALITIES: Final = (92, 85, 75, 65, 55, 45, 35, 25)
#: Each downscaling step shrinks the sides by at least this factor.
_DOWNSCALE: Final = 0.75
_MIN_SIDE: Final = 16


class InvalidImage(ValueError):
    """The bytes are not a usable image (corrupt, unsupported, too large, …)."""


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What :func:`probe_image` learned about an image."""

    format: str
    width: int
    height: int


def _open_checked(data: bytes) -> Image.Image:
    """Open ``data`` lazily and check its header: format and pixel count."""
    if not data:
        raise InvalidImage("empty image data")
    try:
        # Image.open reads only the header. Pillow's own bomb check raises past
        # twice its limit; our MAX_PIXELS check below is far stricter.
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as error:
        raise InvalidImage(f"image is too large to decode ({error})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise InvalidImage("data is not a recognisable image") from None
    if image.format not in SUPPORTED_FORMATS:
        fmt = image.format or "unknown"
        image.close()
        raise InvalidImage(f"unsupported image format {fmt}")
    width, height = image.size
    if width <= 0 or height <= 0 or width * height > MAX_PIXELS:
        image.close()
        raise InvalidImage(f"image dimensions {width}x{height} are out of bounds")
    return image


def _decode(data: bytes) -> Image.Image:
    """Fully decode ``data`` after the header checks; the caller closes the image."""
    image = _open_checked(data)
    _load(image)
    return image


def _load(image: Image.Image) -> None:
    """Decode the pixels; :class:`InvalidImage` (and the image closed) if they are corrupt."""
    try:
        image.load()
    except Exception as error:  # noqa: BLE001 - see below
        # Pillow raises a zoo of types (OSError, SyntaxError, struct.error,
        # zlib.error, IndexError, …) for corrupt pixel data; all mean the same.
        image.close()
        raise InvalidImage(f"image data is corrupt ({type(error).__name__})") from None


def probe_image(data: bytes) -> ImageInfo:
    """Decode ``data`` completely and return its format and size.

    Raises :class:`InvalidImage` when the bytes are empty, not an image, an
    unsupported format (only JPEG and PNG), truncated or corrupt, or larger than
    :data:`MAX_PIXELS`.
    """
    image = _open_checked(data)
    fmt = str(image.format)
    width, height = image.size
    if fmt == "JPEG":
        # At 1/8 scale libjpeg still reads every block, so a corrupt stream fails as at full
        # size, while the inverse DCT and colour conversion run on 1/64 of the pixels.
        image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
    _load(image)
    image.close()
    return ImageInfo(format=fmt, width=width, height=height)


def _to_rgb(image: Image.Image) -> Image.Image:
    """Flatten transparency onto white and convert to RGB for JPEG."""
    if image.mode == "RGB":
        return image
    if image.mode in {"RGBA", "LA", "PA"} or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _encode_jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


def _best_fit(image: Image.Image, max_bytes: int) -> tuple[bytes | None, int]:
    """The highest-quality encoding of ``image`` that fits (or None), and the size of the
    lowest; JPEG size grows with quality, so :data:`_QUALITIES` is searched by halves."""
    lowest = _encode_jpeg(image, _QUALITIES[-1])
    if len(lowest) > max_bytes:
        return None, len(lowest)
    best = lowest
    low, high = 0, len(_QUALITIES) - 2  # indexes still worth trying, best first
    while low <= high:
        middle = (low + high) // 2
        encoded = _encode_jpeg(image, _QUALITIES[middle])
        if len(encoded) <= max_bytes:
            best = encoded
            high = middle - 1
        else:
            low = middle + 1
    return best, len(lowest)


def fit_jpeg(data: bytes, max_bytes: int) -> bytes:
    """Return ``data`` as a JPEG of at most ``max_bytes`` bytes.

    A JPEG that already fits is returned unchanged (re-encoding would only lose
    quality). Anything else is re-encoded at the best quality that fits and,
    when even the lowest quality is too large, downscaled (keeping the aspect
    ratio) until it fits. Raises :class:`InvalidImage` when ``data`` is not a
    usable image or when nothing down to a 16-pixel side fits.
    """
    if max_bytes <= 0:
        raise InvalidImage(f"max_bytes must be positive (got {max_bytes})")
    source = _decode(data)
    try:
        if source.format == "JPEG" and len(data) <= max_bytes:
            return data
        image = _to_rgb(source)
        while True:
            encoded, lowest = _best_fit(image, max_bytes)
            if encoded is not None:
                return encoded
            width, height = image.size
            if min(width, height) <= _MIN_SIDE:
                break
            # Size scales roughly with the pixel count: jump close to the
            # target rather than creeping down, but always shrink by 25 %.
            scale = min(_DOWNSCALE, 0.95 * math.sqrt(max_bytes / lowest))
            scale = max(scale, _MIN_SIDE / min(width, height))
            size = (max(_MIN_SIDE, round(width * scale)), max(_MIN_SIDE, round(height * scale)))
            image = image.resize(size, Image.Resampling.LANCZOS)
    finally:
        source.close()
    raise InvalidImage(f"image cannot be made to fit in {max_bytes} bytes")
