"""Where delivered results go, as settings and command lines name them: ``AE_TITLE@HOST:PORT`` or ``folder:DIR``."""

from __future__ import annotations

import dataclasses
import os
import re

from xray_spark.errors import UsageError

NODE = re.compile(r"^(?P<ae>[^@]{1,16})@(?P<host>[^:@]+):(?P<port>[0-9]{1,5})$")
FOLDER_PREFIX = "folder:"


@dataclasses.dataclass(frozen=True)
class Destination:
    """A parsed destination; ``name`` is how ``xray.deliveries`` records it."""

    name: str
    ae_title: str = ""
    host: str = ""
    port: int = 0
    folder: str = ""

    @property
    def is_node(self) -> bool:
        return not self.folder


def parse_destination(text: str) -> Destination:
    """``AE_TITLE@HOST:PORT`` or ``folder:DIR`` (a clear error for anything else)."""
    text = text.strip()
    if text.startswith(FOLDER_PREFIX) and len(text) > len(FOLDER_PREFIX):
        folder = os.path.abspath(text[len(FOLDER_PREFIX) :])
        return Destination(name=FOLDER_PREFIX + folder, folder=folder)
    match = NODE.match(text)
    if match is None or not 0 < int(match["port"]) < 65536 or match["ae"].strip() != match["ae"]:
        raise UsageError(f"destination {text!r} is neither AE_TITLE@HOST:PORT (a DICOM node) nor folder:DIR")
    return Destination(name=text, ae_title=match["ae"], host=match["host"], port=int(match["port"]))
