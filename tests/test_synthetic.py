from __future__ import annotations

import csv
import gzip
import hashlib

import cv2
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from xray_spark.dev.studies import plan_studies
from xray_spark.dev.synthetic import METADATA_HEADER, main, write_archive
from xray_spark.labels import FINDINGS, NO_FINDING


def _digest(folder) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            h.update(path.name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    write_archive(tmp_path / "a", 40, 64, seed=3)
    write_archive(tmp_path / "b", 40, 64, seed=3)
    write_archive(tmp_path / "c", 40, 64, seed=4)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_nih_layout(archive):
    with open(archive / "Data_Entry_2017.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert tuple(rows[0]) == METADATA_HEADER
    body = rows[1:]
    assert len(body) == 160
    for row in body:
        name = row[0]
        assert len(name) == len("00000001_000.png") and name[8] == "_" and name.endswith(".png")
        assert int(name[:8]) == int(row[3]) and int(name[9:12]) == int(row[2])
        assert row[6] in ("PA", "AP") and row[5] in ("M", "F")
        image = cv2.imread(str(archive / "images" / name), cv2.IMREAD_UNCHANGED)
        assert image.dtype == np.uint8 and image.shape == (96, 96)
    labels = [row[1] for row in body]
    normal = sum(1 for t in labels if t == NO_FINDING)
    assert 0.3 < normal / len(labels) < 0.7
    assert any("|" in t for t in labels), "multi-label rows"
    patients = {}
    for row in body:
        patients.setdefault(row[3], []).append(row)
    assert any(len(v) >= 3 for v in patients.values()), "patients with follow-ups"


def test_header_matches_the_real_file(nih_sample):
    with gzip.open(nih_sample / "Data_Entry_2017_v2020.csv.gz", "rt") as fh:
        assert tuple(next(csv.reader(fh))) == METADATA_HEADER


def test_boxes_cover_planted_lesions(archive):
    with open(archive / "BBox_List_2017.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0][:3] == ["Image Index", "Finding Label", "Bbox [x"]
    assert rows[1:], "boxes were written"
    labels = {r[1] for r in rows[1:]}
    assert "Infiltration" not in labels, "the real file's spelling is Infiltrate"
    for r in rows[1:]:
        x, y, w, h = map(float, r[2:6])
        assert x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= 96.5 and y + h <= 96.5


def test_every_finding_is_planted_and_brightness_does_not_give_it_away(tmp_path):
    studies = write_archive(tmp_path, 600, 64, seed=5)
    means = np.array([cv2.imread(str(tmp_path / "images" / s.image_id), 0).mean() for s in studies])
    for name in FINDINGS:
        y = np.array([name in s.findings for s in studies])
        assert y.sum() >= 10, f"{name} is planted in at least 10 of 600 images"
        auc = roc_auc_score(y, means)
        assert 0.25 < auc < 0.75, f"mean brightness separates {name} too well (AUROC {auc:.2f})"


def test_planted_pattern_is_visible_in_pixels():
    """The same patient and noise with and without a nodule differ only where the nodule is."""
    from xray_spark.dev.anatomy import Anatomy, render

    anatomy = Anatomy.draw(np.random.default_rng(0))
    plain, _ = render((), anatomy, "PA", 128, np.random.default_rng(1))
    sick, boxes = render(("Nodule",), anatomy, "PA", 128, np.random.default_rng(1))
    x, y, w, h = (round(v * 128) for v in boxes["Nodule"])
    inside = np.abs(sick[y : y + h, x : x + w].astype(int) - plain[y : y + h, x : x + w]).mean()
    assert inside > 20


def test_plan_is_patient_consistent():
    studies = plan_studies(300, seed=2)
    by_patient = {}
    for s in studies:
        by_patient.setdefault(s.patient_id, []).append(s)
    for items in by_patient.values():
        assert [s.follow_up for s in items] == list(range(len(items)))
        assert len({s.sex for s in items}) == 1


def test_cli(tmp_path, capsys):
    assert main(["--output", str(tmp_path), "--images", "12", "--size", "64", "--seed", "1"]) == 0
    out, err = capsys.readouterr()
    assert "wrote 12 images" in err and out == ""  # a log line: stdout carries data only
    assert len(list((tmp_path / "images").glob("*.png"))) == 12
    assert main(["--output", str(tmp_path), "--images", "0"]) == 2


@pytest.mark.parametrize("size", [32, 200])
def test_sizes(tmp_path, size):
    write_archive(tmp_path, 3, size, seed=0)
    image = cv2.imread(str(next((tmp_path / "images").glob("*.png"))), 0)
    assert image.shape == (size, size)
