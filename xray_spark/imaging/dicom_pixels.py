"""DICOM films as a radiologist's viewer shows them: pixels through the Modality and VOI LUTs.

:func:`display_image` turns a dataset into an 8-bit grayscale picture, in the order of
the DICOM grayscale pipeline (PS3.4 N.2):

1. the stored values, decoded by pydicom (every JPEG family through imagecodecs: see
   :mod:`~xray_spark.imaging.codecs`), with Bits Stored honoured (pydicom corrects
   the unused high bits) and the Pixel Padding Value (or range) set aside;
2. the Modality LUT: Rescale Slope/Intercept or a Modality LUT Sequence;
3. the VOI LUT: the first window (centre/width, with its VOI LUT Function) or the first
   VOI LUT Sequence item, whose output range is then mapped linearly onto 0..255. Without
   one, 8-bit data is taken as stored and deeper data is scaled from its own minimum to
   its maximum, exactly as the PNG path treats 8- and 16-bit PNGs;
4. MONOCHROME1 (low values bright) inverted over its full output range, so a MONOCHROME1
   film gives the same picture as the MONOCHROME2 film it inverts;
5. padding pixels black.

The grayscale -> square -> resize -> PNG steps that follow are the PNG path's.
"""

from __future__ import annotations

import hashlib
import io
import zlib
from typing import Any, BinaryIO

import numpy as np

from xray_spark.errors import ImageError
from xray_spark.imaging import codecs as dicom_codecs
from xray_spark.imaging.reasons import TOO_LARGE, UNDECODABLE, UNSUPPORTED_SYNTAX
from xray_spark.imaging.transfer_syntaxes import DECODED

dicom_codecs.register()

#: Deflated Explicit VR Little Endian: the whole dataset after the file meta is one deflate stream.
DEFLATED = "1.2.840.10008.1.2.1.99"
#: What a deflated dataset may inflate to beyond ``image.max_decoded_bytes`` (its header elements).
HEADER_ALLOWANCE = 16 * 1024 * 1024


def check_inflated_size(fh: BinaryIO, limit: int) -> None:
    """Refuse a Deflated-syntax file whose dataset would inflate past ``limit`` bytes, before anything inflates it.

    pydicom inflates the whole dataset into memory to read even its header (a 2 MiB file of
    zeros inflates to gigabytes); here it is inflated a MiB at a time and only counted.
    """
    from pydicom.filereader import _read_file_meta_info, read_preamble  # the file meta only, never the dataset

    fh.seek(0)
    try:
        read_preamble(fh, False)
        meta = _read_file_meta_info(fh)
    except Exception:  # not a DICOM file meta: pydicom says why when it reads the file
        fh.seek(0)
        return
    if str(meta.get("TransferSyntaxUID", "")) == DEFLATED:
        inflater, total = zlib.decompressobj(-zlib.MAX_WBITS), 0
        while not inflater.eof and (chunk := fh.read(1 << 20)):
            while chunk and not inflater.eof:  # what follows the stream's end (a padding byte) is not inflated
                try:
                    total += len(inflater.decompress(chunk, 1 << 20))
                except zlib.error:
                    chunk = b""  # a broken stream: pydicom reports it as undecodable
                    break
                if total > limit:
                    raise ImageError(
                        TOO_LARGE,
                        f"the deflated DICOM dataset inflates to more than {limit:,} bytes "
                        "(image.max_decoded_bytes and a header allowance): a deflate bomb, or a film far too large",
                    )
                chunk = inflater.unconsumed_tail
    fh.seek(0)


def read_dataset(data: bytes, *, pixels: bool) -> Any:
    """The dataset in ``data`` (the pixel data left unread unless ``pixels``); :func:`check_inflated_size` first."""
    import pydicom

    return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=not pixels)


def pixel_digest(ds: Any) -> str:
    """SHA-256 of the Pixel Data element's value as stored (encapsulated fragments, or native bytes): what
    ingest records of a film, and what delivery checks its source file against before re-joining identity."""
    return hashlib.sha256(bytes(ds.PixelData)).hexdigest()


def stored_pixels(ds: Any) -> np.ndarray:
    """The first frame's stored values (colour converted to RGB by pydicom), or an :class:`ImageError`."""
    from pydicom.pixels.decoders.base import get_decoder

    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if syntax is None:
        raise ImageError(UNDECODABLE, "the DICOM file has no transfer syntax in its file meta information")
    decoder = get_decoder(syntax) if syntax in _KNOWN_SYNTAXES else None
    if decoder is None or not decoder.is_available:
        name = getattr(syntax, "name", "unknown")
        raise ImageError(UNSUPPORTED_SYNTAX, f"transfer syntax {syntax} ({name}) cannot be decoded here")
    plugin = dicom_codecs.PLUGIN if syntax in dicom_codecs.SYNTAXES else ""
    try:
        ds.pixel_array_options(decoding_plugin=plugin, index=0)
        return np.asarray(ds.pixel_array)
    except Exception as exc:  # pydicom and the codecs raise many kinds for bad data
        raise ImageError(UNDECODABLE, f"DICOM pixel data could not be decoded ({type(exc).__name__})") from None


_KNOWN_SYNTAXES = set(DECODED)


def padding_mask(ds: Any, stored: np.ndarray) -> np.ndarray | None:
    """Where the stored values are Pixel Padding Value (up to Pixel Padding Range Limit); None if none."""
    if "PixelPaddingValue" not in ds:
        return None
    first = int(ds.PixelPaddingValue)
    last = int(ds.get("PixelPaddingRangeLimit", first))
    low, high = min(first, last), max(first, last)
    mask = (stored >= low) & (stored <= high)
    return mask if mask.any() else None


def voi_range(ds: Any) -> tuple[float, float]:
    """The output range of the VOI LUT pydicom applies (as its ``apply_voi_lut`` defines it)."""
    if "VOILUTSequence" in ds and "WindowWidth" not in ds:
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        return 0.0, float(2**bits - 1)
    bits = int(ds.BitsStored)
    if "ModalityLUTSequence" in ds:
        bits = int(ds.ModalityLUTSequence[0].LUTDescriptor[2])
        low, high = 0.0, float(2**bits - 1)
    elif int(ds.get("PixelRepresentation", 0)) == 0:
        low, high = 0.0, float(2**bits - 1)
    else:
        low, high = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    if ds.get("RescaleSlope") is not None and "ModalityLUTSequence" not in ds:
        slope, intercept = float(ds.RescaleSlope), float(ds.get("RescaleIntercept", 0.0))
        low, high = low * slope + intercept, high * slope + intercept
    return min(low, high), max(low, high)


def display_values(ds: Any) -> tuple[np.ndarray, float, float, np.ndarray | None]:
    """The film's display values, the range that maps onto black..white, and the padding mask.

    Steps 1-4 of the module docstring; the caller maps ``low``..``high`` onto 0..255 and
    blacks out the mask (8-bit data taken as stored comes back with the range 0..255).
    """
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    stored = _gray(stored_pixels(ds))
    mask = padding_mask(ds, stored)
    has_voi = "WindowCenter" in ds or "VOILUTSequence" in ds
    has_modality = "ModalityLUTSequence" in ds or ds.get("RescaleSlope") is not None
    if has_voi:
        values = apply_voi_lut(apply_modality_lut(stored, ds), ds, index=0).astype(np.float64)
        low, high = voi_range(ds)
    elif stored.dtype == np.uint8 and not has_modality:
        values, low, high = stored.astype(np.int32), 0.0, 255.0
    else:
        values = apply_modality_lut(stored, ds).astype(np.float64) if has_modality else stored.astype(np.int64)
        kept = values[~mask] if mask is not None else values
        low, high = (float(kept.min()), float(kept.max())) if kept.size else (0.0, 0.0)
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        # Inverted over the full range, before any scaling: exact, with no rounding twice.
        values = (int(low) + int(high)) - values if values.dtype.kind in "iu" else (low + high) - values
    return values, low, high, mask


def _gray(stored: np.ndarray) -> np.ndarray:
    """Colour films (RGB from pydicom) as their luma, ITU-R 601 weights; gray films as they are."""
    if stored.ndim != 3:
        return stored
    import cv2

    rgb = np.ascontiguousarray(stored[..., :3])
    if rgb.dtype in (np.uint8, np.uint16):
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return np.rint(rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])).astype(np.int64)
