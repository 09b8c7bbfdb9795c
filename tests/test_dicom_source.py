"""prepare --source dicom: a PACS export (nested, no suffixes, compressed, PHI in every header) into the store."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from pyspark.sql import functions as F

from xray_spark.dev.dicom_films import encode, film
from xray_spark.errors import UsageError
from xray_spark.lake import Lake
from xray_spark.prepare import PrepareInputs, run_prepare
from xray_spark.privacy import pseudonym

from . import corpus
from .conftest import make_settings
from .corpus import DICOM_KEY as KEY
from .corpus import PHI
from .jobs import checked, run_in_process, run_job

SYNTAX_CYCLE = ["jpeg-lossless", "explicit-le", "jpeg-ls", "j2k-lossless", "rle", "implicit-le"]


def _film(patient: int, study: int, seed: int, **extra) -> object:
    pixels = (corpus.chest_like(96, seed).astype(np.uint16) * 16).astype(np.uint16)
    return film(
        pixels,
        bits_stored=12,
        modality=extra.pop("modality", "DX"),
        PatientID=f"ZZPID{patient:04d}",
        PatientSex="F" if patient % 2 else "M",
        StudyDate=f"2026{study + 1:02d}15",
        StudyTime="101500",
        AccessionNumber=f"ACC{patient:03d}{study:02d}",
        ViewPosition=extra.pop("ViewPosition", "PA"),
        BodyPartExamined=extra.pop("BodyPartExamined", "CHEST"),
        **PHI,
        **extra,
    )


def write_export(folder: Path, films: list[tuple[str, object, str]]) -> None:
    """(relative path, dataset, syntax) -> files, nested, without suffixes, as a PACS export looks."""
    for relative, ds, syntax in films:
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode(ds, syntax))


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """12 chest films of 4 patients (3 studies each, out of date order), and what must be set aside.

    The folders are named by Patient ID, as many PACS exports name them: no part of a path may reach the lake."""
    root = tmp_path_factory.mktemp("export")
    films = []
    for patient in range(4):
        for study in (2, 0, 1):  # written out of order: the follow-ups come from the study dates
            ds = _film(patient, study, seed=patient * 10 + study)
            films.append((f"ZZPID{patient:04d}/S{study}/IM0", ds, SYNTAX_CYCLE[(patient + study) % len(SYNTAX_CYCLE)]))
    skipped = [
        ("other/CT1", _film(9, 0, 1, modality="CT"), "explicit-le"),
        ("other/LAT1", _film(9, 0, 2, ViewPosition="LL"), "explicit-le"),
        ("other/ABD1", _film(9, 0, 3, BodyPartExamined="ABDOMEN"), "explicit-le"),
        ("other/MF1", _film(9, 0, 4, NumberOfFrames=2), "explicit-le"),
    ]
    write_export(root, films + skipped)
    report = _film(9, 0, 5, modality="SR")
    report.SOPClassUID = report.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    del report.Rows, report.Columns, report.PixelData
    report.save_as(root / "other" / "SR1", enforce_file_format=True)
    shutil.copy(root / "ZZPID0000" / "S0" / "IM0", root / "ZZPID0000" / "S0" / "IM0-copy")  # the same instance twice
    broken = (root / "ZZPID0001" / "S0" / "IM0").read_bytes()
    (root / "broken").mkdir()
    (root / "broken" / "CUT").write_bytes(broken[:300])  # a header cut short
    (root / "README").write_text("exported by the PACS\n")
    return root, films


@pytest.fixture(scope="module")
def hospital(spark, export, tmp_path_factory):
    root, films = export
    lake_dir = tmp_path_factory.mktemp("hospital-lake")
    settings = make_settings(lake_dir, "dataset=hospital", "quarantine.max_fraction=0.5")
    mp = pytest.MonkeyPatch()
    mp.setenv("XRAY_SPARK_PSEUDONYM_KEY", KEY)
    try:
        summary = run_prepare(spark, Lake.at(settings.lake), settings, PrepareInputs(None, str(root), source="dicom"))
    finally:
        mp.undo()
    return settings, Lake.at(settings.lake), summary, films


def test_the_export_is_sorted_into_films_skipped_broken_and_not_dicom(hospital):
    _, _, summary, _ = hospital
    dicom = summary["dicom"]
    assert dicom["not_dicom_files"] == 1
    assert dicom["skipped"] == {
        "not_a_radiograph": 1,
        "lateral_view": 1,
        "not_chest": 1,
        "multi_frame": 1,
        "no_pixel_data": 1,
    }
    assert dicom["duplicate_instances"] == 1
    assert summary["quarantine"]["by_reason"] == {"undecodable_image": 1}
    assert summary["images"]["written"] == 12
    assert summary["splits"] == {"unlabeled": {"patients": 4, "images": 12}}


def test_the_store_holds_each_film_once_by_sop_uid_with_its_dicom_columns(spark, hospital):
    _, lake, _, films = hospital
    store = spark.read.parquet(lake.store_url("hospital"))
    stored = sorted(r.image_id for r in store.select("image_id").collect())
    assert stored == sorted(ds.SOPInstanceUID for _, ds, _ in films)
    studies = spark.read.parquet(lake.table_url("studies")).where(F.col("dataset") == "hospital")
    rows = {r["image_id"]: r for r in studies.collect()}
    for _, ds, _ in films:
        row = rows[ds.SOPInstanceUID]
        assert row["source"] == "dicom" and row["split"] == "unlabeled" and row["findings"] == []
        assert (row["study_uid"], row["accession_number"]) == (ds.StudyInstanceUID, ds.AccessionNumber)
        assert row["study_datetime"].strftime("%Y%m%d%H%M%S") == ds.StudyDate + ds.StudyTime
        assert row["sex"] == ds.PatientSex
        # no Patient's Age: the age at the study from the birth date, which itself is not kept
        assert row["age"] == (84 if ds.StudyDate < "20260203" else 85)
    # follow-ups follow the study dates, whatever order the files came in
    for patient in range(4):
        mine = sorted(
            (r["study_datetime"], r["follow_up"])
            for r in rows.values()
            if r["accession_number"][3:6] == f"{patient:03d}"
        )
        assert [f for _, f in mine] == [0, 1, 2]


def test_no_identifying_header_reaches_the_lake(spark, hospital):
    _, lake, summary, _ = hospital
    planted = [v.encode() for v in PHI.values()] + [b"ZZPID", b"ZZNAME", b"19410203"]
    for path in Path(lake.root).rglob("*"):
        name = str(path.relative_to(lake.root)).encode()
        assert not [p for p in planted if p in name], f"{path} is named by a planted identifier"
        if path.is_file():
            data = path.read_bytes()
            assert not [p for p in planted if p in data], f"{path} holds a planted identifier"
    for table in ("studies", "quarantine", "dicom_instances", "patient_keys"):
        df = spark.read.parquet(lake.table_url(table))
        text = " ".join(str(v) for row in df.collect() for v in row)
        assert not [p for p in planted if p.decode() in text], table
    keys = {r["patient_pseudonym"] for r in spark.read.parquet(lake.table_url("patient_keys")).collect()}
    assert keys == {pseudonym(KEY.encode(), f"ZZPID{p:04d}") for p in range(4)}
    assert "ZZ" not in str(summary)


def test_without_a_key_prepare_stops_in_one_line(spark, export, tmp_path, monkeypatch):
    monkeypatch.delenv("XRAY_SPARK_PSEUDONYM_KEY", raising=False)
    root, _ = export
    settings = make_settings(tmp_path, "dataset=hospital")
    with pytest.raises(UsageError, match="XRAY_SPARK_PSEUDONYM_KEY") as info:
        run_prepare(spark, Lake.at(settings.lake), settings, PrepareInputs(None, str(root), source="dicom"))
    assert "\n" not in str(info.value)
    assert not (tmp_path / "petastorm").exists()


def test_a_second_export_adds_only_the_new_instances_and_prints_no_identifier(spark, hospital, tmp_path, monkeypatch):
    _, lake, _, films = hospital
    night = tmp_path / "night"
    write_export(night, [("old/A", films[0][1], "explicit-le"), ("old/B", films[1][1], "jpeg-ls")])
    write_export(night, [(f"new/{i}", _film(5, i, seed=50 + i), "jpeg-lossless") for i in range(3)])
    args = ["--source", "dicom", "--images", night, "--lake", lake.root, "--dataset", "hospital", "--incremental"]
    args += ["--set", "image.size=64", "--set", "prepare.images_per_file=40", "--summary-json", tmp_path / "s.json"]
    args += ["--set", f"privacy.identity_dir={tmp_path / 'identity'}"]  # outside the lake, in this test's folder
    monkeypatch.setenv("XRAY_SPARK_PSEUDONYM_KEY", KEY)
    result = checked(run_in_process("prepare", args))
    output = result.stdout + result.stderr
    assert not [v for v in (*PHI.values(), "ZZPID") if v in output]
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["dicom"]["already_in_store"] == 2 and summary["images"]["written"] == 3
    assert summary["store_rows"] == 15


def test_unlabelled_films_are_scored_and_on_the_worklist(spark, hospital, small_model):
    from xray_spark.registry import register_model
    from xray_spark.score.pipeline import run_scoring

    settings, lake, _, films = hospital
    register_model(spark, lake, small_model["model_dir"], dataset="nih")
    summary = run_scoring(spark, lake, settings, model_version=small_model["version"], new_only=True)
    assert summary["written"] == summary["studies_in_store"] >= len(films)
    worklist = {
        r["image_id"] for r in spark.sql("SELECT image_id FROM xray.worklist WHERE dataset = 'hospital'").collect()
    }
    assert {ds.SOPInstanceUID for _, ds, _ in films} <= worklist


def test_a_dicom_night_whose_folder_has_not_arrived_stops_before_spark(tmp_path):
    """``nightly --source dicom`` on a folder that is not there: one line, exit 2, no Spark, nothing written.

    A night from a folder runs the steps of a night from the DICOM node's spool, which
    ``test_dicom_node.py`` runs end to end (and compares its prepare with the folder's)."""
    late = run_job("nightly", ["--source", "dicom", "--incoming", tmp_path / "not-yet", "--lake", tmp_path / "lake"])
    assert late.returncode == 2 and "not a folder" in late.stderr and "SparkContext" not in late.stderr
    assert not (tmp_path / "lake").exists()


def test_a_labels_csv_labels_its_films_with_patient_splits_and_quarantines_bad_labels(spark, export, tmp_path):
    root, films = export
    labels = {ds.AccessionNumber: "Effusion|Mass" for _, ds, _ in films[:8]}
    labels[films[8][1].AccessionNumber] = "Effusion|Alien"  # an unknown finding: the film is quarantined
    rows = [*labels.items(), (films[0][1].AccessionNumber, "Mass|Effusion")]  # the same labels again: one row
    rows += [(films[9][1].AccessionNumber, "Mass"), (films[9][1].AccessionNumber, "Nodule")]  # they contradict
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("Accession Number,Finding Labels\n" + "".join(f'"{k}","{v}"\n' for k, v in rows))
    settings = make_settings(tmp_path / "lake", "dataset=labelled", "quarantine.max_fraction=0.5")
    mp = pytest.MonkeyPatch()
    mp.setenv("XRAY_SPARK_PSEUDONYM_KEY", KEY)
    try:
        inputs = PrepareInputs(None, str(root), source="dicom", labels=str(csv_path))
        summary = run_prepare(spark, Lake.at(settings.lake), settings, inputs)
    finally:
        mp.undo()
    assert summary["quarantine"]["by_reason"] == {
        "undecodable_image": 1,
        "unknown_finding": 1,
        "contradictory_labels": 1,
    }
    assert summary["metadata"]["finding_counts"]["Effusion"] == 8
    quarantined = spark.read.parquet(Lake.at(settings.lake).table_url("quarantine")).collect()
    (contradiction,) = [r for r in quarantined if r["reason"] == "contradictory_labels"]
    assert contradiction["image_id"] == films[9][1].SOPInstanceUID and "Mass / Nodule" in contradiction["detail"]
    studies = spark.read.parquet(Lake.at(settings.lake).table_url("studies")).collect()
    by_id = {r["image_id"]: r for r in studies}
    assert films[8][1].SOPInstanceUID not in by_id and films[9][1].SOPInstanceUID not in by_id
    labelled = [by_id[ds.SOPInstanceUID] for _, ds, _ in films[:8]]
    assert all(r["findings"] == ["Effusion", "Mass"] and r["split"] in ("train", "val", "test") for r in labelled)
    for patient in {r["patient_id"] for r in labelled}:  # a patient's labelled films share one split
        assert len({r["split"] for r in labelled if r["patient_id"] == patient}) == 1
    rest = [by_id[ds.SOPInstanceUID] for _, ds, _ in films[10:]]
    assert all(r["split"] == "unlabeled" and r["findings"] == [] for r in rest)


def test_the_identity_map_outside_the_lake_leads_each_reference_back_to_its_file(spark, hospital, export):
    settings, lake, _, films = hospital
    root, _ = export
    maps = sorted(Path(settings.privacy.identity_dir, "hospital").glob("*.csv"))  # the fixture's run first
    assert maps and not maps[0].is_relative_to(lake.root)
    assert maps[0].stat().st_mode & 0o077 == 0, "readable by its owner only"
    paths = dict(csv.reader(io.StringIO(maps[0].read_text())))
    store = spark.read.parquet(lake.store_url("hospital")).select("image_id", "source_path").collect()
    by_uid = {ds.SOPInstanceUID: root / relative for relative, ds, _ in films}
    for row in (r for r in store if r["image_id"] in by_uid):  # other tests add films of their own runs
        assert row["source_path"].startswith("src-") and Path(paths[row["source_path"]]) == by_uid[row["image_id"]]
    quarantined = spark.read.parquet(lake.table_url("quarantine")).where(F.col("dataset") == "hospital").collect()
    assert [Path(paths[r["source_path"]]).name for r in quarantined] == ["CUT"]


def test_another_pseudonym_key_on_a_later_night_is_refused_in_one_line(spark, hospital, export, tmp_path, monkeypatch):
    _, lake, _, _ = hospital
    root, _ = export
    copy = tmp_path / "lake"
    shutil.copytree(lake.root, copy)
    mine = make_settings(copy, "dataset=hospital", "quarantine.max_fraction=0.5")
    monkeypatch.setenv("XRAY_SPARK_PSEUDONYM_KEY", "another-key-of-32-characters-long")
    with pytest.raises(UsageError, match=r"^store 'hospital' was pseudonymised with another key \(fingerprint"):
        run_prepare(spark, Lake.at(str(copy)), mine, PrepareInputs(None, str(root), source="dicom", incremental=True))
    manifest = json.loads((copy / "petastorm" / "hospital" / "_xray_store.json").read_text())
    assert len(manifest["key_fingerprint"]) == 16 and KEY not in json.dumps(manifest), "a fingerprint, never the key"


def test_a_key_file_every_user_can_read_is_refused(tmp_path, monkeypatch):
    from xray_spark.config import PrivacySettings
    from xray_spark.privacy import read_key

    key = tmp_path / "hospital.key"
    key.write_text(KEY + "\n")
    monkeypatch.delenv("XRAY_SPARK_PSEUDONYM_KEY", raising=False)
    key.chmod(0o644)
    with pytest.raises(UsageError, match=r"can be read by every user of this machine .*chmod 600"):
        read_key(PrivacySettings(key_file=str(key)))
    key.chmod(0o600)
    assert read_key(PrivacySettings(key_file=str(key))) == KEY.encode()


def test_a_film_whose_name_is_not_utf8_is_read_by_its_bytes(tmp_path):
    """A PACS export's file name in Latin-1: listed, read and referenced, never turned into U+FFFD."""
    import os

    from xray_spark.prepare.files import printable, real_path, walk_local
    from xray_spark.prepare.sources.dicom.headers import read_header
    from xray_spark.privacy import source_ref

    folder = tmp_path / "export"
    folder.mkdir()
    name = "ZZPID0001_Müller".encode("latin-1")  # not UTF-8
    with open(os.path.join(os.fsencode(folder), name), "wb") as fh:
        fh.write(encode(_film(1, 0, seed=3), "explicit-le"))
    ((shown, path),) = list(walk_local(str(folder), suffixes=None))
    assert shown == "ZZPID0001_M\\xfcller" and "\ufffd" not in path and os.path.isfile(real_path(path))
    ref = source_ref(KEY.encode(), os.path.relpath(real_path(path), folder))
    row = read_header(path, KEY.encode(), 1 << 26, ref)
    assert row["kind"] == "dicom" and row.get("reason") is None and row["source_path"] == ref, row
    assert printable(real_path(path)).endswith("M\\xfcller")
