"""DICOM films written the way PACS exports them: for the demo archive and the tests.

:func:`film` builds a CR/DX dataset around a grayscale picture; :func:`encode` writes it
in any of :data:`SYNTAXES` (uncompressed little/big endian, deflated, RLE, JPEG baseline,
12-bit JPEG Extended, JPEG Lossless SV1, JPEG-LS lossless and near-lossless, JPEG 2000
lossless and lossy). The JPEG families are encoded with imagecodecs, RLE by pydicom.
"""

from __future__ import annotations

import copy
import datetime as dt
import io
from typing import Any

import numpy as np
from pydicom import uid
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filewriter import dcmwrite

#: Short names of the transfer syntaxes a PACS exports, and whether each is lossless.
SYNTAXES: dict[str, tuple[str, bool]] = {
    "implicit-le": (uid.ImplicitVRLittleEndian, True),
    "explicit-le": (uid.ExplicitVRLittleEndian, True),
    "explicit-be": (uid.ExplicitVRBigEndian, True),
    "deflated": (uid.DeflatedExplicitVRLittleEndian, True),
    "rle": (uid.RLELossless, True),
    "jpeg-baseline": (uid.JPEGBaseline8Bit, False),
    "jpeg-extended": (uid.JPEGExtended12Bit, False),
    "jpeg-lossless": (uid.JPEGLosslessSV1, True),
    "jpeg-ls": (uid.JPEGLSLossless, True),
    "jpeg-ls-near": (uid.JPEGLSNearLossless, False),
    "j2k-lossless": (uid.JPEG2000Lossless, True),
    "j2k": (uid.JPEG2000, False),
}
CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
DX_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"


def film(
    pixels: np.ndarray,
    *,
    bits_stored: int,
    photometric: str = "MONOCHROME2",
    modality: str = "DX",
    **attributes: Any,
) -> FileDataset:
    """A single-frame grayscale film around ``pixels`` (uint8 or uint16), with new UIDs."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX_STORAGE if modality == "DX" else CR_STORAGE
    meta.MediaStorageSOPInstanceUID = uid.generate_uid()
    meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds = FileDataset("film.dcm", {}, file_meta=meta, preamble=b"\x00" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = uid.generate_uid()
    ds.SeriesInstanceUID = uid.generate_uid()
    ds.Modality = modality
    ds.Rows, ds.Columns = (int(n) for n in pixels.shape)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 8 if pixels.dtype == np.uint8 else 16
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits_stored, bits_stored - 1, 0
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    ds.ContentDate = dt.date.today().strftime("%Y%m%d")
    for key, value in attributes.items():
        setattr(ds, key, value)
    return ds


def encode(ds: FileDataset, syntax: str) -> bytes:
    """The dataset as a DICOM file in transfer syntax ``syntax`` (a key of :data:`SYNTAXES`)."""
    target, _ = SYNTAXES[syntax]
    shape = (int(ds.Rows), int(ds.Columns))
    pixels = np.frombuffer(ds.PixelData, dtype=np.uint8 if ds.BitsAllocated == 8 else "<u2").reshape(shape)
    ds = copy.deepcopy(ds)  # the caller's dataset stays as it was
    ds.file_meta.TransferSyntaxUID = target
    buffer = io.BytesIO()
    if syntax == "explicit-be":
        ds.PixelData = pixels.astype(">u2" if ds.BitsAllocated == 16 else np.uint8).tobytes()
        dcmwrite(buffer, ds, implicit_vr=False, little_endian=False, enforce_file_format=True)
        return buffer.getvalue()
    if syntax == "rle":
        ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
        ds.compress(uid.RLELossless, pixels, encoding_plugin="pydicom", generate_instance_uid=False)
    elif target not in (uid.ImplicitVRLittleEndian, uid.ExplicitVRLittleEndian, uid.DeflatedExplicitVRLittleEndian):
        ds.PixelData = encapsulate([_codestream(pixels, syntax, int(ds.BitsStored))])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        if not SYNTAXES[syntax][1]:
            ds.LossyImageCompression = "01"
    ds.save_as(buffer, enforce_file_format=True, implicit_vr=target == uid.ImplicitVRLittleEndian)
    return buffer.getvalue()


def _codestream(pixels: np.ndarray, syntax: str, bits: int) -> bytes:
    import imagecodecs

    if syntax == "jpeg-baseline":
        return imagecodecs.jpeg8_encode(pixels.astype(np.uint8), level=95)
    if syntax == "jpeg-extended":
        return imagecodecs.jpeg8_encode(pixels.astype(np.uint16), level=95, bitspersample=12)
    if syntax == "jpeg-lossless":
        return imagecodecs.jpeg8_encode(pixels, lossless=True, predictor=1, bitspersample=bits)
    if syntax in ("jpeg-ls", "jpeg-ls-near"):
        return imagecodecs.jpegls_encode(pixels, level=0 if syntax == "jpeg-ls" else 2)
    reversible = syntax == "j2k-lossless"
    return imagecodecs.jpeg2k_encode(
        pixels, codecformat="J2K", bitspersample=bits, reversible=reversible, level=None if reversible else 45
    )
