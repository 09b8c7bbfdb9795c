from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from xray_spark.config import SplitSettings
from xray_spark.prepare.split import UNLISTED, assign_splits, assign_splits_from_lists, read_split_lists


def _patients(spark, n_patients: int, per_patient: int = 3):
    rows = [(f"{p:08d}_{f:03d}.png", p) for p in range(1, n_patients + 1) for f in range(per_patient)]
    return spark.createDataFrame(rows, "image_id string, patient_id int")


def test_patient_disjoint_and_close_to_the_fractions(spark):
    df = assign_splits(_patients(spark, 3000), SplitSettings())
    per_patient = df.groupBy("patient_id").agg(F.countDistinct("split").alias("n")).where("n > 1")
    assert per_patient.count() == 0, "a patient in two splits"
    shares = {r["split"]: r["count"] / 9000 for r in df.groupBy("split").count().collect()}
    assert shares["train"] == pytest.approx(0.7, abs=0.03)
    assert shares["val"] == pytest.approx(0.1, abs=0.02)
    assert shares["test"] == pytest.approx(0.2, abs=0.03)


def test_deterministic_and_salted(spark):
    base = _patients(spark, 500)
    a = {r["image_id"]: r["split"] for r in assign_splits(base, SplitSettings()).collect()}
    b = {r["image_id"]: r["split"] for r in assign_splits(base.orderBy(F.desc("image_id")), SplitSettings()).collect()}
    c = {r["image_id"]: r["split"] for r in assign_splits(base, SplitSettings(salt="other")).collect()}
    assert a == b
    assert a != c


def test_growing_the_archive_does_not_move_old_patients(spark):
    small = {r["image_id"]: r["split"] for r in assign_splits(_patients(spark, 200), SplitSettings()).collect()}
    large = {r["image_id"]: r["split"] for r in assign_splits(_patients(spark, 400), SplitSettings()).collect()}
    assert all(large[k] == v for k, v in small.items())


def test_official_lists(spark, tmp_path):
    df = _patients(spark, 60, per_patient=2)
    ids = [r["image_id"] for r in df.orderBy("image_id").collect()]
    (tmp_path / "train_val_list.txt").write_text("\n".join(ids[:80]) + "\n")
    (tmp_path / "test_list.txt").write_text("\n".join(ids[80:110]) + "\n")
    lists = read_split_lists(spark, str(tmp_path / "train_val_list.txt"), str(tmp_path / "test_list.txt"))
    out = {r["image_id"]: r["split"] for r in assign_splits_from_lists(df, lists, SplitSettings()).collect()}
    assert all(out[i] in ("train", "val") for i in ids[:80])
    assert {out[i] for i in ids[:80]} == {"train", "val"}
    assert all(out[i] == "test" for i in ids[80:110])
    assert all(out[i] == UNLISTED for i in ids[110:])
