"""Tonight's chest films from a DICOMweb archive into the node's spool: QIDO-RS finds them, WADO-RS fetches them.

    python -m xray_spark.node.pull [--lake L] [--config F] [--set k=v ...] [--spool DIR] [--today YYYY-MM-DD]

For archives that do not push (OHIF's, a cloud archive, any DICOMweb service): the series of
``dicomweb_source.modalities`` whose study date is in the window are searched (QIDO-RS), their
instances listed with Body Part Examined and View Position, and each film of
``dicomweb_source.body_parts`` and ``views`` the spool does not hold yet is retrieved (WADO-RS)
and stored as the node stores what a PACS sends
(:meth:`xray_spark.spool.Spool.store`): prepare, privacy and delivery stay as they are. The
header of each retrieved instance is checked again (a QIDO answer may leave out attributes it
does not index): a CT or a lateral film never enters the spool. The window runs from
``dicomweb_source.days`` before today, or from the last pull that ended if that is earlier (a
night the archive was down is caught up), to today; a pull ends when every film is in the
spool, and only then is the window's end recorded (``.dicomweb-pulled.json`` in the spool).
At most ``dicomweb_source.max_films`` films a run. The nightly flow pulls first when
``dicomweb_source.url`` is set; an archive that cannot be reached is one line, the night goes
on with what the spool holds, and exits 4.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime as dt
import io
import json
import logging
import os
import sys

from xray_spark.audit import AuditTrail
from xray_spark.config import DicomWebSourceSettings
from xray_spark.spool import BadInstance, Spool

log = logging.getLogger(__name__)

STATE = ".dicomweb-pulled.json"
#: DICOM JSON keys (PS3.18 F.2) of the attributes a QIDO answer is read for.
STUDY_UID, SERIES_UID, SOP_UID = "0020000D", "0020000E", "00080018"
MODALITY, BODY_PART, VIEW = "00080060", "00180015", "00185101"


@dataclasses.dataclass
class PullSummary:
    """What one pull did: the window, the studies and films found, and what became of each film."""

    url: str
    since: str
    until: str
    studies: int = 0
    found: int = 0
    stored: int = 0
    held: int = 0
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)
    failed: dict[str, int] = dataclasses.field(default_factory=dict)
    complete: bool = False

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _value(item: dict, key: str) -> str:
    values = (item.get(key) or {}).get("Value") or [""]
    return str(values[0]).strip().upper()


def window(source: DicomWebSourceSettings, spool: Spool, today: dt.date) -> tuple[dt.date, dt.date]:
    """The study dates to search: ``source.days`` before today, or from the end of the last complete pull of this
    archive when that is earlier, to today."""
    since = today - dt.timedelta(days=source.days)
    try:
        with open(os.path.join(spool.root, STATE), encoding="utf-8") as fh:
            state = json.load(fh)
        if state.get("url") == source.url.rstrip("/"):
            since = min(since, dt.date.fromisoformat(state["until"]))
    except (OSError, ValueError, KeyError):
        pass
    return since, today


def _record(spool: Spool, url: str, until: dt.date) -> None:
    temporary = os.path.join(spool.root, STATE + ".part")
    with open(temporary, "w", encoding="utf-8") as fh:
        json.dump({"url": url.rstrip("/"), "until": until.isoformat()}, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(temporary, os.path.join(spool.root, STATE))


def why_not(source: DicomWebSourceSettings, modality: str, body_part: str, view: str) -> str | None:
    """Why a film with these attributes is not pulled (None: it is): only the modalities, body parts and views asked
    for; a film without a body part or a view is pulled (prepare reads its header and quarantines it if need be)."""
    if modality not in {m.upper() for m in source.modalities}:
        return f"modality {modality or 'none'}"
    if body_part and source.body_parts and body_part not in {b.upper() for b in source.body_parts}:
        return f"body part {body_part}"
    if view and source.views and view not in {v.upper() for v in source.views}:
        return f"view {view}"
    return None


#: Results asked for per QIDO request; the next page is asked for with an offset.
PAGE = 200


class StuckPaging(Exception):
    """The archive answers a full page and will not page past it (it ignores ``offset``)."""


def _pages(search, key: str, **query) -> list[dict]:
    """Every result of a QIDO search, page by page. An archive that ignores ``offset`` (Orthanc's plugin does with
    some filters) answers a full page already seen: :class:`StuckPaging`, never an endless loop or a silent cut."""
    found: dict[str, dict] = {}
    offset = 0
    while True:
        page = search(limit=PAGE, offset=offset, **query)
        new = {_value(item, key): item for item in page if _value(item, key) not in found}
        found.update(new)
        if len(page) < PAGE:
            return list(found.values())
        if not new:
            raise StuckPaging(f"{len(page)} results and no further page")
        offset += len(page)


def series_search(
    client, filters: dict, since: dt.date, until: dt.date, hours: tuple[int, int] = (0, 24)
) -> list[dict]:
    """The series of ``filters`` whose study date is in [since, until] (QIDO-RS at series level: Orthanc's plugin
    cuts a study-level search by ``ModalitiesInStudy`` to its first page). Where the archive will not page past a
    full page, the dates are halved, then a day's hours, until each part fits a page."""
    query = {**filters, "StudyDate": f"{since:%Y%m%d}-{until:%Y%m%d}"}
    if hours != (0, 24):
        query["StudyTime"] = f"{hours[0]:02d}0000-{hours[1] - 1:02d}5959"
    try:
        return _pages(client.search_for_series, SERIES_UID, search_filters=query)
    except StuckPaging:
        if since < until:
            middle = since + (until - since) // 2
            later = middle + dt.timedelta(days=1)
            return series_search(client, filters, since, middle) + series_search(client, filters, later, until)
        if hours[1] - hours[0] > 1:
            half = (hours[0] + hours[1]) // 2
            return series_search(client, filters, since, until, (hours[0], half)) + series_search(
                client, filters, since, until, (half, hours[1])
            )
        raise StuckPaging(
            f"the archive answers {PAGE} series of {since} {hours[0]:02d}h and pages no further"
        ) from None


def series_instances(client, series: dict) -> list[dict]:
    """The instances of one series (QIDO-RS), with the attributes a pull decides by."""
    return _pages(
        client.search_for_instances,
        SOP_UID,
        study_instance_uid=_value(series, STUDY_UID),
        series_instance_uid=_value(series, SERIES_UID),
        fields=["BodyPartExamined", "ViewPosition", "Modality", "StudyDate"],
    )


def header_why_not(source: DicomWebSourceSettings, dataset) -> str | None:
    """:func:`why_not` of a retrieved instance, read from its own header."""
    said = (str(dataset.get(k, "") or "").strip().upper() for k in ("Modality", "BodyPartExamined", "ViewPosition"))
    return why_not(source, *said)


def session_of(source: DicomWebSourceSettings):
    """The HTTP session and client for the archive (its credentials and certificate authorities)."""
    from xray_spark import dicomweb

    credentials = dicomweb.read_credentials(source.auth_file, "dicomweb_source.auth_file")
    session = dicomweb.http_session(credentials, source.ca_file)
    return session, dicomweb.client(source.url.rstrip("/"), session, source.timeout_seconds)


def _films(client, source: DicomWebSourceSettings, since: dt.date, until: dt.date, summary: PullSummary):
    """(study, series, instance UID, why not) of each instance of the window's studies in the modalities asked for."""
    seen: set[str] = set()
    for modality in dict.fromkeys(m.upper() for m in source.modalities):
        for series in series_search(client, {"Modality": modality}, since, until):
            study_uid = _value(series, STUDY_UID)
            if study_uid not in seen:
                seen.add(study_uid)
                summary.studies += 1
            for item in series_instances(client, series):
                kind = _value(item, MODALITY) or modality
                reason = why_not(source, kind, _value(item, BODY_PART), _value(item, VIEW))
                yield study_uid, _value(series, SERIES_UID), _value(item, SOP_UID), reason


def _retrieved(client, study: str, series: str, sop: str) -> tuple[bytes, object]:
    from pydicom import dcmwrite

    dataset = client.retrieve_instance(study, series, sop)
    buffer = io.BytesIO()
    dcmwrite(buffer, dataset, enforce_file_format=True)
    return buffer.getvalue(), dataset


def run_pull(
    source: DicomWebSourceSettings, spool: Spool, *, today: dt.date | None = None, audit: AuditTrail | None = None
) -> PullSummary:
    """One pull into ``spool`` (see the module's text). Never raises for the archive's failures: they are counted in
    ``failed`` and the window's end is not recorded, so the next pull tries again."""
    import requests

    since, until = window(source, spool, today or dt.date.today())
    summary = PullSummary(source.url.rstrip("/"), since.isoformat(), until.isoformat())
    skipped, failed = collections.Counter(), collections.Counter()
    session, client = session_of(source)
    truncated = False
    pulled: set[tuple[str, str]] = set()
    try:
        for study, series, sop, reason in _films(client, source, since, until, summary):
            summary.found += 1
            if reason is not None:
                skipped[reason] += 1
                continue
            if spool.holds(sop):
                summary.held += 1
                continue
            if summary.stored >= source.max_films:
                truncated = True
                break
            try:
                data, dataset = _retrieved(client, study, series, sop)
            except requests.HTTPError as exc:
                failed[f"WADO-RS HTTP {getattr(exc.response, 'status_code', 0)}"] += 1
                continue
            header = header_why_not(source, dataset)
            if header is not None:
                skipped[header] += 1
                continue
            try:
                spool.store(str(dataset.SOPInstanceUID), data)
            except BadInstance as exc:
                failed[str(exc)] += 1
                continue
            summary.stored += 1
            pulled.add((str(dataset.get("PatientID", "") or ""), str(dataset.get("StudyInstanceUID", "") or "")))
    except StuckPaging as exc:
        failed[str(exc)] += 1
    except requests.exceptions.SSLError:
        failed[f"TLS with {summary.url} failed: its certificate is not trusted"] += 1
    except requests.HTTPError as exc:
        code = getattr(exc.response, "status_code", 0)
        refused = " (the credentials were refused)" if code in (401, 403) else ""
        failed[f"QIDO-RS HTTP {code} from {summary.url}{refused}"] += 1
    except requests.RequestException as exc:
        failed[f"cannot reach {summary.url} ({type(exc).__name__})"] += 1
    finally:
        session.close()
    summary.skipped, summary.failed = dict(skipped), dict(failed)
    if audit is not None:
        _audit(audit, summary, pulled)
    summary.complete = not failed and not truncated
    if summary.complete:
        _record(spool, summary.url, until)
    return summary


def _audit(trail: AuditTrail, summary: PullSummary, pulled: set[tuple[str, str]]) -> None:
    """DICOM Instances Transferred from the archive into the spool (or the pull's failure, with nothing named)."""
    from xray_spark import audit

    archive = audit.Participant(summary.url, False, "", audit.SOURCE)
    us = audit.Participant("xray-spark pull", True, "", audit.DESTINATION)
    subjects = [audit.patient(p) for p in sorted({p for p, _ in pulled} - {""})]
    subjects += [audit.study(u) for u in sorted({u for _, u in pulled} - {""})]
    outcome = audit.SUCCESS if not summary.failed else audit.MINOR_FAILURE
    trail.record(audit.INSTANCES_TRANSFERRED, "C", outcome, [us, archive], subjects)


def pull_summary_text(summary: dict) -> str:
    """The pull in a few lines for the console."""
    lines = [
        f"DICOMweb pull from {summary['url']}, study dates {summary['since']} to {summary['until']}: "
        f"{summary['studies']} studies, {summary['found']} instances; {summary['stored']} films stored in the spool, "
        f"{summary['held']} held already"
    ]
    if summary["skipped"]:
        lines.append("  not chest films asked for: " + ", ".join(f"{n} {why}" for why, n in summary["skipped"].items()))
    for why, n in summary["failed"].items():
        lines.append(f"  failed: {n} x {why}")
    if not summary["complete"]:
        lines.append("  not complete: the next pull starts from the same dates")
    return "\n".join(lines)


def pull_into_spool(settings, folder: str) -> dict:
    """The nightly flow's first step when ``dicomweb_source.url`` is set: tonight's films from the archive into the
    spool at ``folder``, the summary printed; ``{"dicomweb_pull": summary}``, or ``{}`` without an archive (then
    :func:`xray_spark.node.priors.priors_into_spool` fetches new patients' earlier films)."""
    from xray_spark.spool import open_spool

    if not settings.dicomweb_source.url or not folder:
        return {}
    from xray_spark.audit import trail

    done = run_pull(settings.dicomweb_source, open_spool(folder, settings.lake), audit=trail(settings)).to_dict()
    print(pull_summary_text(done), flush=True)
    return {"dicomweb_pull": done}


def _arg_parser() -> argparse.ArgumentParser:
    from xray_spark import cli

    parser = cli.base_parser("python -m xray_spark.node.pull", "Tonight's chest films from a DICOMweb archive.")
    parser.add_argument("--spool", help="the spool to pull into (dicom_node.spool)")
    parser.add_argument("--today", help="pull as if today were this date (YYYY-MM-DD)")
    return parser


def main(argv: list[str] | None = None) -> int:
    from xray_spark import cli
    from xray_spark.errors import UsageError
    from xray_spark.spool import open_spool

    args = _arg_parser().parse_args(argv)

    def body() -> int:
        settings = cli.resolve_settings(args)
        if not settings.dicomweb_source.url:
            raise UsageError("dicomweb_source.url is empty: name the archive's DICOMweb root")
        today = dt.date.fromisoformat(args.today) if args.today else None
        spool = open_spool(args.spool or settings.dicom_node.spool, settings.lake)
        from xray_spark.audit import trail

        done = run_pull(settings.dicomweb_source, spool, today=today, audit=trail(settings)).to_dict()
        print(json.dumps(done, indent=2), flush=True)
        print(pull_summary_text(done), file=sys.stderr, flush=True)
        return 0 if done["complete"] else cli.EXIT_UNDELIVERED

    return cli.run_job("pull", body, args)


if __name__ == "__main__":
    sys.exit(main())
