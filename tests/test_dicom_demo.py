"""The DICOM demo archive, and patient privacy end to end on it: prepare, score and evaluate as jobs."""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest

from xray_spark.config import PrivacySettings
from xray_spark.dev.dicom_archive import write_dicom_archive
from xray_spark.dev.dicom_films import SYNTAXES
from xray_spark.lake import Lake
from xray_spark.privacy import read_key

from .conftest import DISPLAY, TEST_OVERRIDES
from .corpus import IDENTIFYING, headers_of, planted_identity
from .jobs import checked, run_in_process, run_job

KEY = "a-demo-key-that-is-long-enough-1234"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("dicom-demo")
    films = write_dicom_archive(root, n_images=90, size=64, seed=5, labelled=0.8)
    return root, films


def test_the_demo_archive_looks_like_a_pacs_export(demo):
    root, films = demo
    export = root / "export"
    headers = headers_of(export)
    assert "DICOMDIR" in {p.name for p in headers}
    film_files = {p: ds for p, ds in headers.items() if p.name.startswith("IM")}
    assert len(film_files) == len(films) == 90
    assert all("." not in p.name and len(p.relative_to(export).parts) == 4 for p in film_files)
    assert {ds.SOPInstanceUID for ds in film_files.values()} == {ds.SOPInstanceUID for _, ds, _ in films}
    syntaxes = Counter(str(ds.file_meta.TransferSyntaxUID) for ds in film_files.values())
    lossless = {SYNTAXES[name][0] for name in SYNTAXES if SYNTAXES[name][1]}
    assert len(syntaxes) >= 8 and set(syntaxes) & lossless and set(syntaxes) - lossless
    assert {ds.PhotometricInterpretation for ds in film_files.values()} == {"MONOCHROME1", "MONOCHROME2"}
    assert {int(ds.BitsStored) for ds in film_files.values()} == {8, 12}
    assert {ds.Modality for ds in film_files.values()} == {"CR", "DX"}
    assert any("WindowCenter" in ds for ds in film_files.values())
    # every film names its patient, and the made-up identities differ between patients
    assert all(str(ds.get(k, "")) for ds in film_files.values() for k in IDENTIFYING)
    names = {ds.PatientName for ds in film_files.values()}
    assert len(names) == len({study.patient_id for study, _, _ in films})
    others = {p.name: ds for p, ds in headers.items() if p.parent.name == "OTHER"}
    assert others["CT0001"].Modality == "CT" and others["LAT0001"].ViewPosition == "LL"
    assert others["ABD0001"].BodyPartExamined == "ABDOMEN" and "PixelData" not in others["SR0001"]
    assert (export / "OTHER" / "CUT0001").stat().st_size == 400 and (export / "README.TXT").is_file()


def test_the_labels_cover_whole_patients_and_only_part_of_the_archive(demo):
    root, films = demo
    with open(root / "labels.csv", newline="") as fh:
        labels = {row["Accession Number"]: row["Finding Labels"] for row in csv.DictReader(fh)}
    by_accession = {ds.AccessionNumber: study for study, ds, _ in films}
    assert set(labels) <= set(by_accession) and 0.5 * len(films) < len(labels) < len(films)
    assert all(labels[a] == by_accession[a].finding_labels for a in labels)
    labelled_patients = {by_accession[a].patient_id for a in labels}
    assert all((ds.AccessionNumber in labels) == (s.patient_id in labelled_patients) for s, ds, _ in films)


def test_the_same_arguments_write_the_same_files(tmp_path):
    def digest(folder: Path) -> dict[str, str]:
        files = (p for p in folder.rglob("*") if p.is_file())
        return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}

    write_dicom_archive(tmp_path / "a", n_images=6, size=48, seed=9)
    write_dicom_archive(tmp_path / "b", n_images=6, size=48, seed=9)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")


def test_a_key_file_inside_the_lake_is_refused(tmp_path):
    from xray_spark.errors import UsageError

    key_file = tmp_path / "lake" / "key"
    key_file.parent.mkdir()
    key_file.write_text(KEY + "\n")
    key_file.chmod(0o600)  # a key file others can read is refused for that alone
    settings = PrivacySettings(key_env="", key_file=str(key_file))
    with pytest.raises(UsageError, match="inside the lake"):
        read_key(settings, str(tmp_path / "lake"))
    assert read_key(settings, str(tmp_path / "elsewhere")) == KEY.encode()


def test_prepare_score_and_evaluate_leak_no_identifier(spark, demo, small_model, tmp_path, monkeypatch):
    from xray_spark.registry import register_model

    root, films = demo
    planted = planted_identity(root / "export")
    assert len(planted) > 5 * len({study.patient_id for study, _, _ in films})
    lake_dir = tmp_path / "lake"
    monkeypatch.setenv("XRAY_SPARK_PSEUDONYM_KEY", KEY)
    common = ["--lake", lake_dir, "--set", "spark.driver_memory=1g", "--set", "dataset=demo"]
    common += [item for override in [*TEST_OVERRIDES, DISPLAY] for item in ("--set", override)]  # pictures too
    prepare = ["--source", "dicom", "--images", root / "export", "--labels", root / "labels.csv"]
    prepare += ["--set", f"privacy.identity_dir={tmp_path / 'identity'}"]  # outside the lake, in this test's folder
    # prepare, which reads the headers, runs as a process of its own (its JVM's log is searched too); score and
    # evaluate on this process's session
    outputs = [checked(run_job("prepare", [*common, *prepare, "--summary-json", tmp_path / "prepare.json"]))]
    register_model(spark, Lake.at(str(lake_dir)), small_model["model_dir"], dataset="nih")
    outputs.append(checked(run_in_process("score", [*common, "--new-only", "--summary-json", tmp_path / "score.json"])))
    evaluate = [
        *common,
        "--dataset",
        "demo",
        "--set",
        "evaluate.bootstrap=20",
        "--summary-json",
        tmp_path / "evaluate.json",
    ]
    outputs.append(checked(run_in_process("evaluate", evaluate)))
    summary = json.loads((tmp_path / "prepare.json").read_text())
    assert summary["dicom"]["skipped"] == {"not_a_radiograph": 1, "lateral_view": 1, "not_chest": 1, "no_pixel_data": 1}
    assert (summary["dicom"]["dicomdir_files"], summary["dicom"]["not_dicom_files"]) == (1, 1)
    assert summary["quarantine"]["by_reason"] == {"undecodable_image": 1}  # the file cut short
    assert summary["images"]["written"] == len(films)
    assert f"{len(films)} predictions written" in outputs[1].stdout
    assert "on the test films of dataset demo" in outputs[2].stdout
    text = "\n".join(r.stdout + r.stderr for r in outputs)
    leaks = sorted(v for v in planted if v in text)
    assert not leaks, f"the job output holds {leaks[:5]}"
    needles = [v.encode() for v in planted]
    searched = 0
    for path in [*lake_dir.rglob("*"), *tmp_path.glob("*.json")]:
        if path.is_file():
            data = path.read_bytes()
            searched += 1
            found = [n for n in needles if n in data]
            assert not found, f"{path.relative_to(tmp_path)} holds {found[:3]}"
    assert searched > 50  # the store, the tables, the reports, the model copy and its charts
