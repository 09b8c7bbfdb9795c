"""A pydicom pixel-data plugin that decodes every JPEG family with imagecodecs.

pydicom 3 decodes uncompressed, deflated and RLE data itself; for the JPEG families it
needs a plugin. The ones it ships with either are GPL (pylibjpeg-libjpeg) or miss what a
PACS exports (GDCM's and Pillow's plugins refuse 12-bit JPEG Extended; Pillow has no JPEG
Lossless or JPEG-LS). imagecodecs (BSD-3-Clause) bundles libjpeg-turbo 3 (8/12-bit
lossy, lossless process 14), CharLS (JPEG-LS) and OpenJPEG (JPEG 2000): :func:`register`
adds it to pydicom's decoders for those transfer syntaxes, and :data:`PLUGIN` names it
so decoding never falls back to another plugin silently.
"""

from __future__ import annotations

import contextlib
from typing import Any

from xray_spark.imaging.transfer_syntaxes import JPEG as _JPEG
from xray_spark.imaging.transfer_syntaxes import JPEG_2000 as _J2K
from xray_spark.imaging.transfer_syntaxes import JPEG_LS as _JPEGLS

PLUGIN = "imagecodecs"

#: The transfer syntaxes this plugin decodes.
SYNTAXES = (*_JPEG, *_JPEGLS, *_J2K)

DECODER_DEPENDENCIES = {syntax: ("imagecodecs>=2024.1",) for syntax in SYNTAXES}


def is_available(syntax: str) -> bool:
    try:
        import imagecodecs
    except ImportError:  # pragma: no cover - a declared dependency
        return False
    if syntax in _JPEG:
        return bool(imagecodecs.JPEG8.available)
    if syntax in _JPEGLS:
        return bool(imagecodecs.JPEGLS.available)
    return syntax in _J2K and bool(imagecodecs.JPEG2K.available)


def _decode_frame(src: bytes, runner: Any) -> bytes:
    """One frame's codestream -> its pixels as bytes, in the layout pydicom then reads."""
    import imagecodecs

    syntax = runner.transfer_syntax
    if syntax in _JPEG:
        try:
            array = imagecodecs.jpeg8_decode(src)
        except Exception:  # lossless predictors libjpeg-turbo does not take: the plain LJPEG decoder
            array = imagecodecs.ljpeg_decode(src)
        if array.ndim == 3 and runner.photometric_interpretation.startswith("YBR"):
            runner.set_option("photometric_interpretation", "RGB")  # libjpeg converted YCbCr to RGB
    elif syntax in _JPEGLS:
        array = imagecodecs.jpegls_decode(src)
    else:
        array = imagecodecs.jpeg2k_decode(src)
        if runner.photometric_interpretation in ("YBR_ICT", "YBR_RCT"):
            runner.set_option("photometric_interpretation", "RGB")
    runner.set_option("planar_configuration", 0)  # the codecs return interleaved samples
    runner.set_option("bits_allocated", array.dtype.itemsize * 8)
    return array.tobytes()


def register() -> None:
    """Add the plugin to pydicom's decoders (once per process)."""
    from pydicom.pixels.decoders.base import get_decoder

    for syntax in SYNTAXES:
        decoder = get_decoder(syntax)
        with contextlib.suppress(ValueError):  # added already in this process
            decoder.add_plugin(PLUGIN, (__name__, "_decode_frame"))
