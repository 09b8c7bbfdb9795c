"""Every reason an input can be quarantined for, in one place (no Spark, no decoders).

The metadata checks, the file reader and the image decoders raise these codes;
``xray.quarantine`` stores them; :data:`REASONS` says what each means.
"""

from __future__ import annotations

EMPTY = "empty_file"
TRUNCATED = "truncated_image"
UNDECODABLE = "undecodable_image"
UNSUPPORTED_SYNTAX = "unsupported_transfer_syntax"
TOO_LARGE = "image_too_large"
TOO_SMALL = "image_too_small"
BLANK = "blank_image"
MISSING_IMAGE_ID = "missing_image_id"
UNSAFE_IMAGE_NAME = "unsafe_image_name"
DUPLICATE_IMAGE_ID = "duplicate_image_id"
UNKNOWN_FINDING = "unknown_finding"
BAD_AGE = "bad_age"
BAD_PATIENT_ID = "bad_patient_id"
BAD_FOLLOW_UP = "bad_follow_up"
UNREADABLE_FILE = "unreadable_file"
NOT_A_FILE = "not_a_regular_file"
FILE_TOO_LARGE = "file_too_large"
CONTRADICTORY_LABELS = "contradictory_labels"
LINE_BREAK_IN_FIELD = "line_break_in_field"

#: Every reason a row can be quarantined for, with what it means.
REASONS: dict[str, str] = {
    MISSING_IMAGE_ID: "the metadata row has an empty Image Index",
    UNSAFE_IMAGE_NAME: "the image name holds a path separator or '..' and would leave the images folder",
    DUPLICATE_IMAGE_ID: "the image id appears on an earlier metadata row (the first one is kept)",
    UNKNOWN_FINDING: "Finding Labels holds a token that is not one of the 14 findings",
    CONTRADICTORY_LABELS: "Finding Labels says No Finding and names a finding too (e.g. No Finding|Effusion)",
    LINE_BREAK_IN_FIELD: "a quoted field of the metadata row holds a line break",
    BAD_AGE: "Patient Age is not a number of years (e.g. 58 or 058Y)",
    BAD_PATIENT_ID: "Patient ID is not an integer",
    BAD_FOLLOW_UP: "Follow-up # is not an integer",
    UNREADABLE_FILE: "the image file could not be read",
    NOT_A_FILE: "the path is a FIFO, a device, a socket or a link to one: only regular files are read",
    FILE_TOO_LARGE: "the file is larger than image.max_file_bytes and was not read",
    EMPTY: "the image file is empty",
    TRUNCATED: "the image file is cut short",
    UNDECODABLE: "the file is not an image that can be decoded",
    TOO_LARGE: "the header claims more than image.max_pixels pixels or image.max_decoded_bytes decoded",
    TOO_SMALL: "the image's shorter side is below image.min_side",
    BLANK: "every pixel of the image has the same value",
    UNSUPPORTED_SYNTAX: "the DICOM transfer syntax (named in the detail) has no decoder here",
}
