"""Result UIDs derived from what they report on, so a resend replaces the same instance in the PACS.

A result object's SOP Instance UID is a function of the film's SOP Instance UID, the model
version and the object's kind; its series UID of the study, the model version and the
kind. Under ``deliver.uid_root`` (an organisation's registered root) the hash follows the
root as one decimal component; without one, the UID is ``2.25.`` and the hash read as a
128-bit integer, the form ISO/IEC 9834-8 and DICOM PS3.5 B.2 give UUID-derived UIDs.
"""

from __future__ import annotations

import hashlib

MAX_LENGTH = 64
UUID_ROOT = "2.25"


def result_uid(root: str, *parts: str) -> str:
    """A UID under ``root`` (``""``: the 2.25 arc) determined by ``parts``, at most 64 characters."""
    digest = hashlib.sha256("\x1f".join(("xray-spark result", *parts)).encode("utf-8")).digest()
    value = int.from_bytes(digest[:16], "big")
    if not root:
        return f"{UUID_ROOT}.{value}"
    room = MAX_LENGTH - len(root) - 1
    if room < 8:
        raise ValueError(f"UID root {root!r} leaves fewer than 8 digits for the result's own part")
    return f"{root}.{value % 10**room or 1}"


def check_root(root: str) -> None:
    """A root of digit components without leading zeros, short enough to leave room (ValueError otherwise)."""
    if not root:
        return
    parts = root.split(".")
    if not all(p.isdigit() and (p == "0" or not p.startswith("0")) for p in parts):
        raise ValueError(f"{root!r} is not a UID root (digits and dots, no component with a leading zero)")
    result_uid(root, "check")


#: The product's Implementation Class UID (PS3.7 D.3.3.2), in every association it opens or accepts and in the
#: file meta of every object it writes: a UUID-derived UID fixed for xray-spark, and its version name (16 chars).
IMPLEMENTATION_CLASS_UID = result_uid("", "implementation class")


def implementation_version_name() -> str:
    from xray_spark import __version__

    return f"XRAYSPARK_{__version__}"[:16]


def identify(ae) -> None:
    """Make a pynetdicom AE say it is xray-spark (not the library) in its A-ASSOCIATE requests and answers."""
    ae.implementation_class_uid = IMPLEMENTATION_CLASS_UID
    ae.implementation_version_name = implementation_version_name()


def requesting_ae(calling_ae: str, timeout_s: float):
    """A pynetdicom AE that asks for associations as ``calling_ae``, saying it is xray-spark, with one timeout for
    the connection, the association and each message (delivery's C-STORE, the priors' C-FIND and C-MOVE)."""
    from pynetdicom import AE

    ae = AE(ae_title=calling_ae)
    identify(ae)
    for timeout in ("acse_timeout", "dimse_timeout", "network_timeout", "connection_timeout"):
        setattr(ae, timeout, timeout_s)
    return ae
