"""The link from a film to its study in the hospital's PACS viewer (``worklist.viewer_url``)."""

from __future__ import annotations


def viewer_link(template: str, study_uid: str | None, accession: str | None) -> str | None:
    """``worklist.viewer_url`` filled in for one study (values URL-quoted), or None when it needs what is missing."""
    from urllib.parse import quote

    needs_study, needs_accession = "{study_uid}" in template, "{accession}" in template
    if not template or (needs_study and not study_uid) or (needs_accession and not accession):
        return None
    return template.format(study_uid=quote(study_uid or "", safe=""), accession=quote(accession or "", safe=""))
