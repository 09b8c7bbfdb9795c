"""Bad and unusual input files, made on the fly (nothing binary is checked in)."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np

from xray_spark.images import encode_png


def chest_like(size: int = 80, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    base = 200 * np.exp(-((x - 0.5) ** 2 + (y - 0.5) ** 2) / 0.08) + rng.normal(0, 8, (size, size))
    return np.clip(base, 0, 255).astype(np.uint8)


def png_gray8(size: int = 80, seed: int = 0) -> bytes:
    return encode_png(chest_like(size, seed))


def png_rgb(size: int = 80) -> bytes:
    gray = chest_like(size, 1)
    return encode_png(np.dstack([gray, gray, gray]))


def png_rgba(size: int = 80) -> bytes:
    gray = chest_like(size, 2)
    return encode_png(np.dstack([gray, gray, gray, np.full_like(gray, 255)]))


def png_16bit(size: int = 80) -> bytes:
    """A 12-bit radiograph stored in 16 bits (values 0..4095), as hospital exports often are."""
    return encode_png(chest_like(size, 3).astype(np.uint16) * 16)


def jpeg(size: int = 80) -> bytes:
    ok, buf = cv2.imencode(".jpg", chest_like(size, 4))
    assert ok
    return buf.tobytes()


def truncated_png(size: int = 80) -> bytes:
    data = png_gray8(size, 5)
    return data[: len(data) // 2]


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def huge_header_png(width: int = 60_000, height: int = 60_000) -> bytes:
    """A well-formed small PNG whose IHDR claims ``width`` x ``height`` pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


TEXT_AS_PNG = b"this is a text file that someone named .png\n"
