"""How the findings are coded in the results sent to the PACS: one table, SNOMED CT where a code exists.

The codes come from the DICOM standard's own code tables (PS3.16, as pydicom's code
dictionary holds them) where they list the finding, otherwise from SNOMED CT's
international release. Infiltration has no SNOMED CT concept that means what the NIH
labels mean by it (a radiographic pattern, not a disease): it takes DICOM's own code
for an infiltrate (DCM 112121). Pleural thickening is coded in a local scheme,
:data:`LOCAL_SCHEME` (DICOM reserves designators that begin with ``99`` for local
schemes), as is any finding a model may carry that the table does not name.
"""

from __future__ import annotations

from pydicom.sr.coding import Code

#: The designator of the local coding scheme (DICOM PS3.16: private schemes begin with "99").
LOCAL_SCHEME = "99XRAYSPARK"

#: finding (ChestX-ray14 spelling) -> (coding scheme designator, code value, code meaning).
FINDING_CODES: dict[str, tuple[str, str, str]] = {
    "Atelectasis": ("SCT", "46621007", "Atelectasis"),
    "Cardiomegaly": ("SCT", "287272002", "Cardiomegaly"),
    "Effusion": ("SCT", "60046008", "Pleural effusion"),
    "Infiltration": ("DCM", "112121", "Infiltrate"),
    "Mass": ("SCT", "4147007", "Mass"),
    "Nodule": ("SCT", "27925004", "Nodule"),
    "Pneumonia": ("SCT", "233604007", "Pneumonia"),
    "Pneumothorax": ("SCT", "36118008", "Pneumothorax"),
    "Consolidation": ("SCT", "95436008", "Lung consolidation"),
    "Edema": ("SCT", "19242006", "Pulmonary edema"),
    "Emphysema": ("SCT", "87433001", "Pulmonary emphysema"),
    "Fibrosis": ("SCT", "51615001", "Pulmonary fibrosis"),
    "Pleural_Thickening": (LOCAL_SCHEME, "PLEURAL_THICKENING", "Pleural thickening"),
    "Hernia": ("SCT", "84089009", "Hiatal hernia"),
}

#: The procedure the results report on (TID 1500 row 4, DCID 100). CID 100 lists no projection radiography, and
#: pixelmed's validator holds the report to its list, so the report names the generic member; that the film is a
#: chest radiograph is said by the source image the report references.
PROCEDURE = Code("363679005", "SCT", "Imaging procedure")
#: The name of a finding's hot region in its group: the outline of where the model looked (DICOM CID 219).
OUTLINE = Code("111041", "DCM", "Outline")
#: The name of each finding's probability measurement (unit 1) and of whether it was called.
PROBABILITY = Code("122157", "DCM", "Probability")
NO_UNITS = Code("1", "UCUM", "no units")
PRESENT = Code("52101004", "SCT", "Present")
ABSENT = Code("272519000", "SCT", "Absent")


def finding_code(finding: str) -> Code:
    """The finding's code from :data:`FINDING_CODES`, or a local code named after it."""
    scheme, value, meaning = FINDING_CODES.get(finding) or (LOCAL_SCHEME, finding.upper()[:16], finding)
    return Code(value, scheme, meaning)
