"""Decode, validate, convert and resize radiographs: pure numpy and OpenCV, no Spark, no TensorFlow.

The one entry point the pipeline uses is :func:`load_training_image`: raw file bytes in,
an 8-bit grayscale square image of the configured side out, or an
:class:`~xray_spark.errors.ImageError` whose ``reason`` becomes the quarantine code.

The format is recognised by content, not by file name (a JPEG saved as ``.png`` decodes
as the JPEG it is). Supported: PNG (8/16-bit, gray, RGB, RGBA), JPEG and, when pydicom is
installed, uncompressed DICOM.
"""

from __future__ import annotations

import io
import struct

import cv2
import numpy as np

from xray_spark.errors import ImageError

# Quarantine reasons raised here (the full list lives in xray_spark.ingest.REASONS).
EMPTY = "empty_file"
TRUNCATED = "truncated_image"
UNDECODABLE = "undecodable_image"
TOO_LARGE = "image_too_large"

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm")


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


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG's start-of-frame marker."""
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
            if pos + 9 > n:
                break
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        pos += 2 + length
    raise ImageError(TRUNCATED, "JPEG file ends before its frame header")


def check_image_bytes(data: bytes, max_pixels: int) -> str:
    """Reject empty, truncated, unknown and oversized files before any decoder sees them."""
    if not data:
        raise ImageError(EMPTY, "the file is empty (0 bytes)")
    kind = sniff_format(data)
    if kind == "png":
        width, height, _, _ = png_header(data)
        if b"IEND" not in data[-64:]:
            raise ImageError(TRUNCATED, f"PNG of {width}x{height} has no IEND chunk: the file is cut short")
    elif kind == "jpeg":
        width, height = jpeg_size(data)
        if b"\xff\xd9" not in data[-64:]:
            raise ImageError(TRUNCATED, f"JPEG of {width}x{height} has no end-of-image marker: the file is cut short")
    elif kind == "dicom":
        return kind
    else:
        head = data[:8].hex()
        raise ImageError(UNDECODABLE, f"not a PNG, JPEG or DICOM image (first bytes {head})")
    if width == 0 or height == 0:
        raise ImageError(UNDECODABLE, f"{kind.upper()} header gives an empty size {width}x{height}")
    if width * height > max_pixels:
        raise ImageError(
            TOO_LARGE,
            f"{kind.upper()} header claims {width}x{height} = {width * height:,} pixels, "
            f"over the limit image.max_pixels={max_pixels:,}",
        )
    return kind


def decode(data: bytes, max_pixels: int) -> np.ndarray:
    """The image as stored: uint8 or uint16, 2-D (gray) or 3-D (BGR / BGRA)."""
    kind = check_image_bytes(data, max_pixels)
    if kind == "dicom":
        return _decode_dicom(data, max_pixels)
    array = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None or array.size == 0:
        raise ImageError(UNDECODABLE, f"the {kind.upper()} decoder rejected the file's data")
    return array


def _decode_dicom(data: bytes, max_pixels: int) -> np.ndarray:
    try:
        import pydicom
    except ImportError:  # pragma: no cover - pydicom is an install requirement
        raise ImageError(UNDECODABLE, "a DICOM file, and pydicom is not installed") from None
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        rows, cols = int(ds.Rows), int(ds.Columns)
        if rows * cols > max_pixels:
            raise ImageError(TOO_LARGE, f"DICOM of {cols}x{rows} is over image.max_pixels={max_pixels:,}")
        array = ds.pixel_array
    except ImageError:
        raise
    except Exception as exc:  # pydicom raises many types for bad or compressed data
        raise ImageError(UNDECODABLE, f"DICOM pixel data could not be read: {exc}") from None
    if array.ndim == 3 and array.shape[-1] not in (3, 4):
        array = array[0]  # a multi-frame object: keep the first frame
    array = np.asarray(array)
    if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
        array = array.max() - array  # MONOCHROME1 shows low values bright
    return array


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
    values = image.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(image.shape, dtype=np.uint8)
    scaled = (values - low) * (255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


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


def load_training_image(data: bytes, size: int, max_pixels: int) -> tuple[np.ndarray, dict[str, object]]:
    """File bytes -> (``size`` x ``size`` uint8 image, facts about the source).

    The facts say what was converted: ``format``, ``source_shape``, ``source_dtype``,
    ``converted`` (``"rgba"``, ``"rgb"``, ``"16bit"`` or ``""``).
    """
    raw = decode(data, max_pixels)
    converted = ""
    if raw.ndim == 3 and raw.shape[2] == 4:
        converted = "rgba"
    elif raw.ndim == 3 and raw.shape[2] == 3:
        converted = "rgb"
    elif raw.dtype != np.uint8:
        converted = f"{raw.dtype.itemsize * 8}bit"
    gray = to_gray8(raw)
    facts: dict[str, object] = {
        "format": sniff_format(data),
        "source_shape": tuple(int(d) for d in raw.shape),
        "source_dtype": str(raw.dtype),
        "converted": converted,
    }
    return square_resize(gray, size), facts


def encode_png(image: np.ndarray) -> bytes:
    """Lossless PNG bytes of an image (used by the synthetic archive and the tests)."""
    ok, buffer = cv2.imencode(".png", image)
    if not ok:  # pragma: no cover - OpenCV fails only on unsupported dtypes
        raise ValueError(f"could not encode an image of shape {image.shape} and dtype {image.dtype}")
    return buffer.tobytes()
