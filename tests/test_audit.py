"""The audit trail's messages (DICOM PS3.15 A.5.1) and the query that answers "who accessed this patient"."""

from __future__ import annotations

import datetime as dt
import json
import socket
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree as ET

import pyarrow as pa
import pyarrow.parquet as pq

from xray_spark import audit
from xray_spark.privacy import pseudonym

from .jobs import job_env

KEY = "an-audit-test-key-long-enough-0123456789"
ACTIONS, OUTCOMES = {"C", "R", "U", "D", "E"}, {"0", "4", "8", "12"}


def check_audit_message(text: str) -> ET.Element:
    """The rules of PS3.15 A.5.1's schema that an AuditMessage must keep, checked element by element: the event
    identified (action, time, outcome, a coded EventID), at least one active participant with a user and whether it
    asked, the audit source, and each participant object with its ID, type, role, ID type and a name or a query,
    in the schema's order."""
    root = ET.fromstring(text)
    assert root.tag == "AuditMessage"
    allowed = {
        "EventIdentification",
        "ActiveParticipant",
        "AuditSourceIdentification",
        "ParticipantObjectIdentification",
    }
    assert {child.tag for child in root} <= allowed
    order = [child.tag for child in root]  # the schema's sequence: event, participants, source, objects
    assert order == sorted(order, key=["EventIdentification", *sorted(allowed - {"EventIdentification"})].index)
    assert order.index("AuditSourceIdentification") == len(root.findall("ActiveParticipant")) + 1
    (event,) = root.findall("EventIdentification")
    assert event.get("EventActionCode") in ACTIONS and event.get("EventOutcomeIndicator") in OUTCOMES
    dt.datetime.fromisoformat(event.get("EventDateTime").replace("Z", "+00:00"))  # xs:dateTime with a zone
    assert event.get("EventDateTime").endswith("Z")
    coded = [event.find("EventID"), *event.findall("EventTypeCode")]
    participants = root.findall("ActiveParticipant")
    assert participants and all(p.get("UserID") and p.get("UserIsRequestor") in ("true", "false") for p in participants)
    for p in participants:
        if p.get("NetworkAccessPointID"):
            assert p.get("NetworkAccessPointTypeCode") in {"1", "2", "3", "4", "5"}
        coded += p.findall("RoleIDCode")
    (source,) = root.findall("AuditSourceIdentification")
    assert source.get("AuditSourceID")
    coded += source.findall("AuditSourceTypeCode")
    for o in root.findall("ParticipantObjectIdentification"):
        assert o.get("ParticipantObjectID") and o.get("ParticipantObjectTypeCode") in {"1", "2", "3", "4"}
        assert 1 <= int(o.get("ParticipantObjectTypeCodeRole")) <= 24
        kids = [child.tag for child in o]  # the ID type, a name or a query, then details and descriptions
        assert kids[:1] == ["ParticipantObjectIDTypeCode"] and kids[1:2] in (
            ["ParticipantObjectName"],
            ["ParticipantObjectQuery"],
        )
        assert set(kids[2:]) <= {"ParticipantObjectDetail", "ParticipantObjectDescription"}
        coded.append(o.find("ParticipantObjectIDTypeCode"))
    for code in coded:
        assert code is not None and code.get("csd-code") and code.get("codeSystemName") and code.get("originalText")
    return root


def _patient_keys(lake: Path, rows: list[tuple[str, int]]) -> None:
    folder = lake / "tables" / "patient_keys" / "dataset=hospital"
    folder.mkdir(parents=True)
    table = pa.table(
        {"patient_pseudonym": [k for k, _ in rows], "patient_id": pa.array([n for _, n in rows], pa.int32())}
    )
    pq.write_table(table, folder / "part-0.parquet")


def test_each_event_is_a_valid_message_in_the_file_and_at_the_collector_and_the_query_finds_the_patient(tmp_path):
    collector = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    collector.bind(("127.0.0.1", 0))
    collector.settimeout(10)
    path = tmp_path / "audit" / "audit.log"
    trail = audit.AuditTrail(str(path), f"udp://127.0.0.1:{collector.getsockname()[1]}")
    reader = audit.Participant("dora", True, "10.1.2.3")
    node = audit.Participant("XRAY_SPARK", False, "", audit.DESTINATION)
    pacs = audit.Participant("PACS", True, "10.1.2.9", audit.SOURCE)
    texts = [
        trail.record(audit.USER_AUTHENTICATION, "E", audit.MINOR_FAILURE, [reader], event_type=audit.LOGIN),
        trail.record(audit.USER_AUTHENTICATION, "E", audit.SUCCESS, [reader], event_type=audit.LOGIN),
        trail.record(audit.INSTANCES_ACCESSED, "R", audit.SUCCESS, [reader], [audit.patient("hospital/7")]),
        trail.record(audit.PATIENT_RECORD, "R", audit.SUCCESS, [reader], [audit.patient("hospital/8")]),
        trail.record(
            audit.INSTANCES_TRANSFERRED,
            "C",
            audit.SUCCESS,
            [pacs, node],
            [audit.patient("MRN-7"), audit.study("1.2.3")],
        ),
        trail.record(audit.INSTANCES_TRANSFERRED, "C", audit.SUCCESS, [pacs, node], [audit.patient("MRN-8")]),
        trail.record(
            audit.SECURITY_ALERT, "E", audit.MINOR_FAILURE, [pacs, node], event_type=audit.NODE_AUTHENTICATION
        ),
    ]
    for text in texts:
        check_audit_message(text)
        frame = collector.recv(65536).decode()
        assert frame.startswith("<85>1 ") and " IHE+RFC-3881 - " in frame and frame.endswith(text), frame[:200]
    collector.close()
    lines = path.read_text().splitlines()
    assert lines == texts and path.stat().st_mode & 0o777 == 0o600
    lake = tmp_path / "lake"
    _patient_keys(lake, [(pseudonym(KEY.encode(), "MRN-7"), 7), (pseudonym(KEY.encode(), "MRN-8"), 8)])
    key = tmp_path / "pseudonym.key"
    key.write_text(KEY + "\n")
    key.chmod(0o600)

    def query(*args: str) -> list[dict]:
        settings = ["--lake", str(lake), "--set", f"audit.file={path}", "--set", f"privacy.key_file={key}"]
        done = subprocess.run(
            [sys.executable, "-m", "xray_spark.audit", "query", *settings, *args],
            capture_output=True, text=True, timeout=120, env=job_env(),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return [json.loads(line) for line in done.stdout.splitlines()]

    by_id = query("--patient-id", "MRN-7")
    assert [(e["event"], e["users"]) for e in by_id] == [
        ("DICOM Instances Accessed", ["dora"]),
        ("DICOM Instances Transferred", ["PACS"]),
    ]
    assert query("--patient", "hospital/7") == by_id, "the lake's patient names the same messages, given the key"
    today = dt.datetime.now(dt.UTC).date()
    assert query("--patient", "hospital/8", "--since", str(today + dt.timedelta(days=1))) == []
    assert len(query("--patient", "hospital/8", "--until", str(today))) == 2
