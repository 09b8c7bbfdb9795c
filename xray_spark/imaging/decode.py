"""Decode, validate, convert and resize radiographs: pure numpy and OpenCV, no Spark, no TensorFlow.

The one entry point the pipeline uses is :func:`load_training_image`: raw file bytes in,
an 8-bit grayscale square image of the configured side out, or an
:class:`~xray_spark.errors.ImageError` whose ``reason`` becomes the quarantine code.

The format is recognised by content, not by file name (a JPEG saved as ``.png`` decodes
as the JPEG it is). Supported: PNG (8/16-bit, gray, RGB, RGBA), JPEG and DICOM in every
transfer syntax a PACS exports (:mod:`xray_spark.imaging.dicom_pixels`).
"""

from __future__ import annotations

import dataclasses
import io
import struct
from typing import NamedTuple

import cv2
import numpy as np

from xray_spark.errors import ImageError
from xray_spark.imaging import dicom_pixels as dicom

# Quarantine reasons raised here (all of them, with their meaning: xray_spark.imaging.reasons).
from xray_spark.imaging.reasons import BLANK, EMPTY, TOO_LARGE, TOO_SMALL, TRUNCATED, UNDECODABLE

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
MIB = 1 << 20


@dataclasses.dataclass(frozen=True)
class ImageLimits:
    """What an image may cost before any decoder runs (``image.*`` in the configuration).

    ``max_decoded_bytes`` counts frames x rows x columns x samples x bytes per sample, the
    array a decoder would allocate: a 777 KB PNG can claim 10000 x 10000 x 4 x 16 bits
    (763 MiB). The default, 128 MiB, admits a 4300 x 4300 16-bit colour plate (106 MiB) and
    keeps two decoding workers (with their float and resize buffers) under 2 GiB.
    """

    max_pixels: int = 100_000_000
    max_decoded_bytes: int = 128 * MIB
    min_side: int = 64

    def check(self, kind: str, width: int, height: int, channels: int, sample_bytes: int, frames: int = 1) -> None:
        """Raise the quarantine error for a header that is too small or would decode too large."""
        shape = f"{width}x{height}" + (f" x {frames} frames" if frames > 1 else "")
        if width == 0 or height == 0:
            raise ImageError(UNDECODABLE, f"{kind} header gives an empty size {width}x{height}")
        if width * height > self.max_pixels:
            raise ImageError(
                TOO_LARGE,
                f"{kind} header claims {width}x{height} = {width * height:,} pixels, "
                f"over the limit image.max_pixels={self.max_pixels:,}",
            )
        decoded = frames * width * height * channels * sample_bytes
        if decoded > self.max_decoded_bytes:
            raise ImageError(
                TOO_LARGE,
                f"{kind} of {shape}, {channels} sample(s) of {sample_bytes} byte(s) would decode to "
                f"{decoded / MIB:,.0f} MiB, over image.max_decoded_bytes={self.max_decoded_bytes:,}",
            )
        if min(width, height) < self.min_side:
            raise ImageError(
                TOO_SMALL, f"{kind} of {width}x{height} is smaller than image.min_side={self.min_side} pixels"
            )


def sniff_format(data: bytes) -> str:
    """``"png"``, ``"jpeg"``, ``"dicom"`` or ``"unknown"`` from the leading bytes."""
    if data.startswith(PNG_SIGNATURE):
        return "png"
    if data.startswith(JPEG_SIGNATURE):
        return "jpeg"
    if len(data) >= 132 and data[128:132] == b"DICM":
        return "dicom"
    return "unknown"


def png_header(data: bytes) -> tuple[int, int, int, int]:
    """(width, height, bit depth, colour type) from a PNG's IHDR chunk."""
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise ImageError(TRUNCATED, "PNG file ends before its IHDR header")
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    return width, height, depth, colour


def jpeg_size(data: bytes) -> tuple[int, int, int, int]:
    """(width, height, components, bits per sample) from a JPEG's start-of-frame marker."""
    pos = 2
    n = len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            pos += 1
            continue
        marker = data[pos + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            pos += 1 if marker == 0xFF else 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if pos + 10 > n:
                break
            precision, height, width, components = struct.unpack(">BHHB", data[pos + 4 : pos + 10])
            return width, height, components, precision
        pos += 2 + length
    raise ImageError(TRUNCATED, "JPEG file ends before its frame header")


#: Samples per pixel that OpenCV decodes a PNG colour type into (palette -> BGR, gray+alpha -> BGRA).
PNG_DECODED_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 4, 6: 4}


def check_image_bytes(data: bytes, limits: ImageLimits) -> str:
    """Reject empty, truncated, unknown, too small and too costly files before any decoder sees them.

    Messages describe the file (its size, its header's claims), never echo its content.
    """
    if not data:
        raise ImageError(EMPTY, "the file is empty (0 bytes)")
    kind = sniff_format(data)
    if kind == "png":
        width, height, depth, colour = png_header(data)
        if b"IEND" not in data[-64:]:
            raise ImageError(TRUNCATED, f"PNG of {width}x{height} has no IEND chunk: the file is cut short")
        limits.check("PNG", width, height, PNG_DECODED_CHANNELS.get(colour, 4), 2 if depth > 8 else 1)
    elif kind == "jpeg":
        width, height, components, precision = jpeg_size(data)
        if b"\xff\xd9" not in data[-64:]:
            raise ImageError(TRUNCATED, f"JPEG of {width}x{height} has no end-of-image marker: the file is cut short")
        limits.check("JPEG", width, height, max(components, 1), 2 if precision > 8 else 1)
    elif kind == "unknown":
        raise ImageError(UNDECODABLE, f"not a PNG, JPEG or DICOM image ({len(data):,} bytes, no known signature)")
    return kind


class Decoded(NamedTuple):
    image: np.ndarray
    converted: str  # what converting it to 8-bit gray involves: ``rgba``, ``rgb``, ``16bit`` or ``""``
    pixel_sha256: str  # DICOM: the SHA-256 of its Pixel Data as stored; ``""`` for PNG and JPEG
    burned_in: bool = False  # DICOM: the header says text is burnt into the pixels (Burned In Annotation YES)


def decode(data: bytes, limits: ImageLimits) -> Decoded:
    """The image, what converting it to 8-bit gray involves (``rgba``, ``rgb``, ``16bit`` or ``""``), for
    DICOM the SHA-256 of its Pixel Data as stored (``""`` for PNG and JPEG), and whether its header admits to
    burnt-in text.

    PNG and JPEG come back as stored (uint8 or uint16, gray, BGR or BGRA); DICOM comes back
    already as its viewer shows it, 8-bit gray, with the note saying what its pixels were.
    """
    kind = check_image_bytes(data, limits)
    if kind == "dicom":
        return _decode_dicom(data, limits)
    array = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None or array.size == 0:
        raise ImageError(UNDECODABLE, f"the {kind.upper()} decoder rejected the file's data")
    return Decoded(array, _conversion(array), "")


def display_image(data: bytes, limits: ImageLimits | None = None) -> np.ndarray:
    """A film's file bytes as the store's images are made from them, 8-bit gray at full size (no resize)."""
    return to_gray8(decode(data, limits or ImageLimits())[0])


def _conversion(array: np.ndarray) -> str:
    if array.ndim == 3 and array.shape[2] == 4:
        return "rgba"
    if array.ndim == 3 and array.shape[2] == 3:
        return "rgb"
    return f"{array.dtype.itemsize * 8}bit" if array.dtype != np.uint8 else ""


def _decode_dicom(data: bytes, limits: ImageLimits) -> Decoded:
    """A DICOM film as its viewer shows it (8-bit gray): see :mod:`xray_spark.imaging.dicom_pixels`."""
    dicom.check_inflated_size(io.BytesIO(data), limits.max_decoded_bytes + dicom.HEADER_ALLOWANCE)
    try:
        header = dicom.read_dataset(data, pixels=False)
        rows, cols = int(header.Rows), int(header.Columns)
        frames = int(getattr(header, "NumberOfFrames", 1) or 1)
        samples = int(getattr(header, "SamplesPerPixel", 1) or 1)
        sample_bytes = max(1, (int(getattr(header, "BitsAllocated", 16) or 16) + 7) // 8)
    except Exception as exc:  # pydicom raises many types for a bad header
        raise ImageError(UNDECODABLE, f"DICOM header could not be read ({type(exc).__name__})") from None
    limits.check("DICOM", cols, rows, samples, sample_bytes, frames)
    try:
        ds = dicom.read_dataset(data, pixels=True)
    except Exception as exc:
        raise ImageError(UNDECODABLE, f"DICOM file could not be read ({type(exc).__name__})") from None
    if "PixelData" not in ds:
        raise ImageError(UNDECODABLE, "the DICOM object has no pixel data (a report, a presentation state, ...)")
    try:
        values, low, high, mask = dicom.display_values(ds)
        if values.dtype.kind in "iu" and (low, high) == (0.0, 255.0):
            image = values.astype(np.uint8)  # 8-bit data as stored, as an 8-bit PNG is
        else:
            image = scale_to_gray8(values, low, high)
        if mask is not None:
            image[mask] = 0
    except ImageError:
        raise
    except Exception as exc:  # an attribute the LUTs cannot use, a sample type OpenCV refuses
        raise ImageError(UNDECODABLE, f"DICOM pixels could not be displayed ({type(exc).__name__})") from None
    converted = "rgb" if samples > 1 else ("16bit" if sample_bytes > 1 else "")
    burned_in = str(ds.get("BurnedInAnnotation", "")).strip().upper() == "YES"
    return Decoded(image, converted, dicom.pixel_digest(ds), burned_in)


def scale_to_gray8(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """``low``..``high`` mapped linearly onto 0..255 (rounded, clipped); all 0 when the range is empty."""
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    # float32 (4 bytes a pixel, not 8): exact for any 16-bit value, half the peak memory.
    scaled = (values.astype(np.float32) - np.float32(low)) * np.float32(255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def to_gray8(image: np.ndarray) -> np.ndarray:
    """8-bit grayscale from any decoded image.

    Colour images (BGR/BGRA, as OpenCV returns them) are converted with the ITU-R 601 luma
    weights, the alpha channel dropped. Images deeper than 8 bits are scaled linearly from
    their own minimum and maximum to 0..255: a 12-bit radiograph stored in 16 bits keeps its
    whole contrast instead of being clipped or crushed into the bottom 16 grey levels.
    """
    if image.ndim == 3:
        channels = image.shape[2]
        if channels == 1:
            image = image[:, :, 0]
        elif channels == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        elif channels == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
        else:
            raise ImageError(UNDECODABLE, f"an image with {channels} channels")
    elif image.ndim != 2:
        raise ImageError(UNDECODABLE, f"an image of {image.ndim} dimensions")
    if image.dtype == np.uint8:
        return np.ascontiguousarray(image)
    return scale_to_gray8(image, float(image.min()), float(image.max()))


def square_resize(image: np.ndarray, size: int) -> np.ndarray:
    """Pad a non-square image with black to a square around its centre, then resize to ``size``.

    Padding, not stretching, keeps the proportions of heart and lungs. NIH images are
    square already, so for them this is a plain resize (area interpolation when shrinking).
    """
    height, width = image.shape[:2]
    if height != width:
        side = max(height, width)
        top = (side - height) // 2
        left = (side - width) // 2
        image = cv2.copyMakeBorder(
            image, top, side - height - top, left, side - width - left, cv2.BORDER_CONSTANT, value=0
        )
    if image.shape[0] == size:
        return np.ascontiguousarray(image)
    interpolation = cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interpolation)


def load_film(data: bytes, limits: ImageLimits | None = None) -> tuple[np.ndarray, dict[str, object]]:
    """File bytes -> (the film as 8-bit gray at its own size, facts about the source).

    The facts say what was converted: ``format``, ``source_shape``, ``source_dtype``,
    ``converted`` (``"rgba"``, ``"rgb"``, ``"16bit"`` or ``""``), ``pixel_sha256`` and ``burned_in``. A film of one
    flat value (a black or white frame: nothing a reader or a model can use) is a :data:`BLANK` error.
    """
    raw, converted, pixel_sha256, burned_in = decode(data, limits or ImageLimits())
    gray = to_gray8(raw)
    if gray.size and int(gray.min()) == int(gray.max()):
        raise ImageError(BLANK, f"every pixel of the {raw.shape[1]}x{raw.shape[0]} image has the same value")
    facts: dict[str, object] = {
        "format": sniff_format(data),
        "source_shape": tuple(int(d) for d in raw.shape),
        "source_dtype": str(raw.dtype),
        "converted": converted,
        "pixel_sha256": pixel_sha256,
        "burned_in": burned_in,
    }
    return gray, facts


def load_training_image(
    data: bytes, size: int, limits: ImageLimits | None = None
) -> tuple[np.ndarray, dict[str, object]]:
    """File bytes -> (``size`` x ``size`` uint8 image, facts about the source: see :func:`load_film`)."""
    gray, facts = load_film(data, limits)
    return square_resize(gray, size), facts


def display_jpeg(gray: np.ndarray, max_side: int, quality: int) -> bytes:
    """The film as a reader's display picture: its proportions kept, at most ``max_side`` on its long side
    (area interpolation when shrinking, never enlarged), JPEG at ``quality``."""
    height, width = gray.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".jpg", gray, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ImageError(UNDECODABLE, "the display picture could not be encoded")
    return encoded.tobytes()
