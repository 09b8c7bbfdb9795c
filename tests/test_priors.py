"""A new patient's earlier films from a classic PACS: C-FIND, then C-MOVE to the node (Orthanc as the PACS)."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

from xray_spark.dev.dicom_films import encode
from xray_spark.node.priors import fetch_priors
from xray_spark.node.query_retrieve import DimseArchive
from xray_spark.spool import open_spool

from .browser import browser, pictures_decoded
from .dicom_peers import AE, ORTHANC_HTTP, Node, bridge, in_namespace, network_namespace, orthanc, rest
from .test_dicomweb_pull import _film, night, site


def _ids_of(http: int, films: list) -> list[str]:
    wanted = {str(ds.SOPInstanceUID) for ds in films}
    held = {i: rest(http, "GET", f"/instances/{i}/simplified-tags") for i in rest(http, "GET", "/instances")}
    return [i for i, tags in held.items() if tags["SOPInstanceUID"] in wanted]


def test_a_pacs_that_cannot_be_reached_is_one_reason_and_nothing_moves(tmp_path):
    """A PACS that will not answer (here: nothing listens) is one reason in the summary; nothing is fetched."""
    from xray_spark.config import PriorsSettings, load_settings
    from xray_spark.session import free_port

    port = free_port()
    settings = load_settings(None, [f"priors.pacs=PACS@127.0.0.1:{port}", "dicomweb_source.timeout_seconds=5"])
    spool = open_spool(str(tmp_path / "spool"), None)
    tonight = _film(1, dt.date.today(), seed=1)
    spool.store(str(tonight.SOPInstanceUID), encode(tonight, "explicit-le"))
    done = fetch_priors(PriorsSettings(), spool, set(), b"k" * 32, DimseArchive.of(settings))
    assert (done.new_patients, done.asked, done.fetched) == (1, 1, 0)
    reason = f"association with PACS@127.0.0.1:{port} aborted (no connection, or no answer)"
    assert done.failed == {reason: 1}, done.failed


def test_a_new_patients_earlier_films_come_from_a_classic_pacs_by_c_find_and_c_move(spark, small_model, tmp_path):
    """Orthanc holds patient 1's three earlier frontal films (and a lateral one) and routes tonight's films to the
    node. The night asks Orthanc (C-FIND) and has it move the three to the node (C-MOVE): they are prepared, scored,
    shown on the patient's page as priors; progression shows four films; delivery (C-STORE) sends tonight's SRs
    only; the lake holds no identity."""
    today = dt.date.today()
    tonight = [_film(1, today, seed=51), _film(2, today, seed=52)]
    earlier = [_film(1, today - dt.timedelta(days=round(365.25 * y)), seed=60 + y) for y in (1, 2, 3)]
    lateral = _film(1, today - dt.timedelta(days=200), seed=70, ViewPosition="LL")
    etc, lake = site(spark, small_model, tmp_path)
    with network_namespace() as ns:
        node = Node(tmp_path / "node", prefix=in_namespace(ns))
        with (
            orthanc(tmp_path, ns, {"xray": [AE, "127.0.0.1", node.port]}),
            bridge(ns, 4242) as dicom,
            bridge(ns, ORTHANC_HTTP) as http,
        ):
            node.start()
            try:
                for ds in [*tonight, *earlier, lateral]:
                    rest(http, "POST", "/instances", encode(ds, "explicit-le"))
                routed = {"Resources": _ids_of(http, tonight), "Synchronous": True}
                assert (
                    rest(http, "POST", "/modalities/xray/store", json.dumps(routed).encode())["FailedInstancesCount"]
                    == 0
                )
                pacs = f"ORTHANC@127.0.0.1:{dicom}"
                summary = night(
                    etc,
                    f"dicom_node: {{spool: '{node.spool}', ae_title: {AE}}}",
                    f"priors: {{pacs: '{pacs}', max_films: 3, years: 5}}",
                    f"deliver: {{destinations: ['{pacs}']}}",
                )
                held = [rest(http, "GET", f"/instances/{i}/simplified-tags") for i in rest(http, "GET", "/instances")]
            finally:
                node.stop()
    priors = summary["priors"]
    assert (priors["archive"], priors["new_patients"], priors["fetched"], priors["failed"]) == (pacs, 2, 3, {}), priors
    assert priors["skipped"] == {"view LL": 1}, "the lateral film is found and not moved"
    assert summary["score"]["written"] == 5 and summary["spool"]["priors"] == 3
    assert summary["deliver"]["sent"] == 2, "tonight's films only: the PACS has the priors and their reports"
    srs = [t for t in held if t["Modality"] == "SR"]
    assert sorted(t["StudyInstanceUID"] for t in srs) == sorted(str(ds.StudyInstanceUID) for ds in tonight)
    recorded = {r["image_id"] for r in spark.read.parquet(lake.table_url("priors")).collect()}
    assert recorded == {str(ds.SOPInstanceUID) for ds in earlier}
    counts = spark.sql(
        "SELECT patient, COUNT(DISTINCT image_id) AS films FROM xray.progression "
        "WHERE dataset = 'hospital' GROUP BY patient"
    ).collect()
    assert sorted(r["films"] for r in counts) == [1, 4], counts
    needles = [v.encode() for ds in [*tonight, *earlier] for v in (str(ds.PatientName), str(ds.PatientID))]
    for path in Path(lake.root).rglob("*"):
        if path.is_file():
            assert not [n for n in needles if n in path.read_bytes()], f"{path} holds identity"
    _the_patient_page_marks_the_priors(summary, recorded, tmp_path)


def _the_patient_page_marks_the_priors(summary: dict, priors: set[str], tmp_path: Path) -> None:
    """The night's static page of the patient with four films, in Chromium: four pictures, three marked prior."""
    pages = Path(summary["worklist"]["page"]).parent / "patients"
    (page,) = [p for p in pages.glob("*.html") if p.read_text().count('class="patient-film"') == 4]
    html = page.read_text()
    marked = re.findall(r"<td>([0-9.]+) <span class=\"prior\"", html)
    assert sorted(marked) == sorted(priors), "the three earlier films, and only they, are marked"
    driver = browser()
    try:
        driver.get(page.as_uri())
        pictures_decoded(driver)
        labels = driver.find_elements("css selector", "tr.patient-film span.prior")
        assert len(labels) == 3 and all(label.is_displayed() and label.text == "prior" for label in labels)
        shot = tmp_path / "patient-with-priors.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
    finally:
        driver.quit()
