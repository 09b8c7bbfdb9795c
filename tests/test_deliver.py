"""Results back to the PACS: SRs and SCs into each film's study, through a real Orthanc, once each, retried.

The lake is a DICOM demo export prepared and scored here, with a small model as its champion.
Orthanc runs in a network namespace of its own (its DICOM port cannot be bound to loopback);
:func:`dicom_peers.bridge` makes its ports reachable from this process on 127.0.0.1 only.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import io
import json
import shutil
import subprocess
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydicom import dcmread
from pyspark.sql import functions as F

from xray_spark import privacy, registry
from xray_spark.deliver import record
from xray_spark.deliver.objects import FilmResult, ModelFacts, Region, banner_height, build_sr
from xray_spark.deliver.pipeline import run_delivery
from xray_spark.deliver.summary import deliver_summary_text
from xray_spark.dev.dicom_archive import write_dicom_archive
from xray_spark.errors import UsageError
from xray_spark.imaging.decode import display_image
from xray_spark.labels import probability_column
from xray_spark.lake import Lake
from xray_spark.prepare import PrepareInputs, run_prepare
from xray_spark.score.pipeline import run_scoring
from xray_spark.session import free_port
from xray_spark.uids import result_uid

from .conftest import make_settings, shifted_model
from .corpus import planted_identity
from .dicom_peers import (
    ORTHANC_HTTP,
    bridge,
    dciodvfy,
    make_pki,
    need,
    network_namespace,
    orthanc,
    rest,
    running_node,
    sr_validator,
)
from .jobs import kill_when

KEY = "a-delivery-test-key-long-enough-77"
DATASET = "hospital"


@pytest.fixture(scope="module")
def hospital(spark, small_model, tmp_path_factory):
    """A DICOM export prepared and scored by the champion, with heatmaps: (settings, lake, export)."""
    root = tmp_path_factory.mktemp("deliver")
    write_dicom_archive(root / "archive", n_images=20, size=64, seed=21, labelled=0.0)
    lake_dir = root / "lake"
    overrides = ["dataset=hospital", "quarantine.max_fraction=0.5", "score.heatmaps=top:100"]
    settings = make_settings(lake_dir, *overrides, "deliver.timeout_seconds=15", "deliver.record_every=4")
    lake = Lake.at(settings.lake)
    mp = pytest.MonkeyPatch()
    mp.setenv("XRAY_SPARK_PSEUDONYM_KEY", KEY)
    try:
        run_prepare(spark, lake, settings, PrepareInputs(None, str(root / "archive" / "export"), source="dicom"))
    finally:
        mp.undo()
    registry.register_model(spark, lake, small_model["model_dir"], dataset="nih")
    registry.set_alias(spark, lake, small_model["version"], reason="the delivery tests' model")
    run_scoring(spark, lake, settings, new_only=True)
    return settings, lake, root / "archive" / "export"


def _predictions(spark, lake: Lake, version: str | None = None) -> dict[str, dict]:
    rows = spark.read.parquet(lake.table_url("predictions")).where(F.col("dataset") == DATASET)
    if version is not None:
        rows = rows.where(F.col("model_version") == version)
    return {r["image_id"]: r.asDict() for r in rows.collect()}


def _instances(port: int) -> dict[str, dict]:
    """Orthanc's instances: id -> simplified tags."""
    return {i: rest(port, "GET", f"/instances/{i}/simplified-tags") for i in rest(port, "GET", "/instances")}


def _check_sr(path: Path, prediction: dict, labels: list[str]) -> None:
    """dsrdump reads it; highdicom reads back each finding's probability and whether it is called."""
    import highdicom as hd

    dumped = subprocess.run([need("dsrdump"), str(path)], capture_output=True, text=True, timeout=60)
    assert dumped.returncode == 0 and "Comprehensive SR" in dumped.stdout, dumped.stderr[-500:]
    assert "E:" not in dumped.stderr, dumped.stderr[-500:]
    groups = hd.sr.srread(path).content.get_image_measurement_groups()
    by_finding = {g.tracking_identifier: g for g in groups}
    assert sorted(by_finding) == sorted(labels)
    for finding, group in by_finding.items():
        (measurement,) = group.get_measurements()
        assert measurement.value == pytest.approx(prediction[probability_column(finding)], abs=1e-6)
        (called,) = group.get_qualitative_evaluations()
        assert called.value.meaning == ("Present" if finding in prediction["called"] else "Absent")


def test_results_reach_each_study_once_even_when_orthanc_stops_mid_way(spark, hospital, small_model, tmp_path):
    need("Orthanc")
    settings, lake, _ = hospital
    films = privacy.read_film_map(settings.privacy, DATASET)
    predictions = _predictions(spark, lake)
    assert len(films) == len(predictions) >= 18
    stopped, peer = threading.Event(), {}

    def stop_orthanc(sent: int) -> None:  # after a few films' objects, Orthanc is killed mid-association
        if sent > 2_500_000 and not stopped.is_set():  # about three films: an SC is 512 x 512 RGB
            stopped.set()
            peer["proc"].kill()
            peer["proc"].wait()

    def deliver() -> dict:
        target = f"ORTHANC@127.0.0.1:{dicom_port}"
        return run_delivery(spark, lake, settings, destinations=[target], secondary_capture=True, display=display_image)

    with network_namespace() as ns, bridge(ns, 4242, stop_orthanc) as dicom_port, bridge(ns, ORTHANC_HTTP) as http:
        with orthanc(tmp_path, ns, {}) as proc:
            peer["proc"] = proc
            for path, _ in films.values():
                rest(http, "POST", "/instances", Path(path).read_bytes())
            first = deliver()
        assert stopped.is_set() and first["sent"] > 0 and first["failed"] > 0, first
        assert first["sent"] + first["failed"] == len(films)
        state = record.state(spark, lake, DATASET, small_model["version"]).collect()
        assert sorted(r["status"] for r in state) == sorted(["sent"] * first["sent"] + ["failed"] * first["failed"])
        with orthanc(tmp_path, ns, {}):  # started again on what the first one stored
            held_before = {t["SOPInstanceUID"] for t in _instances(http).values()}
            sent_first = {r["image_id"] for r in state if r["status"] == "sent"}
            second = deliver()
            assert (second["to_deliver"], second["sent"], second["failed"]) == (first["failed"], first["failed"], 0)
            instances = _instances(http)
            by_uid = {tags["SOPInstanceUID"]: (i, tags) for i, tags in instances.items()}
            assert len(instances) == 3 * len(films), "each film, its SR and its SC: nothing twice"
            for sop_uid in films:
                film = by_uid[sop_uid][1]
                results = [t for t in instances.values() if t["StudyInstanceUID"] == film["StudyInstanceUID"]]
                kinds = sorted(t["Modality"] for t in results if t["SOPInstanceUID"] != sop_uid)
                assert kinds.count("SR") == 1 and len(kinds) == 2, kinds
                for tags in results:
                    assert (tags["PatientID"], tags["PatientName"]) == (film["PatientID"], film["PatientName"])
                sr_tags = next(t for t in results if t["Modality"] == "SR")
                path = tmp_path / f"{sop_uid}.sr.dcm"
                path.write_bytes(rest(http, "GET", f"/instances/{by_uid[sr_tags['SOPInstanceUID']][0]}/file"))
                _check_sr(path, predictions[sop_uid], list(registry.resolve_model(spark, lake).labels))
            # what the first run recorded as sent was held by Orthanc when it was killed
            version = small_model["version"]
            assert {result_uid(settings.deliver.uid_root, uid, version, "sr") for uid in sent_first} <= held_before
            third = deliver()
            assert third["to_deliver"] == 0 and len(_instances(http)) == len(instances)
            _the_viewer_link_opens_the_study_in_orthanc(lake, settings, http, tmp_path)


def _the_viewer_link_opens_the_study_in_orthanc(lake: Lake, settings, http: int, tmp_path: Path) -> None:
    """In Chromium, signed in to the web app: a film's viewer link (Orthanc's classic explorer, which wants Orthanc's
    own study id: the app asks Orthanc's /tools/lookup) opens the film's study in Orthanc, with its radiograph and
    the delivered SR among its series."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    from xray_spark.session import free_port

    from .browser import browser
    from .test_web import PASSWORD, _sign_in, _web

    state, port = tmp_path / "web-state", free_port()
    orthanc_url = f"http://127.0.0.1:{http}"
    viewer = [
        f"worklist.viewer_url={orthanc_url}/app/explorer.html#study?uuid={{orthanc_study}}",
        f"worklist.viewer_lookup={orthanc_url}",
        f"privacy.identity_dir={settings.privacy.identity_dir}",
    ]
    app = {"state": state, "lake": Path(lake.root), "port": port, "extra": viewer}
    assert _web("add-user", "erin", **app, stdin=PASSWORD + "\n").returncode == 0
    started = _web("start", **app)
    assert started.returncode == 0, started.stderr
    driver = browser()
    try:
        home = started.stdout.strip()
        driver.get(home)
        _sign_in(driver, "erin", home)
        driver.find_element(By.CSS_SELECTOR, "ul.days a").click()
        row = WebDriverWait(driver, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "tr.film-row"))[0]
        image_id = row.get_attribute("data-id")
        row.find_element(By.CSS_SELECTOR, "a.viewer").click()
        WebDriverWait(driver, 30).until(lambda d: "/app/explorer.html#study?uuid=" in d.current_url)
        study = rest(http, "GET", f"/studies/{driver.current_url.rsplit('uuid=', 1)[1]}")
        WebDriverWait(driver, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#list-series li")) >= 2)
        shown = driver.find_element(By.ID, "list-series").text
        driver.save_screenshot(str(tmp_path / "orthanc-study.png"))
    finally:
        driver.quit()
        assert _web("stop", **app).returncode == 0
    instances = {i: rest(http, "GET", f"/instances/{i}/simplified-tags") for i in rest(http, "GET", "/instances")}
    film = next(t for t in instances.values() if t["SOPInstanceUID"] == image_id)
    assert study["MainDicomTags"]["StudyInstanceUID"] == film["StudyInstanceUID"], "the film's own study"
    assert "SR" in shown and film["Modality"] in shown, f"the radiograph and the delivered SR: {shown!r}"


def _deliver_with_scs(spark, lake: Lake, settings, out: Path) -> dict:
    """The champion's results delivered with SCs into the folder ``out``: the summary."""
    summary = run_delivery(
        spark, lake, settings, destinations=[f"folder:{out}"], secondary_capture=True, display=display_image
    )
    assert summary["sent"] == summary["to_deliver"] > 0 and summary["failed"] == 0
    return summary


@pytest.fixture(scope="module")
def delivered(spark, hospital, tmp_path_factory) -> tuple[Path, dict]:
    """The hospital's results delivered once with SCs into a folder, which the SC and validator tests both read:
    (the folder, the summary)."""
    settings, lake, _ = hospital
    out = tmp_path_factory.mktemp("delivered") / "results"
    return out, _deliver_with_scs(spark, lake, settings, out)


def _read_scs(spark, lake: Lake, settings, out: Path, summary: dict) -> dict[str, int]:
    """Each SC's pixels in ``out`` read against the tables: a film with a call shows its riskiest called finding's
    map (hot where the map is hot, gray where cold, the box in yellow, the colour scale in the band); a film with
    none called shows no colour at all. Counts of each."""
    maps = spark.read.parquet(lake.table_url("heatmaps")).where(F.col("dataset") == DATASET).collect()
    films = privacy.read_film_map(settings.privacy, DATASET)
    version = summary["model_version"]
    predictions = _predictions(spark, lake, version)
    seen = {"drawn": 0, "cold_gray": 0, "none_called": 0}
    for path in sorted(out.glob("*.dcm")):
        ds = dcmread(path)
        if ds.Modality != "OT" and ds.SOPClassUID != "1.2.840.10008.5.1.4.1.1.7":
            continue
        film = str(ds.SourceImageSequence[0].ReferencedSOPInstanceUID)
        picture = ds.pixel_array.astype(int)
        cv2.imwrite(str(out / f"{film}.png"), picture[:, :, ::-1].astype(np.uint8))
        colour = picture.max(axis=2) - picture.min(axis=2)  # 0 on a gray film, large where the map is blended
        p, called = predictions[film], set(predictions[film]["called"] or ())
        if not called:  # a finding that is not called is never drawn, however hot its map
            top = banner_height(picture.shape[1], 2)
            assert colour[top:].max() <= 2 and ds.ImageComments.endswith("no finding called"), ds.ImageComments
            seen["none_called"] += 1
            continue
        # the riskiest called finding with a map: the risk finding where it is called, else the likeliest
        mapped = [m for m in maps if m["image_id"] == film and m["finding"] in called and m["model_version"] == version]
        region = max(mapped, key=lambda m: (m["finding"] == p["risk_finding"], m["probability"]), default=None)
        if region is None:
            continue
        assert f"{region['finding']} p=" in ds.ImageComments, (region["finding"], ds.ImageComments)
        top = banner_height(picture.shape[1], 3)
        scale = picture.shape[1] / dcmread(films[film][0], stop_before_pixels=True).Columns  # the films are square
        stored = cv2.imdecode(np.frombuffer(region["heatmap_png"], np.uint8), cv2.IMREAD_GRAYSCALE)
        if stored.max() == 0:
            continue  # a flat map (Grad-CAM's gradient was 0): nothing to blend in
        heat = cv2.resize(stored, picture.shape[1::-1], interpolation=cv2.INTER_LINEAR)[top:] / 255.0  # below the band
        x, y, w, h = (round(region[k] * scale) for k in ("box_x", "box_y", "box_w", "box_h"))
        outline = np.zeros(picture.shape[:2], np.uint8)  # the yellow box may cross cold parts of the map
        cv2.rectangle(outline, (x, y), (x + w, y + h), 1, max(1, picture.shape[1] // 256) + 4)
        hot, cold = heat >= 0.4, (heat < 0.1) & (outline[top:] == 0)
        assert colour[top:][hot].mean() > 20, "where the map is hot the film is coloured"
        if cold.any():  # a diffuse map may be warm everywhere outside its box
            assert colour[top:][cold].mean() < 3, "where the map is cold the film stays gray"
            seen["cold_gray"] += 1
        if y > top + 2:  # the box's top edge, unless the banner covers it
            edges = picture[y - 1 : y + 2, x : x + w]
            yellow = (edges[..., 0] > 200) & (edges[..., 1] > 200) & (edges[..., 2] < 80)
            assert yellow.mean(axis=1).max() > 0.8, "the hot box is outlined in yellow"
        band = picture[:top]
        assert (band.mean(axis=2) > 200).mean() > 0.02 and (band.mean(axis=2) < 20).mean() > 0.5, "white on black"
        assert (band.max(axis=2) - band.min(axis=2) > 100).sum() > 50, "the colour scale is in the band"
        seen["drawn"] += 1
    return seen


def test_the_secondary_capture_shows_the_heatmap_where_the_table_says_and_the_lake_holds_no_identity(
    spark, hospital, delivered, small_model, tmp_path
):
    settings, lake, export = hospital
    shown = _read_scs(spark, lake, settings, *delivered)
    assert sum(shown.values()) >= 15, shown  # each film's SC: with its called finding's map, or none called
    # The same films scored by a copy of the champion whose calibration calls more (3 logits higher): SCs whose
    # called finding's map is drawn, whatever the run's small model calls on these films
    root = tmp_path / "calls"
    shutil.copytree(lake.root, root / "lake", ignore=shutil.ignore_patterns("locks"))
    shutil.copytree(settings.privacy.identity_dir, root / "lake-identity")
    keen = make_settings(root / "lake", "dataset=hospital", "quarantine.max_fraction=0.5", "score.heatmaps=top:100")
    mine = Lake.at(str(root / "lake"))
    copy, version = shifted_model(small_model["model_dir"], tmp_path / "keen-model", "keen")
    registry.register_model(spark, mine, copy, dataset="nih")
    registry.set_alias(spark, mine, version, reason="a champion that calls more")
    run_scoring(spark, mine, keen, new_only=True)
    keen_out = tmp_path / "keen-results"
    called = _read_scs(spark, mine, keen, keen_out, _deliver_with_scs(spark, mine, keen, keen_out))
    assert called["drawn"] >= 3, called
    needles = [v.encode() for v in planted_identity(export)]
    assert len(needles) > 20
    for path in Path(lake.root).rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not [n for n in needles if n in data], f"{path} holds identity"
    exported = {p.name for p in export.rglob("*")}
    assert not exported & {p.name for p in Path(lake.root).rglob("*")}, "no file or folder name of the export"


def test_stow_rs_puts_one_sr_per_film_into_its_study_and_a_rerun_adds_none(spark, hospital, tmp_path):
    """DICOMweb delivery to Orthanc's DICOMweb plugin, with Basic authentication from a file outside the lake: a
    refused password stores nothing and says so; the right one stores each film's SR in the film's study; a rerun
    sends nothing."""
    need("Orthanc")
    settings, lake, _ = hospital
    films = privacy.read_film_map(settings.privacy, DATASET)
    user = ("xray", "a-password-for-the-test")
    wrong, right = tmp_path / "wrong.auth", tmp_path / "right.auth"
    wrong.write_text("Basic xray:not-the-password\n")
    right.write_text(f"Basic {user[0]}:{user[1]}\n")
    for path in (wrong, right):
        path.chmod(0o600)
    target = None

    def deliver(auth: Path) -> dict:
        options = dataclasses.replace(settings.deliver, dicomweb_auth_file=str(auth))
        return run_delivery(spark, lake, dataclasses.replace(settings, deliver=options), destinations=[target])

    with (
        network_namespace() as ns,
        bridge(ns, ORTHANC_HTTP) as http,
        orthanc(tmp_path, ns, {}, dicomweb=True, users=dict([user])),
    ):
        for path, _ in films.values():
            rest(http, "POST", "/instances", Path(path).read_bytes(), auth=user)
        target = f"dicomweb:http://127.0.0.1:{http}/dicom-web/"
        refused = deliver(wrong)
        assert refused["sent"] == 0 and refused["failed"] == len(films), refused
        assert any("credentials were refused" in reason for reason in refused["errors"]), refused["errors"]
        first = deliver(right)
        assert (first["sent"], first["failed"]) == (len(films), 0), first
        again = deliver(right)
        assert again["to_deliver"] == 0 and again.get("sent", 0) == 0, again
        tags = [
            rest(http, "GET", f"/instances/{i}/simplified-tags", auth=user)
            for i in rest(http, "GET", "/instances", auth=user)
        ]
    studies = {t["SOPInstanceUID"]: t["StudyInstanceUID"] for t in tags}
    srs = [t for t in tags if t["Modality"] == "SR"]
    assert len(srs) == len(films), "one SR per film, none twice"
    assert collections.Counter(t["StudyInstanceUID"] for t in srs) == collections.Counter(studies[f] for f in films)
    assert user[1] not in json.dumps([refused, first]), "the credentials are in no summary"
    from xray_spark import audit

    sent = [e for e in audit.read(settings.audit.file) if e.event == "DICOM Instances Transferred" and e.action == "R"]
    patients = {str(dcmread(path, stop_before_pixels=True).PatientID) for path, _ in films.values()}
    assert any(set(e.patients) == patients and set(e.studies) == set(studies[f] for f in films) for e in sent), sent


def test_delivery_over_tls_reaches_a_pacs_it_trusts_and_sends_nothing_to_one_it_does_not(spark, hospital, tmp_path):
    """Orthanc speaking DICOM over TLS and asking for a client certificate: delivery that does not trust Orthanc's
    certificate sends nothing; with the site's authority and its own certificate, each film's SR arrives once."""
    need("Orthanc")
    settings, lake, _ = hospital
    films = privacy.read_film_map(settings.privacy, DATASET)
    pki = make_pki(tmp_path / "pki")
    tls = {
        "DicomTlsEnabled": True,
        "DicomTlsCertificate": str(pki["server"]),
        "DicomTlsPrivateKey": str(pki["server_key"]),
        "DicomTlsTrustedCertificates": str(pki["ca"]),
        "DicomTlsRemoteCertificateRequired": True,
    }

    def deliver(port: int, authority: Path) -> dict:
        options = dataclasses.replace(
            settings.deliver, tls_ca_file=str(authority), tls_cert=str(pki["client"]), tls_key=str(pki["client_key"])
        )
        target = f"tls:ORTHANC@127.0.0.1:{port}"
        return run_delivery(spark, lake, dataclasses.replace(settings, deliver=options), destinations=[target])

    with (
        network_namespace() as ns,
        bridge(ns, 4242) as dicom_port,
        bridge(ns, ORTHANC_HTTP) as http,
        orthanc(tmp_path, ns, {}, more=tls),
    ):
        doubting = deliver(dicom_port, pki["stranger"])  # Orthanc's certificate is not the stranger's
        assert doubting["sent"] == 0 and doubting["failed"] == len(films), doubting
        assert not rest(http, "GET", "/instances"), "nothing reached a PACS whose certificate was not trusted"
        trusting = deliver(dicom_port, pki["ca"])
        assert (trusting["sent"], trusting["failed"]) == (len(films), 0), trusting
        held = [rest(http, "GET", f"/instances/{i}/simplified-tags") for i in rest(http, "GET", "/instances")]
    assert sorted(t["Modality"] for t in held) == ["SR"] * len(films)


def test_every_object_delivered_passes_the_standard_validators(delivered):
    """dicom3tools' dciodvfy finds no error in any SR or SC delivery writes, and pixelmed's DicomSRValidator
    (``-checktemplateid``) none in an SR whose findings carry a hot region and one whose none do. The warnings left
    are the ones docs/conformance.md lists, and no other."""
    out, summary = delivered
    objects = {path: dcmread(path, stop_before_pixels=True) for path in sorted(out.glob("*.dcm"))}
    srs = [p for p, ds in objects.items() if ds.Modality == "SR"]
    scs = [p for p, ds in objects.items() if ds.Modality == "OT"]
    assert len(srs) == summary["sent"] > 0 and len(scs) > 0
    from xray_spark.uids import IMPLEMENTATION_CLASS_UID

    assert {ds.file_meta.ImplementationClassUID for ds in objects.values()} == {IMPLEMENTATION_CLASS_UID}
    allowed = {"Warning - Unrecognized defined term <99XRAYSPARK> for value 1 of attribute <Coding Scheme Designator>"}
    for path in srs + scs:
        errors, warnings = dciodvfy(path)
        assert not errors, (path.name, errors)
        assert set(warnings) <= allowed, (path.name, warnings)
    most = max(srs, key=lambda p: p.read_bytes().count(b"Outline"))  # the code meaning, once per region
    assert b"Outline" in most.read_bytes(), "the films have heatmaps (score.heatmaps=top:100)"
    _assert_sr_validator_passes(most)


def _assert_sr_validator_passes(path: Path) -> None:
    """pixelmed finds no error; its only warnings are the called-or-not evaluations outside its TID 1501."""
    errors, warnings = sr_validator(path)
    assert not errors, (path.name, errors)
    assert warnings and all(w.endswith("Content Item not in template") and "/CODE" in w for w in warnings), warnings


def test_an_sr_with_no_region_or_exactly_one_passes_pixelmeds_template_check(tmp_path):
    """The two reports pixelmed's TID 1500 check is most likely to misread: no finding with a region, and exactly one
    (a report mixing per-finding groups with one region group of its own was read as all region groups)."""
    write_dicom_archive(tmp_path / "archive", n_images=1, size=64, seed=5, labelled=0.0)
    (film,) = (tmp_path / "archive" / "export").glob("PT*/ST*/SE*/IM*")
    labels = ("Atelectasis", "Effusion", "Pleural_Thickening")
    model = ModelFacts("v1", "small_cnn", labels, dict.fromkeys(labels, 0.5), "youden", "0")
    heat = cv2.imencode(".png", np.full((8, 8), 200, np.uint8))[1].tobytes()
    region = Region("Effusion", 0.7, (4.0, 4.0, 20.0, 20.0), heat)
    probabilities = {"Atelectasis": 0.2, "Effusion": 0.7, "Pleural_Thickening": 0.6}
    for name, regions in (("none", ()), ("one", (region,))):
        result = FilmResult("1.2.3", probabilities, frozenset({"Effusion", "Pleural_Thickening"}), regions, "Effusion")
        path = tmp_path / f"{name}.dcm"
        build_sr(dcmread(film), result, model, "1.2.826.0.1.3680043.10.999").save_as(path)
        assert path.read_bytes().count(b"Outline") == len(regions)
        errors, warnings = dciodvfy(path)
        assert not errors and len(warnings) == 3, (errors, warnings)  # the local scheme: declared, used twice
        _assert_sr_validator_passes(path)


def test_the_burnt_in_heatmap_colours_only_where_the_map_is_hot():
    """A map hot in one square and cold elsewhere, on a 300 x 200 film: coloured in the square, gray elsewhere, its
    box outlined in yellow (the map covers the film padded to a square, as the heatmaps table stores it)."""
    from xray_spark.deliver.objects import FilmResult, ModelFacts, Region, banner_height, burn_in, caption

    film = np.full((300, 200), 128, np.uint8)
    heat = np.zeros((100, 100), np.uint8)
    heat[20:40, 40:60] = 255  # rows 60-120, columns 70-130 of the film (padded by 50 columns each side)
    region = Region("Nodule", 0.9, (70.0, 60.0, 60.0, 60.0), cv2.imencode(".png", heat)[1].tobytes())
    result = FilmResult("1.2.3", {"Nodule": 0.9}, frozenset({"Nodule"}), (region,), "Nodule")
    model = ModelFacts("v1", "small_cnn", ("Nodule",), {"Nodule": 0.5}, "youden", "0")
    picture = burn_in(film, result, model, max_side=300).astype(int)
    colour = picture.max(axis=2) - picture.min(axis=2)
    assert picture.shape == (300, 200, 3)
    assert colour[70:110, 80:120].mean() > 60, "the hot square is coloured"
    cold = np.ones(colour.shape, bool)
    cold[: banner_height(200, 3)], cold[50:130, 60:140] = False, False  # the band, the square with its box and blur
    assert colour[cold].max() == 0 and (picture[cold][:, 0] == 128).all(), "the cold film stays as it was"
    edge = picture[60, 75:125]
    assert ((edge[:, 0] > 200) & (edge[:, 1] > 200) & (edge[:, 2] < 80)).all(), "the hot box is outlined in yellow"
    # the same map of a finding that is not called: not drawn at all, and the band says so
    quiet = FilmResult("1.2.3", {"Nodule": 0.09}, frozenset(), (region,), "Nodule")
    picture = burn_in(film, quiet, model, max_side=300).astype(int)
    top = banner_height(200, 2)
    assert (picture[top:] == 128).all() and caption(quiet) == "no finding called"


def test_a_moved_or_changed_source_and_a_refusing_node_are_recorded_and_nothing_else_is_lost(spark, hospital, tmp_path):
    settings, lake, _ = hospital
    films = privacy.read_film_map(settings.privacy, DATASET)
    native = [
        (uid, p) for uid, (p, _) in sorted(films.items()) if not dcmread(p).file_meta.TransferSyntaxUID.is_compressed
    ]
    (moved_uid, moved), (changed_uid, changed) = native[:2]
    original = {p: Path(p).read_bytes() for p in (moved, changed)}
    Path(moved).rename(moved + ".away")
    ds = dcmread(changed)
    ds.PixelData = bytes(b ^ 0xFF for b in ds.PixelData)
    ds.save_as(changed)
    try:
        summary = run_delivery(spark, lake, settings, destinations=[f"folder:{tmp_path / 'out'}"])
        state = {r["image_id"]: r for r in _state(spark, lake, f"folder:{tmp_path / 'out'}")}
        assert state[moved_uid]["status"] == state[changed_uid]["status"] == "failed"
        assert state[moved_uid]["error"].startswith("source file moved")
        assert "pixel data differ" in state[changed_uid]["error"]
        assert summary["sent"] == len(films) - 2 and summary["failed"] == 2
        with running_node(tmp_path / "node") as node:  # our own node takes radiographs only, never an SR
            refused = run_delivery(spark, lake, settings, destinations=[f"XRAY_SPARK@127.0.0.1:{node.port}"])
        assert refused["failed"] == len(films) and "refused Comprehensive SR Storage" in next(iter(refused["errors"]))
    finally:
        for path, data in original.items():
            Path(path).write_bytes(data)
            Path(path + ".away").unlink(missing_ok=True)
    again = run_delivery(spark, lake, settings, destinations=[f"folder:{tmp_path / 'out'}"])
    assert (again["to_deliver"], again["sent"]) == (2, 2), "the two films are delivered once their files are back"


def test_a_source_gone_for_good_is_given_up_once_and_the_nights_go_green(spark, hospital, tmp_path):
    import dataclasses

    settings, lake, _ = hospital
    settings = dataclasses.replace(settings, deliver=dataclasses.replace(settings.deliver, give_up_after_attempts=2))
    films = privacy.read_film_map(settings.privacy, DATASET)
    gone_uid, (gone, _) = sorted(films.items())[0]
    destination = f"folder:{tmp_path / 'gone'}"
    Path(gone).rename(gone + ".away")
    try:
        first = run_delivery(spark, lake, settings, destinations=[destination])
        assert first["failed"] == 1 and first["given_up"] == 0  # the first night: it may come back
        second = run_delivery(spark, lake, settings, destinations=[destination])
        assert (second["to_deliver"], second["failed"], second["given_up"]) == (1, 0, 1)
        assert next(iter(second["given_up_reasons"])).startswith("source file moved")
        third = run_delivery(spark, lake, settings, destinations=[destination])
        assert third["to_deliver"] == 0 and not third.get("failed"), "given up once, not every night"
        rows = spark.read.parquet(lake.table_url("deliveries")).where(
            (F.col("destination") == destination) & (F.col("image_id") == gone_uid) & (F.col("status") == "given_up")
        )
        assert rows.count() == 1
    finally:
        Path(gone + ".away").rename(gone)
    back = run_delivery(spark, lake, settings, destinations=[destination], retry_given_up=True)
    assert (back["to_deliver"], back["sent"]) == (1, 1), "the file is back: tried again when asked"


def test_a_destination_down_longer_than_retry_days_is_given_up_once_and_fails_no_later_night(
    spark, hospital, monkeypatch
):
    """A destination that never answers: each run retries its films (and fails) for ``deliver.retry_days`` after
    their first try; the first run after that records each film given up with the reason, and fails nothing."""
    settings, lake, _ = hospital
    down = f"NOBODY@127.0.0.1:{free_port()}"  # nothing listens there
    first = run_delivery(spark, lake, settings, destinations=[down])
    films = first["to_deliver"]
    assert films > 0 and first["failed"] == films and first["retried"] == 0 and first["aged_out"] == 0
    second = run_delivery(spark, lake, settings, destinations=[down])  # the next night: tried again, still failing
    assert (second["to_deliver"], second["retried"], second["failed"]) == (films, films, films)
    later = record.now() + dt.timedelta(days=settings.deliver.retry_days, hours=1)
    monkeypatch.setattr(record, "now", lambda: later)
    aged = run_delivery(spark, lake, settings, destinations=[down])
    assert (aged["to_deliver"], aged["aged_out"], aged.get("failed", 0)) == (0, films, 0)
    reasons = aged["aged_out_reasons"]
    assert sum(reasons.values()) == films
    assert all(r.startswith("not delivered within 7 days of its first try") for r in reasons)
    assert all(down in r for r in reasons), "each names the last failure: the destination that did not answer"
    assert "given up x" in deliver_summary_text(aged)
    again = run_delivery(spark, lake, settings, destinations=[down])
    assert (again["to_deliver"], again["aged_out"]) == (0, 0), "given up once, not every night"
    rows = _state(spark, lake, down)
    assert len(rows) == films and {r["status"] for r in rows} == {"given_up"}


class MemorySender:
    """A destination kind of the test's own: objects kept in a dict, or every connection refused."""

    def __init__(self, destination, options) -> None:
        self.inbox = INBOXES.setdefault(destination.address, {})
        self.down = destination.address.startswith("down")
        self.closed = False

    def send(self, data: bytes, sop_class: str, uid: str):
        from xray_spark.deliver.send import FailureKind, SendFailure

        if self.down:
            return SendFailure(FailureKind.UNREACHABLE, "memory store is down")
        self.inbox[uid] = (sop_class, data)
        return None

    def close(self) -> None:
        self.closed = True


INBOXES: dict[str, dict] = {}


def test_a_new_destination_kind_is_a_parser_and_a_sender_and_delivery_is_unchanged(spark, hospital, monkeypatch):
    from xray_spark import destinations
    from xray_spark.deliver import pipeline, send

    def memory(rest):
        return destinations.Destination(name=f"memory:{rest}", kind="memory", address=rest)

    monkeypatch.setitem(destinations.PREFIXES, "memory:", memory)
    monkeypatch.setitem(send.SENDERS, "memory", MemorySender)
    settings, lake, _ = hospital
    films = privacy.read_film_map(settings.privacy, DATASET)
    summary = run_delivery(spark, lake, settings, destinations=["memory:inbox"])
    assert summary["sent"] == len(films) and len(INBOXES["inbox"]) == len(films)
    assert {sop for sop, _ in INBOXES["inbox"].values()} == {send.COMPREHENSIVE_SR}
    assert {dcmread(io.BytesIO(d)).SOPInstanceUID for _, d in INBOXES["inbox"].values()} == set(INBOXES["inbox"])
    down = run_delivery(spark, lake, settings, destinations=["memory:down"])
    assert down["failed"] == len(films) and down["given_up"] == 0, "a destination's failure is never given up"
    unreachable = f"memory:down unreachable: {pipeline.MAX_CONNECT_FAILURES} connections in a row failed in this run"
    assert down["errors"] == {"memory store is down": pipeline.MAX_CONNECT_FAILURES, unreachable: len(films) - 3}


def _state(spark, lake, destination: str) -> list[dict]:
    from xray_spark.registry import alias_holder

    version = alias_holder(spark, lake)["version"]
    rows = record.state(spark, lake, DATASET, version).where(F.col("destination") == destination).collect()
    return [r.asDict() for r in rows]


def test_a_delivery_killed_mid_way_marks_sent_only_what_was_acknowledged(spark, hospital, small_model, tmp_path):
    """SIGKILL to the whole job (driver, JVM, workers) once a few objects are in the folder; then a rerun."""
    settings, lake, _ = hospital
    out = tmp_path / "results"
    args = [
        "--lake",
        lake.root,
        "--set",
        "dataset=hospital",
        "--set",
        f"privacy.identity_dir={settings.privacy.identity_dir}",
    ]
    args += ["--set", "deliver.record_every=2", "--set", "image.size=64", "--to-folder", out]
    kill_when("deliver", args, lambda: len(list(out.glob("*.dcm"))) >= 6, what="six results written")
    destination = f"folder:{out}"
    state = {r["image_id"]: r for r in _state(spark, lake, destination)}
    assert state and {r["status"] for r in state.values()} <= {"pending", "sent"}
    held = {p.stem for p in out.glob("*.dcm")}
    sent = {image for image, r in state.items() if r["status"] == "sent"}
    version = small_model["version"]
    assert {result_uid(settings.deliver.uid_root, image, version, "sr") for image in sent} <= held, "sent: acknowledged"
    again = run_delivery(spark, lake, settings, destinations=[destination])
    films = privacy.read_film_map(settings.privacy, DATASET)
    assert again["to_deliver"] == len(films) - len(sent) and again["failed"] == 0
    assert {r["status"] for r in _state(spark, lake, destination)} == {"sent"}
    assert {result_uid(settings.deliver.uid_root, image, version, "sr") for image in films} == {
        p.stem for p in out.glob("*.dcm")
    }


def test_a_dicomweb_destination_is_a_service_root_and_its_credentials_a_private_file(tmp_path):
    from xray_spark.destinations import parse_destination
    from xray_spark.dicomweb import read_credentials
    from xray_spark.errors import ConfigError

    web = parse_destination("dicomweb:https://pacs.example/dicom-web/")
    assert (web.kind, web.address, web.name) == (
        "dicomweb",
        "https://pacs.example/dicom-web",
        "dicomweb:https://pacs.example/dicom-web",
    )
    with pytest.raises(UsageError, match=r"credentials belong in deliver\.dicomweb_auth_file") as refused:
        parse_destination("dicomweb:https://ai:s3cret@pacs.example/dicom-web")
    assert "s3cret" not in str(refused.value)
    for bad in ("dicomweb:ftp://pacs.example/x", "dicomweb:https://pacs.example/rs?token=1", "dicomweb:pacs"):
        with pytest.raises(UsageError, match="not an http"):
            parse_destination(bad)
    auth = tmp_path / "auth"
    assert read_credentials("", "deliver.dicomweb_auth_file") is None
    with pytest.raises(ConfigError, match="cannot read it"):
        read_credentials(str(auth), "deliver.dicomweb_auth_file")
    auth.write_text("Bearer abc.def\n")
    auth.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        read_credentials(str(auth), "deliver.dicomweb_auth_file")
    auth.chmod(0o600)
    assert read_credentials(str(auth), "deliver.dicomweb_auth_file") == ("bearer", "abc.def")
    for text in ("abc.def", "Digest x", "Basic no-colon", "Bearer a\nBearer b"):
        auth.write_text(text)
        with pytest.raises(ConfigError) as wrong:
            read_credentials(str(auth), "deliver.dicomweb_auth_file")
        assert "abc" not in str(wrong.value) and "no-colon" not in str(wrong.value), "the file's content is not echoed"


def test_result_uids_are_the_same_on_every_resend_and_differ_by_model_and_kind():
    film = "1.2.826.0.1.3680043.8.498.1"
    assert result_uid("", film, "v1", "sr") == result_uid("", film, "v1", "sr")
    uids = {result_uid(root, film, v, k) for root in ("", "1.2.3") for v in ("v1", "v2") for k in ("sr", "sc")}
    assert len(uids) == 8
    assert all(len(u) <= 64 and all(p.isdigit() and (p == "0" or p[0] != "0") for p in u.split(".")) for u in uids)
    assert result_uid("1.2.3", film, "v1", "sr").startswith("1.2.3.")


def test_delivery_refuses_a_lake_without_dicom_films_or_a_destination_inside_the_lake(spark, prepared, hospital):
    settings, lake, _ = prepared
    with pytest.raises(UsageError, match=r"no DICOM films|no champion"):
        run_delivery(spark, lake, settings, destinations=["folder:/tmp/elsewhere-results"])
    h_settings, h_lake, _ = hospital
    with pytest.raises(UsageError, match="inside the lake"):
        run_delivery(spark, h_lake, h_settings, destinations=[f"folder:{h_lake.root}/results"])
    with pytest.raises(UsageError, match="no destination"):
        run_delivery(spark, h_lake, h_settings, destinations=[])


def test_the_worklist_links_each_film_to_its_study_in_the_pacs_viewer(spark, hospital, tmp_path):
    """In Chromium: one click on the riskiest film's link opens the viewer's URL for that film's study."""
    import dataclasses
    import http.server

    from xray_spark.worklist.pipeline import run_worklist

    from .browser import browser

    class Viewer(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = f"<html><body><h1 id='study'>{self.path}</h1></body></html>".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Viewer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings, lake, _ = hospital
    template = f"http://127.0.0.1:{server.server_address[1]}/viewer?StudyInstanceUIDs={{study_uid}}&acc={{accession}}"
    linked = dataclasses.replace(settings, worklist=dataclasses.replace(settings.worklist, viewer_url=template))
    summary = run_worklist(spark, lake, linked, limit=10)
    instances = spark.read.parquet(lake.table_url("dicom_instances")).collect()
    study_of = {r["image_id"]: r["study_uid"] for r in instances}
    driver = browser()
    try:
        driver.get(Path(summary["page"]).as_uri())
        first = driver.find_elements("css selector", "tr.film-row")[0]
        image_id = first.find_elements("css selector", "span.muted")[-1].text
        link = first.find_element("css selector", "a.viewer")
        assert link.is_displayed()
        shot = tmp_path / "row.png"
        first.screenshot(str(shot))
        link.click()
        assert driver.find_element("id", "study").text.startswith("/viewer?StudyInstanceUIDs=")
        assert f"StudyInstanceUIDs={study_of[image_id]}&acc=" in driver.current_url
    finally:
        driver.quit()
        server.shutdown()
        server.server_close()
    row = cv2.imread(str(shot))
    assert row.shape[1] > 400 and np.unique(row.reshape(-1, 3), axis=0).shape[0] > 50, "the row is drawn"
    blue = (row[:, :, 0].astype(int) - row[:, :, 2] > 80).sum()
    assert blue > 30, "the link's text is drawn in the link colour"
