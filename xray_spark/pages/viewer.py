"""The link from a film to its study in the hospital's PACS viewer (``worklist.viewer_url``).

The template names the study by what the viewer wants: ``{study_uid}`` (OHIF, Orthanc Explorer 2, the Stone Web
viewer, any DICOMweb viewer), ``{accession}``, or ``{orthanc_study}``, Orthanc's own id of the study, which only
the archive knows: the web app asks it (``POST /tools/lookup`` at ``worklist.viewer_lookup``) when the reader
follows the link, and sends them on. The static pages cannot ask, and leave such a link out.
"""

from __future__ import annotations

import base64
import json
import urllib.request
from urllib.parse import quote

PLACEHOLDERS = ("study_uid", "accession", "orthanc_study")
#: The viewers' templates (docs/web.md), by name; ``BASE`` is the viewer's or the archive's address.
EXAMPLES = {
    "ohif": "BASE/viewer?StudyInstanceUIDs={study_uid}",
    "orthanc-explorer-2": "BASE/ui/app/#/filtered-studies?StudyInstanceUID={study_uid}&expand=series",
    "orthanc": "BASE/app/explorer.html#study?uuid={orthanc_study}",
    "stone": "BASE/stone-webviewer/index.html?study={study_uid}",
}


def needs_lookup(template: str) -> bool:
    """Whether the template names Orthanc's own study id, which the app must ask the archive for."""
    return "{orthanc_study}" in template


def viewer_link(
    template: str, study_uid: str | None, accession: str | None, orthanc_study: str | None = None
) -> str | None:
    """``worklist.viewer_url`` filled in for one study (values URL-quoted), or None when it needs what is missing."""
    values = {"study_uid": study_uid, "accession": accession, "orthanc_study": orthanc_study}
    if not template or any("{" + name + "}" in template and not values[name] for name in PLACEHOLDERS):
        return None
    return template.format(**{name: quote(value or "", safe="") for name, value in values.items()})


def orthanc_study_id(base: str, study_uid: str, credentials: str = "", timeout: float = 10.0) -> str | None:
    """Orthanc's id of the study ``study_uid`` (its ``/tools/lookup``), None when the archive does not hold it.
    ``credentials``: ``user:password`` for HTTP basic authentication, or empty. Raises ``OSError`` when the
    archive cannot be reached."""
    request = urllib.request.Request(f"{base.rstrip('/')}/tools/lookup", data=study_uid.encode(), method="POST")
    if credentials:
        request.add_header("Authorization", "Basic " + base64.b64encode(credentials.encode()).decode("ascii"))
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        found = json.loads(answer.read().decode() or "[]")
    return next((str(r["ID"]) for r in found if isinstance(r, dict) and r.get("Type") == "Study"), None)
