"""The DICOM transfer syntaxes prepare decodes: the one list the DICOM node accepts and prepare reads.

pydicom decodes the native ones and RLE itself; the JPEG families go through imagecodecs
(:mod:`xray_spark.imaging.codecs`).
"""

from __future__ import annotations

from pydicom import uid

NATIVE = (uid.ImplicitVRLittleEndian, uid.ExplicitVRLittleEndian, uid.ExplicitVRBigEndian)
DEFLATED = (uid.DeflatedExplicitVRLittleEndian,)
RLE = (uid.RLELossless,)
JPEG = (uid.JPEGBaseline8Bit, uid.JPEGExtended12Bit, uid.JPEGLossless, uid.JPEGLosslessSV1)
JPEG_LS = (uid.JPEGLSLossless, uid.JPEGLSNearLossless)
JPEG_2000 = (uid.JPEG2000Lossless, uid.JPEG2000)
#: Every transfer syntax prepare decodes, in the order the node prefers them when a context offers several.
DECODED = (*NATIVE, *DEFLATED, *RLE, *JPEG, *JPEG_LS, *JPEG_2000)
