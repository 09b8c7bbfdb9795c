"""Tonight's chest films pulled from a DICOMweb archive (Orthanc's DICOMweb plugin) into the node's spool."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread

from xray_spark.config import DicomWebSourceSettings
from xray_spark.dev.dicom_films import encode, film
from xray_spark.node.pull import STATE, run_pull, window
from xray_spark.spool import open_spool

from . import corpus
from .dicom_peers import ORTHANC_HTTP, bridge, network_namespace, orthanc, rest

TODAY = dt.date(2026, 12, 7)
USER = ("xray", "a-password-for-the-pull")
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def _film(patient: int, date: dt.date, seed: int, **extra) -> object:
    pixels = (corpus.chest_like(64, seed).astype(np.uint16) * 16).astype(np.uint16)
    attributes = {
        "PatientID": f"PULL{patient:04d}",
        "PatientName": f"Pulled^Patient{patient}",
        "StudyDate": f"{date:%Y%m%d}",
        "StudyTime": "101500",
        "BodyPartExamined": "CHEST",
        "ViewPosition": "PA",
        **extra,
    }
    return film(pixels, bits_stored=12, modality=attributes.pop("Modality", "DX"), **attributes)


def _archive() -> tuple[list, list]:
    """(tonight's frontal chest films, the instances a pull must leave out): a CT and a lateral film in the same
    studies as tonight's films, a frontal film of a study three years old."""
    tonight = [_film(p, TODAY, seed=p) for p in (1, 2, 3)]
    ct = _film(1, TODAY, seed=11, Modality="CT", StudyInstanceUID=tonight[0].StudyInstanceUID)
    ct.SOPClassUID = ct.file_meta.MediaStorageSOPClassUID = CT_STORAGE
    lateral = _film(2, TODAY, seed=12, ViewPosition="LL", StudyInstanceUID=tonight[1].StudyInstanceUID)
    old = _film(3, TODAY - dt.timedelta(days=3 * 365), seed=13)
    return tonight, [ct, lateral, old]


def _spooled(spool) -> set[str]:
    return {p.name.removesuffix(".dcm") for p in Path(spool.incoming).iterdir()}


def test_a_pull_takes_tonights_frontal_chest_films_and_nothing_else_once(tmp_path):
    tonight, others = _archive()
    spool = open_spool(str(tmp_path / "spool"), str(tmp_path / "lake"))
    auth = tmp_path / "archive.auth"
    auth.write_text(f"Basic {USER[0]}:{USER[1]}\n")
    auth.chmod(0o600)
    wrong = tmp_path / "wrong.auth"
    wrong.write_text("Bearer not-a-token\n")
    wrong.chmod(0o600)
    with (
        network_namespace() as ns,
        bridge(ns, ORTHANC_HTTP) as http,
        orthanc(tmp_path, ns, {}, dicomweb=True, users=dict([USER])),
    ):
        for ds in tonight + others:
            rest(http, "POST", "/instances", encode(ds, "explicit-le"), auth=USER)
        source = DicomWebSourceSettings(url=f"http://127.0.0.1:{http}/dicom-web/", auth_file=str(wrong))
        refused = run_pull(source, spool, today=TODAY)
        assert not refused.complete and refused.stored == 0 and not _spooled(spool)
        assert [why for why in refused.failed] == [
            f"QIDO-RS HTTP 401 from {refused.url} (the credentials were refused)"
        ]
        assert not (Path(spool.root) / STATE).exists(), "a pull that failed records no end: the next one retries"
        source = dataclasses.replace(source, auth_file=str(auth))
        first = run_pull(source, spool, today=TODAY)
        again = run_pull(source, spool, today=TODAY)
    assert first.complete and first.stored == 3 and first.studies == 3, first
    assert first.skipped == {"view LL": 1}, "the lateral film is listed and left out; the CT is not even listed"
    assert _spooled(spool) == {str(ds.SOPInstanceUID) for ds in tonight}
    for ds in tonight:  # what the archive holds, identity included (the spool is outside the lake)
        kept = dcmread(Path(spool.incoming) / f"{ds.SOPInstanceUID}.dcm")
        assert (kept.PatientID, str(kept.PatientName), kept.StudyInstanceUID) == (
            ds.PatientID,
            str(ds.PatientName),
            ds.StudyInstanceUID,
        )
        assert np.array_equal(kept.pixel_array, ds.pixel_array)
    assert (again.stored, again.held, again.complete) == (0, 3, True), "a second pull fetches nothing again"
    assert json.loads((Path(spool.root) / STATE).read_text())["until"] == TODAY.isoformat()
    assert USER[1] not in json.dumps([refused.to_dict(), first.to_dict()])


def test_the_window_reaches_back_to_the_last_pull_that_ended(tmp_path):
    spool = open_spool(str(tmp_path / "spool"), None)
    source = DicomWebSourceSettings(url="https://pacs.example/dicom-web", days=1)
    assert window(source, spool, TODAY) == (TODAY - dt.timedelta(days=1), TODAY)
    (Path(spool.root) / STATE).write_text(json.dumps({"url": source.url, "until": "2026-12-01"}))
    assert window(source, spool, TODAY) == (dt.date(2026, 12, 1), TODAY), "the nights the archive was down"
    other = dataclasses.replace(source, url="https://other.example/dicom-web")
    assert window(other, spool, TODAY) == (TODAY - dt.timedelta(days=1), TODAY), "another archive's pulls count not"


def test_an_unreachable_archive_is_one_reason_and_no_film(tmp_path):
    from xray_spark.session import free_port

    spool = open_spool(str(tmp_path / "spool"), None)
    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    done = run_pull(DicomWebSourceSettings(url=url, timeout_seconds=5), spool, today=TODAY)
    assert not done.complete and done.stored == 0
    assert list(done.failed) == [f"cannot reach {url} (ConnectionError)"]


@pytest.mark.parametrize("text", ["ftp://pacs/x", "https://u:p@pacs/x", "https://pacs/x?y=1"])
def test_a_source_url_that_is_no_service_root_is_refused_when_the_settings_load(text):
    from xray_spark.config import load_settings
    from xray_spark.errors import ConfigError

    with pytest.raises(ConfigError, match=r"dicomweb_source\.url"):
        load_settings(None, [f"dicomweb_source.url={text}"])


def site(spark, small_model, tmp_path: Path) -> tuple[Path, object]:
    """A hospital's configuration folder (the archive's Basic credentials, a pseudonym key) and a lake whose champion
    is ``small_model``."""
    from xray_spark.lake import Lake
    from xray_spark.registry import register_model, set_alias

    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "archive.auth").write_text(f"Basic {USER[0]}:{USER[1]}\n")
    (etc / "pseudonym.key").write_text("a-dicomweb-night-key-long-enough-0123\n")
    for name in ("archive.auth", "pseudonym.key"):
        (etc / name).chmod(0o600)
    lake = Lake.at(str(tmp_path / "lake"))
    register_model(spark, lake, small_model["model_dir"], dataset="nih")
    set_alias(spark, lake, small_model["version"], reason="the archive's champion")
    return etc, lake


def night(etc: Path, *site_lines: str) -> dict:
    """The nightly flow (``--source dicom``) on the site's configuration with ``site_lines``: its summary."""
    from .conftest import TEST_OVERRIDES
    from .jobs import run_in_process

    lines = [
        "lake: ../lake",
        "dataset: hospital",
        "quarantine: {max_fraction: 0.5}",
        "privacy: {key_file: pseudonym.key, identity_dir: ../identity}",
        *site_lines,
    ]
    conf = etc / "site.yaml"
    conf.write_text("\n".join([*lines, ""]))
    overrides = [a for o in TEST_OVERRIDES for a in ("--set", o)]
    summary_path = etc.parent / "night.json"
    done = run_in_process(
        "nightly", ["--config", str(conf), "--source", "dicom", "--summary-json", str(summary_path), *overrides]
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(summary_path.read_text())


def _archive_night(spark, small_model, tmp_path: Path, films: list, *more: str):
    """A night against an Orthanc DICOMweb archive holding ``films``: the pull and STOW-RS delivery with Basic
    authentication, ``more`` lines of configuration. (The night's summary, the lake, the tags of every instance the
    archive holds after it.)"""
    etc, lake = site(spark, small_model, tmp_path)
    with (
        network_namespace() as ns,
        bridge(ns, ORTHANC_HTTP) as http,
        orthanc(tmp_path, ns, {}, dicomweb=True, users=dict([USER])),
    ):
        for ds in films:
            rest(http, "POST", "/instances", encode(ds, "explicit-le"), auth=USER)
        root = f"http://127.0.0.1:{http}/dicom-web"
        summary = night(
            etc,
            "dicom_node: {spool: ../spool}",
            f"dicomweb_source: {{url: '{root}', auth_file: archive.auth}}",
            f"deliver: {{destinations: ['dicomweb:{root}'], dicomweb_auth_file: archive.auth}}",
            *more,
        )
        held = [
            rest(http, "GET", f"/instances/{i}/simplified-tags", auth=USER)
            for i in rest(http, "GET", "/instances", auth=USER)
        ]
    return summary, lake, held


def test_a_night_pulls_from_the_archive_scores_and_stores_its_results_back_by_stow_rs(spark, small_model, tmp_path):
    """The whole round trip with a DICOMweb archive and nothing else: the night pulls tonight's films, prepares and
    scores them, and sends each film's SR back into its study by STOW-RS; the lake holds no identity."""
    tonight, others = _archive()
    today = dt.date.today()
    for ds in tonight + others[:2]:  # the night runs on today's date
        ds.StudyDate = f"{today:%Y%m%d}"
    summary, lake, held = _archive_night(spark, small_model, tmp_path, tonight + others)
    assert summary["dicomweb_pull"]["stored"] == 3 and summary["dicomweb_pull"]["complete"]
    # patient 3 is new to the lake: their film of three years ago is fetched as a prior, scored, never delivered
    assert summary["priors"]["fetched"] == 1 and summary["score"]["written"] == 4, summary["priors"]
    assert summary["deliver"]["sent"] == 3, summary["deliver"]
    srs = [t for t in held if t["Modality"] == "SR"]
    assert sorted(t["StudyInstanceUID"] for t in srs) == sorted(str(ds.StudyInstanceUID) for ds in tonight)
    needles = [v.encode() for ds in tonight for v in (str(ds.PatientName), str(ds.PatientID))]
    for path in Path(lake.root).rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not [n for n in needles if n in data], f"{path} holds identity"


def test_a_new_patients_earlier_films_are_fetched_scored_and_shown_but_never_delivered(spark, small_model, tmp_path):
    """Patient 1's first night in the lake: their three newest earlier frontal films within priors.years are
    fetched (not a fourth, older one beyond max_films, not a lateral, not one older than the years); all are
    prepared and scored, progression shows four films, and delivery sends tonight's SR only."""
    today = dt.date.today()
    years_ago = [today - dt.timedelta(days=round(365.25 * y)) for y in (1, 2, 3, 4, 8)]
    tonight = [_film(1, today, seed=21), _film(2, today, seed=22)]
    earlier = [_film(1, day, seed=30 + i) for i, day in enumerate(years_ago)]
    lateral = _film(1, years_ago[0], seed=40, ViewPosition="LL")
    expected = {str(ds.SOPInstanceUID) for ds in earlier[:3]}
    films = [*tonight, *earlier, lateral]
    summary, lake, held = _archive_night(spark, small_model, tmp_path, films, "priors: {max_films: 3, years: 5}")
    srs = [t for t in held if t["Modality"] == "SR"]
    assert summary["dicomweb_pull"]["stored"] == 2
    priors = summary["priors"]
    assert (priors["new_patients"], priors["fetched"], priors["failed"]) == (2, 3, {}), priors
    assert summary["score"]["written"] == 5 and summary["spool"]["priors"] == 3
    assert summary["deliver"]["sent"] == 2, "tonight's films only: the PACS has the priors and their reports"
    sent = spark.read.parquet(lake.table_url("deliveries")).where("status = 'sent'").select("image_id").collect()
    assert {r["image_id"] for r in sent} == {str(ds.SOPInstanceUID) for ds in tonight}
    recorded = {r["image_id"] for r in spark.read.parquet(lake.table_url("priors")).collect()}
    assert recorded == expected
    films = spark.sql(
        "SELECT patient, COUNT(DISTINCT image_id) AS films FROM xray.progression "
        "WHERE dataset = 'hospital' GROUP BY patient"
    ).collect()
    assert sorted(r["films"] for r in films) == [1, 4], films
    assert len(srs) == 2


def test_an_archive_that_will_not_page_is_asked_for_fewer_dates_and_hours_until_every_series_is_found(monkeypatch):
    """An archive that answers a full page and no further: the search halves the dates, then the hours, and finds
    every series; a single hour that still fills a page is an error, never a silent cut."""
    from xray_spark.node import pull

    monkeypatch.setattr(pull, "PAGE", 4)
    day0 = dt.date(2026, 12, 1)
    studies = [(day0 + dt.timedelta(days=d % 3), h, f"1.2.{d}.{h}") for d in range(3) for h in (1, 9, 13, 22)]

    class IgnoresOffset:
        def search_for_series(self, search_filters, limit, offset):
            since, until = (dt.datetime.strptime(x, "%Y%m%d").date() for x in search_filters["StudyDate"].split("-"))
            start, end = (int(t[:2]) for t in search_filters.get("StudyTime", "000000-235959").split("-"))
            hits = [uid for day, hour, uid in studies if since <= day <= until and start <= hour <= end]
            return [{pull.SERIES_UID: {"Value": [uid]}} for uid in hits[:limit]]  # offset ignored

    found = pull.series_search(IgnoresOffset(), {"Modality": "DX"}, day0, day0 + dt.timedelta(days=2))
    assert sorted(pull._value(s, pull.SERIES_UID) for s in found) == sorted(uid for _, _, uid in studies)
    studies += [(day0, 1, f"1.3.{k}") for k in range(4)]  # five studies in one hour: no query can page them
    with pytest.raises(pull.StuckPaging, match="pages no further"):
        pull.series_search(IgnoresOffset(), {}, day0, day0)
