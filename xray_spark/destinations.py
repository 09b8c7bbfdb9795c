"""Where delivered results go, as settings and command lines name them: ``AE_TITLE@HOST:PORT``, ``dicomweb:URL``
or ``folder:DIR``.

A destination's ``kind`` picks its sender (:data:`xray_spark.deliver.send.SENDERS`). A new
kind is one parser in :data:`PREFIXES` for how it is written and one sender there; delivery's
pipeline does not change.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable

from xray_spark.errors import UsageError

NODE = re.compile(r"^(?P<ae>[^@]{1,16})@(?P<host>[^:@]+):(?P<port>[0-9]{1,5})$")
FOLDER_PREFIX = "folder:"
DICOMWEB_PREFIX = "dicomweb:"
TLS_PREFIX = "tls:"
#: The kind of a DICOM node written ``AE_TITLE@HOST:PORT`` (C-STORE), of a folder and of a DICOMweb service (STOW-RS).
DICOM, FOLDER, DICOMWEB = "dicom", "folder", "dicomweb"


@dataclasses.dataclass(frozen=True)
class Destination:
    """A parsed destination; ``name`` is how ``xray.deliveries`` records it, ``kind`` which sender serves it.

    ``address`` is what the kind's sender needs beyond the fields of a DICOM node or a folder (a URL, say)."""

    name: str
    kind: str
    ae_title: str = ""
    host: str = ""
    port: int = 0
    folder: str = ""
    address: str = ""
    tls: bool = False


def _folder(rest: str) -> Destination:
    folder = os.path.abspath(rest)
    return Destination(name=FOLDER_PREFIX + folder, kind=FOLDER, folder=folder)


def _dicomweb(rest: str) -> Destination:
    from xray_spark.dicomweb import service_url

    url = service_url(rest, "deliver.dicomweb_auth_file")
    return Destination(name=DICOMWEB_PREFIX + url, kind=DICOMWEB, address=url)


def _tls_node(rest: str) -> Destination:
    node = _node(rest)
    return dataclasses.replace(node, name=TLS_PREFIX + node.name, tls=True)


#: Each written form other than ``AE_TITLE@HOST:PORT``: its prefix and the parser of what follows it.
PREFIXES: dict[str, Callable[[str], Destination]] = {
    FOLDER_PREFIX: _folder,
    DICOMWEB_PREFIX: _dicomweb,
    TLS_PREFIX: _tls_node,
}


def parse_destination(text: str) -> Destination:
    """``AE_TITLE@HOST:PORT``, or a form of :data:`PREFIXES` (``folder:DIR``); a clear error for anything else."""
    text = text.strip()
    for prefix, parse in PREFIXES.items():
        if text.startswith(prefix) and len(text) > len(prefix):
            return parse(text[len(prefix) :])
    return _node(text)


def _node(text: str) -> Destination:
    match = NODE.match(text)
    if match is None or not 0 < int(match["port"]) < 65536 or match["ae"].strip() != match["ae"]:
        forms = " nor ".join(["AE_TITLE@HOST:PORT (a DICOM node)", *(f"{p}..." for p in PREFIXES)])
        raise UsageError(f"destination {text!r} is neither {forms}")
    return Destination(name=text, kind=DICOM, ae_title=match["ae"], host=match["host"], port=int(match["port"]))
