from __future__ import annotations

import cv2
import numpy as np
import pytest

from xray_spark.errors import ImageError
from xray_spark.imaging import decode as img

from . import corpus

LIMITS = img.ImageLimits()


def test_gray8_png_is_resized_losslessly_when_the_size_matches():
    data = corpus.png_gray8(80)
    out, facts = img.load_training_image(data, 80, LIMITS)
    np.testing.assert_array_equal(out, corpus.chest_like(80, 0))
    assert facts["converted"] == "" and facts["format"] == "png"


@pytest.mark.parametrize(("maker", "converted"), [(corpus.png_rgb, "rgb"), (corpus.png_rgba, "rgba")])
def test_colour_pngs_become_8bit_gray(maker, converted):
    out, facts = img.load_training_image(maker(80), 40, LIMITS)
    assert out.shape == (40, 40) and out.dtype == np.uint8
    assert facts["converted"] == converted
    # Gray replicated into R, G and B converts back to the same gray.
    seed = {"rgb": 1, "rgba": 2}[converted]
    expected = cv2.resize(corpus.chest_like(80, seed), (40, 40), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(out, expected)


def test_16bit_is_scaled_not_clipped():
    out, facts = img.load_training_image(corpus.png_16bit(80), 80, LIMITS)
    source = corpus.chest_like(80, 3).astype(np.float64)
    assert facts["converted"] == "16bit"
    assert out.max() == 255 and out.min() == 0  # the full 8-bit range is used
    # Scaling keeps the order and spacing of grey levels: a linear map of the source.
    expected = np.rint((source - source.min()) * 255 / (source.max() - source.min()))
    np.testing.assert_allclose(out, expected, atol=1)


def test_jpeg_named_png_is_decoded_by_content():
    out, facts = img.load_training_image(corpus.jpeg(80), 80, LIMITS)
    assert facts["format"] == "jpeg"
    assert np.abs(out.astype(int) - corpus.chest_like(80, 4)).mean() < 4


def test_non_square_is_padded_not_stretched():
    tall = np.full((100, 50), 200, dtype=np.uint8)
    out = img.square_resize(tall, 100)
    assert out.shape == (100, 100)
    assert out[:, :25].max() == 0 and out[:, 75:].max() == 0
    assert out[:, 30:70].min() == 200


@pytest.mark.parametrize(
    ("data", "reason", "message"),
    [
        (b"", img.EMPTY, "empty"),
        (corpus.truncated_png(), img.TRUNCATED, "cut short"),
        (corpus.TEXT_AS_PNG, img.UNDECODABLE, "not a PNG, JPEG or DICOM"),
        (corpus.huge_header_png(), img.TOO_LARGE, "60000x60000"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", img.TRUNCATED, "IHDR"),
    ],
)
def test_bad_files_raise_with_their_reason(data, reason, message):
    with pytest.raises(ImageError, match=message) as info:
        img.load_training_image(data, 64, LIMITS)
    assert info.value.reason == reason


def test_max_pixels_is_configurable():
    with pytest.raises(ImageError, match=r"image\.max_pixels=1,000"):
        img.load_training_image(corpus.png_gray8(80), 64, img.ImageLimits(max_pixels=1_000))


def test_dicom_monochrome2_is_read():
    import io

    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = FileDataset("x.dcm", {}, file_meta=meta, preamble=b"\x00" * 128)
    pixels = corpus.chest_like(64, 6).astype(np.uint16) * 16
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    out, facts = img.load_training_image(buffer.getvalue(), 64, LIMITS)
    assert facts["format"] == "dicom" and facts["converted"] == "16bit"
    assert np.corrcoef(out.ravel(), corpus.chest_like(64, 6).ravel())[0, 1] > 0.999


# -- bounded before decoding ----------------------------------------------------------------------
def test_a_decompression_bomb_is_refused_from_its_header():
    """777 KB of PNG that would decode to 10000 x 10000 x 4 x 16 bits (763 MiB): refused unread."""
    bomb = corpus.png_rgba16_bomb()
    assert len(bomb) < 2_000_000
    with pytest.raises(ImageError, match=r"decode to 763 MiB, over image\.max_decoded_bytes") as info:
        img.load_training_image(bomb, 64, LIMITS)
    assert info.value.reason == img.TOO_LARGE


def test_dicom_frames_count_against_the_decode_limit():
    with pytest.raises(ImageError, match=r"1024x1024 x 120 frames.*240 MiB") as info:
        img.load_training_image(corpus.dicom_multiframe(120, 1024), 64, LIMITS)
    assert info.value.reason == img.TOO_LARGE


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (corpus.encode_png(np.full((1, 1), 77, np.uint8)), img.TOO_SMALL),
        (corpus.encode_png(np.full((80, 40), 77, np.uint8)), img.TOO_SMALL),
        (corpus.encode_png(np.zeros((80, 80), np.uint8)), img.BLANK),
        (corpus.encode_png(np.full((80, 80), 4000, np.uint16)), img.BLANK),
    ],
)
def test_films_too_small_or_blank_are_refused(data, reason):
    with pytest.raises(ImageError) as info:
        img.load_training_image(data, 64, LIMITS)
    assert info.value.reason == reason


def test_a_non_image_message_never_echoes_its_bytes():
    with pytest.raises(ImageError) as info:
        img.load_training_image(corpus.SECRET_AS_PNG, 64, LIMITS)
    assert info.value.reason == img.UNDECODABLE
    assert "DOE" not in str(info.value) and corpus.SECRET_AS_PNG[:8].hex() not in str(info.value)
