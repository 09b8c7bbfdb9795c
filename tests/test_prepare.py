"""The prepare pipeline on synthetic archives: store contents, tables, reports, quarantine, increments."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from petastorm import make_reader
from pyspark.sql import functions as F

from xray_spark.dev.synthetic import METADATA_HEADER
from xray_spark.errors import QuarantineLimitExceeded, UsageError
from xray_spark.imaging.decode import load_training_image
from xray_spark.labels import FINDINGS, multi_hot
from xray_spark.lake import Lake
from xray_spark.lake.schema import XraySchema, decode_labels
from xray_spark.lake.store import read_manifest
from xray_spark.prepare import PrepareInputs, check_inputs, run_prepare
from xray_spark.prepare.decode import image_limits
from xray_spark.prepare.files import list_image_files, real_path
from xray_spark.prepare.load import STORE_STAGING
from xray_spark.prepare.metadata import read_metadata, validate_metadata

from . import corpus
from .conftest import DISPLAY, TEST_OVERRIDES, make_settings
from .jobs import kill_when
from .oracle import parse_finding_labels


def _read_all(url: str, **kwargs) -> list:
    with make_reader(url, reader_pool_type="dummy", **kwargs) as reader:
        return list(reader)


def test_summary_counts(prepared):
    _, _, summary = prepared
    assert summary["metadata"]["rows"] == 160
    assert summary["images"]["written"] == 160
    assert summary["store_rows"] == 160
    assert summary["quarantine"]["total"] == 0
    assert summary["label_set"] == list(FINDINGS)
    assert sum(v["images"] for v in summary["splits"].values()) == 160
    assert sum(summary["metadata"]["finding_counts"].values()) >= 160


@pytest.mark.parametrize("shard_count", [1, 3])
def test_every_row_exactly_once_per_epoch_across_shards(prepared, shard_count):
    settings, lake, summary = prepared
    url = lake.store_url(settings.dataset)
    ids: list[str] = []
    for shard in range(shard_count):
        with make_reader(
            url,
            cur_shard=shard,
            shard_count=shard_count,
            num_epochs=2,
            schema_fields=[XraySchema.image_id.name],
            workers_count=2,
        ) as reader:
            ids.extend(row.image_id for row in reader)
    assert len(ids) == 2 * 160
    counts = {i: ids.count(i) for i in set(ids)}
    assert set(counts.values()) == {2}
    assert len(counts) == summary["store_rows"]


def test_the_store_has_several_row_groups(prepared):
    settings, lake, _ = prepared
    import pyarrow.parquet as pq

    files = [f for f in os.listdir(lake.path("petastorm", settings.dataset)) if f.endswith(".parquet")]
    groups = sum(pq.ParquetFile(lake.path("petastorm", settings.dataset, f)).num_row_groups for f in files)
    assert groups >= 3, "sharding needs more row groups than shards"


def test_pixels_labels_and_weights_match_the_library(prepared, archive):
    settings, lake, _ = prepared
    manifest = read_manifest(lake, settings.dataset)
    assert manifest is not None and manifest.image_size == 64
    rows = _read_all(lake.store_url(settings.dataset))
    assert len(rows) == 160
    for row in rows:
        source = archive / "images" / row.image_id
        assert Path(row.source_path) == source.resolve()
        expected, _ = load_training_image(source.read_bytes(), 64, image_limits(settings))
        assert row.image.shape == (64, 64) and row.image.dtype == np.uint8
        np.testing.assert_array_equal(row.image, expected)
        findings = parse_finding_labels(row.finding_labels)
        np.testing.assert_array_equal(decode_labels(row.labels), multi_hot(findings, manifest.labels))
        assert row.sample_weight == pytest.approx(0.1 + len(findings))


def test_each_film_has_a_display_picture_of_its_own_proportions(spark, prepared, archive):
    """xray.display_pictures: one JPEG per stored film, the source's proportions kept, at most web.display_max_side
    long, close to the source's pixels (the JPEG's loss is small)."""
    import cv2

    settings, lake, summary = prepared
    rows = spark.read.parquet(lake.table_url("display_pictures")).where(F.col("dataset") == settings.dataset).collect()
    assert len(rows) == summary["images"]["display_pictures"] == 160
    assert {r["image_id"] for r in rows} == {r["image_id"] for r in spark.read.parquet(lake.store_url("nih")).collect()}
    for row in rows[:20]:
        source = cv2.imread(str(archive / "images" / row["image_id"]), cv2.IMREAD_GRAYSCALE)
        shown = cv2.imdecode(np.frombuffer(row["picture"], np.uint8), cv2.IMREAD_UNCHANGED)
        assert row["picture"][:3] == b"\xff\xd8\xff" and shown.ndim == 2, "a gray JPEG"
        assert max(shown.shape) == min(max(source.shape), settings.web.display_max_side)
        assert abs(shown.shape[0] / shown.shape[1] - source.shape[0] / source.shape[1]) < 0.02
        expected = cv2.resize(source, shown.shape[::-1], interpolation=cv2.INTER_AREA)
        assert np.abs(shown.astype(int) - expected).mean() < 3, "the film's own pixels"
        assert row["note"] is None


def test_a_film_whose_header_admits_burnt_in_text_gets_no_display_picture(tmp_path):
    """Burned In Annotation YES: the thumbnail is kept (too small to read), the display picture is not (a name would
    be legible at 1024 px), and the reason is recorded; the same film without the flag gets one."""
    from pydicom.uid import ExplicitVRLittleEndian

    from xray_spark.dev.dicom_films import film
    from xray_spark.prepare.decode import BURNED_IN, _decode_one

    pixels = (np.indices((300, 240)).sum(axis=0) % 251).astype(np.uint8)
    answers = {}
    for flag in ("YES", "NO"):
        ds = film(pixels, bits_stored=8, BurnedInAnnotation=flag)
        path = tmp_path / f"{flag}.dcm"
        ds.save_as(str(path), enforce_file_format=True)
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        answers[flag] = _decode_one(str(path), 64, image_limits(make_settings(tmp_path / "lake")), 1 << 24, (1024, 90))
    burnt, clean = answers["YES"], answers["NO"]
    assert burnt["image"] and burnt["reason"] is None, "the film is stored and scored like any other"
    assert burnt["display"] is None and burnt["display_note"] == BURNED_IN
    assert clean["display"][:3] == b"\xff\xd8\xff" and clean["display_note"] is None


def test_metadata_columns_survive(prepared, archive):
    settings, lake, _ = prepared
    with open(archive / "Data_Entry_2017.csv", newline="") as fh:
        source = {r["Image Index"]: r for r in csv.DictReader(fh)}
    for row in _read_all(
        lake.store_url(settings.dataset),
        schema_fields=[
            "image_id",
            "patient_id",
            "follow_up",
            "age",
            "sex",
            "view",
            "original_width",
            "pixel_spacing_x",
        ],
    ):
        src = source[row.image_id]
        assert (row.patient_id, row.follow_up, row.age) == (
            int(src["Patient ID"]),
            int(src["Follow-up #"]),
            int(src["Patient Age"]),
        )
        assert (row.sex, row.view, row.original_width) == (src["Patient Gender"], src["View Position"], 96)
        assert row.pixel_spacing_x == pytest.approx(float(src["OriginalImagePixelSpacing[x"]))


def test_tables_are_registered_and_agree_with_the_store(spark, prepared):
    settings, lake, _ = prepared
    from xray_spark.lake.tables import register_tables

    assert set(register_tables(spark, lake)) >= {"xray.studies", "xray.boxes"}
    studies = spark.table("xray.studies").where(F.col("dataset") == settings.dataset)
    store = spark.read.parquet(lake.store_url(settings.dataset))
    assert studies.count() == 160
    assert studies.select("image_id").subtract(store.select("image_id")).count() == 0
    mixed = studies.groupBy("patient_id").agg(F.countDistinct("split").alias("n")).where("n > 1")
    assert mixed.count() == 0, "a patient in two splits"
    boxes = spark.table("xray.boxes")
    assert boxes.count() > 0
    assert boxes.where(F.col("finding") == "Infiltrate").count() == 0


def test_reports(prepared):
    _, _, summary = prepared
    report_dir = Path(summary["report_dir"])
    assert json.loads((report_dir / "summary.json").read_text())["store_rows"] == 160
    assert (report_dir / "finding_counts.png").read_bytes().startswith(b"\x89PNG")


# -- bad input -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bad_run(spark, tmp_path_factory):
    root = corpus.make_bad_archive(tmp_path_factory.mktemp("bad"))
    lake_dir = tmp_path_factory.mktemp("badlake")
    settings = make_settings(lake_dir, "quarantine.max_fraction=1.0")
    lake = Lake.at(settings.lake)
    inputs = PrepareInputs(metadata=str(root / "Data_Entry_2017.csv"), images=str(root / "images"))
    return settings, lake, run_prepare(spark, lake, settings, inputs), root


def test_every_bad_input_is_quarantined_with_its_reason(spark, bad_run):
    _, _, summary, _ = bad_run
    rows = spark.table("xray.quarantine").where(F.col("run_id") == summary["run_id"]).collect()
    got: dict[str, list[str]] = {}
    for r in rows:
        got.setdefault(r["reason"], []).append(r["image_id"])
        assert r["detail"], "every quarantine row says what is wrong"
        assert "DOE^JANE" not in r["detail"] and "BirthDate" not in r["detail"], "a detail never echoes file content"
    assert {k: sorted(v) for k, v in got.items()} == corpus.EXPECTED_REASONS
    assert summary["quarantine"]["by_reason"] == {k: len(v) for k, v in corpus.EXPECTED_REASONS.items()}


def test_nothing_valid_is_lost(bad_run):
    settings, lake, summary, _ = bad_run
    ids = sorted(r.image_id for r in _read_all(lake.store_url(settings.dataset), schema_fields=["image_id"]))
    assert ids == sorted(corpus.GOOD)
    assert summary["images"]["converted"] == {"rgb": 1, "rgba": 1, "16bit": 1}
    meta = summary["metadata"]
    quarantined_rows = summary["quarantine"]["total"]
    assert meta["rows"] == len(corpus.GOOD) + quarantined_rows + summary["images"]["metadata_rows_without_file"]


def test_missing_and_orphan_files_are_listed(bad_run):
    _, _, summary, _ = bad_run
    assert summary["images"]["metadata_rows_without_file"] == 1
    assert summary["images"]["files_without_metadata"] == 2
    missing = _csv_folder(Path(summary["report_dir"]) / "missing_images")
    orphans = _csv_folder(Path(summary["report_dir"]) / "orphan_images")
    assert [r["image_id"] for r in missing] == ["00000030_000.png"]
    # The name that is not UTF-8 by its bytes (\xff), never U+FFFD; its path leads to the real file.
    assert sorted(r["file_name"] for r in orphans) == ["00000098_000\\xff.png", "00000099_000.png"]
    (odd,) = [r for r in orphans if r["file_name"].startswith("00000098")]
    assert "\ufffd" not in odd["source_path"] and os.path.isfile(real_path(odd["source_path"]))


def _csv_folder(folder: Path) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for part in sorted(folder.glob("part-*.csv")):
        with open(part, newline="") as fh:
            rows.extend(csv.DictReader(fh))
    return rows


def test_quarantine_over_the_limit_fails_and_writes_nothing_to_the_store(spark, bad_run, tmp_path):
    _, _, _, root = bad_run
    settings = make_settings(tmp_path, "quarantine.max_fraction=0.2")
    lake = Lake.at(settings.lake)
    inputs = PrepareInputs(metadata=str(root / "Data_Entry_2017.csv"), images=str(root / "images"))
    with pytest.raises(QuarantineLimitExceeded, match=r"over quarantine.max_fraction=0.2") as info:
        run_prepare(spark, lake, settings, inputs)
    assert read_manifest(lake, settings.dataset) is None
    assert not (tmp_path / "petastorm").exists()
    n_bad = sum(len(v) for v in corpus.EXPECTED_REASONS.values())
    assert info.value.summary["quarantine"]["total"] == n_bad
    q = spark.read.parquet(lake.table_url("quarantine"))
    assert q.count() == n_bad, "the quarantine rows are kept so the user can see why"


def test_a_rerun_does_not_count_inputs_a_successful_run_quarantined_already(spark, bad_run, tmp_path):
    """A cumulative delivery brings its broken files every night: known ones do not trip the limit."""
    _, lake, first, root = bad_run
    shutil.copytree(lake.root, tmp_path / "lake")  # the module's lake stays as the other tests expect it
    strict = make_settings(tmp_path / "lake", "quarantine.max_fraction=0.0")
    inputs = PrepareInputs(metadata=str(root / "Data_Entry_2017.csv"), images=str(root / "images"), incremental=True)
    again = run_prepare(spark, Lake.at(strict.lake), strict, inputs)
    n_bad = sum(len(v) for v in corpus.EXPECTED_REASONS.values())
    assert first["quarantine"]["total"] == n_bad and first["quarantine"]["already_quarantined"] == 0
    assert again["quarantine"]["already_quarantined"] == again["quarantine"]["total"] > 0
    assert again["quarantine"]["fraction"] == 0.0 and again["images"]["written"] == 0


def test_require_images(spark, bad_run, tmp_path):
    _, _, _, root = bad_run
    settings = make_settings(tmp_path, "quarantine.max_fraction=1.0")
    inputs = PrepareInputs(metadata=str(root / "Data_Entry_2017.csv"), images=str(root / "images"), require_images=True)
    with pytest.raises(UsageError, match="1 metadata rows have no image file"):
        run_prepare(spark, Lake.at(settings.lake), settings, inputs)


# -- increments, label sets, modes ---------------------------------------------------------------
def _subset_archive(src: Path, dst: Path, n: int) -> Path:
    (dst / "images").mkdir(parents=True)
    with open(src / "Data_Entry_2017.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    with open(dst / "Data_Entry_2017.csv", "w", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows(rows[: n + 1])
    for row in rows[1 : n + 1]:
        shutil.copy(src / "images" / row[0], dst / "images" / row[0])
    return dst


def test_incremental_adds_only_new_ids(spark, archive, tmp_path):
    small = _subset_archive(archive, tmp_path / "small", 100)
    settings = make_settings(tmp_path / "lake", DISPLAY)
    lake = Lake.at(settings.lake)
    first = run_prepare(
        spark,
        lake,
        settings,
        PrepareInputs(str(small / "Data_Entry_2017.csv"), str(small / "images"), incremental=True),
    )
    assert first["images"]["written"] == 100
    full = PrepareInputs(str(archive / "Data_Entry_2017.csv"), str(archive / "images"), incremental=True)
    second = run_prepare(spark, lake, settings, full)
    assert second["metadata"]["already_in_store"] == 100
    assert second["images"]["written"] == 60
    assert second["images"]["files_without_metadata"] == 0
    third = run_prepare(spark, lake, settings, full)
    assert third["images"]["written"] == 0
    ids = [r.image_id for r in _read_all(lake.store_url(settings.dataset), schema_fields=["image_id"])]
    assert len(ids) == len(set(ids)) == 160
    assert third["studies_rows"] == 160
    shown = spark.read.parquet(lake.table_url("display_pictures")).select("image_id").collect()
    assert sorted(r["image_id"] for r in shown) == sorted(ids), "each run's display pictures appended, once"
    manifest = read_manifest(lake, settings.dataset)
    assert [r["images_added"] for r in manifest.runs] == [100, 60, 0]
    dates = spark.read.parquet(lake.store_url(settings.dataset)).select("ingest_date").distinct().collect()
    assert all(len(d["ingest_date"]) == 10 for d in dates)


def _assert_every_image_once(spark, lake: Lake, settings, n: int) -> None:
    """The store (read by Petastorm, as training reads it) and xray.studies hold each image once."""
    ids = [r.image_id for r in _read_all(lake.store_url(settings.dataset), schema_fields=["image_id"])]
    assert len(ids) == len(set(ids)) == n
    studies = spark.read.parquet(lake.table_url("studies")).where(F.col("dataset") == settings.dataset)
    assert studies.count() == studies.select("image_id").distinct().count() == n
    assert not (Path(lake.root) / "petastorm" / STORE_STAGING / settings.dataset).exists(), "staging cleaned"


def test_a_killed_incremental_prepare_is_completed_by_its_rerun(spark, archive, tmp_path):
    """SIGKILL `prepare --incremental` while it writes; the rerun leaves every image exactly once."""
    small = _subset_archive(archive, tmp_path / "small", 100)
    settings = make_settings(tmp_path / "lake")
    lake = Lake.at(settings.lake)
    run_prepare(spark, lake, settings, PrepareInputs(str(small / "Data_Entry_2017.csv"), str(small / "images")))
    staging = Path(lake.root) / "petastorm" / STORE_STAGING
    args = ["--lake", lake.root, "--incremental", "--metadata", archive / "Data_Entry_2017.csv"]
    args += ["--images", archive / "images", "--set", "spark.driver_memory=1g"]
    for item in TEST_OVERRIDES:
        args += ["--set", item]
    kill_when("prepare", args, staging.exists, timeout=240, what="writing its new store files")
    assert staging.exists(), "the killed run left its staging folder"
    full = PrepareInputs(str(archive / "Data_Entry_2017.csv"), str(archive / "images"), incremental=True)
    rerun = run_prepare(spark, lake, settings, full)
    assert rerun["metadata"]["already_in_store"] + rerun["images"]["written"] == 160
    _assert_every_image_once(spark, lake, settings, 160)


def test_a_prepare_that_dies_while_moving_files_is_completed_by_its_rerun(spark, archive, tmp_path, monkeypatch):
    """The narrow window between the staged files' renames: some new files are in, some are not."""
    small = _subset_archive(archive, tmp_path / "small", 100)
    settings = make_settings(tmp_path / "lake")
    lake = Lake.at(settings.lake)
    run_prepare(spark, lake, settings, PrepareInputs(str(small / "Data_Entry_2017.csv"), str(small / "images")))
    real_move = Lake.move
    moved: list[str] = []

    def move_once_then_die(self, src: str, dst: str) -> None:
        if moved:
            raise OSError("the driver died here")
        real_move(self, src, dst)
        moved.append(dst)

    monkeypatch.setattr(Lake, "move", move_once_then_die)
    full = PrepareInputs(str(archive / "Data_Entry_2017.csv"), str(archive / "images"), incremental=True)
    with pytest.raises(OSError, match="died"):
        run_prepare(spark, lake, settings, full)
    monkeypatch.setattr(Lake, "move", real_move)
    partial = spark.read.parquet(lake.store_url(settings.dataset)).count()
    assert 100 < partial < 160, "one of the two new files made it into the store"
    rerun = run_prepare(spark, lake, settings, full)
    assert rerun["metadata"]["already_in_store"] == partial
    assert rerun["images"]["written"] == 160 - partial
    _assert_every_image_once(spark, lake, settings, 160)


def test_incremental_refuses_a_different_image_size(spark, prepared, archive):
    _, lake, _ = prepared
    other = make_settings(Path(lake.root), "image.size=32")
    inputs = PrepareInputs(str(archive / "Data_Entry_2017.csv"), str(archive / "images"), incremental=True)
    with pytest.raises(UsageError, match="holds images of 64 px"):
        run_prepare(spark, lake, other, inputs)


@pytest.mark.parametrize("change", ["split.train=0.6,split.val=0.2", "split.salt=other"])
def test_incremental_refuses_a_different_split_rule(spark, prepared, archive, change):
    """A returning patient's new films must land in the split of their earlier films."""
    settings, lake, _ = prepared
    store = Path(lake.path("petastorm", settings.dataset))
    before = sorted(p.name for p in store.rglob("*.parquet"))
    assert before
    other = make_settings(Path(lake.root), *change.split(","))
    inputs = PrepareInputs(str(archive / "Data_Entry_2017.csv"), str(archive / "images"), incremental=True)
    with pytest.raises(UsageError, match="a patient's new films would land in another split"):
        run_prepare(spark, lake, other, inputs)
    assert sorted(p.name for p in store.rglob("*.parquet")) == before


def test_min_cases_filters_the_label_set(spark, archive, tmp_path):
    settings = make_settings(tmp_path, "labels.min_cases=12", "dataset=filtered")
    lake = Lake.at(settings.lake)
    summary = run_prepare(
        spark, lake, settings, PrepareInputs(str(archive / "Data_Entry_2017.csv"), str(archive / "images"))
    )
    counts = summary["metadata"]["finding_counts"]
    expected = [f for f in FINDINGS if counts[f] >= 12]
    assert 0 < len(expected) < len(FINDINGS)
    assert summary["label_set"] == expected
    row = _read_all(lake.store_url("filtered"), num_epochs=1)[0]
    assert decode_labels(row.labels).shape == (len(expected),)


def test_metadata_only(spark, archive, tmp_path):
    settings = make_settings(tmp_path)
    lake = Lake.at(settings.lake)
    summary = run_prepare(
        spark, lake, settings, PrepareInputs(str(archive / "Data_Entry_2017.csv"), None, metadata_only=True)
    )
    assert summary["mode"] == "metadata-only"
    assert summary["metadata"]["rows"] == 160
    assert not (tmp_path / "petastorm").exists()


def test_official_split_lists(spark, archive, tmp_path):
    with open(archive / "Data_Entry_2017.csv", newline="") as fh:
        ids = [r["Image Index"] for r in csv.DictReader(fh)]
    (tmp_path / "train_val_list.txt").write_text("\n".join(ids[:120]))
    (tmp_path / "test_list.txt").write_text("\n".join(ids[120:150]))
    settings = make_settings(tmp_path / "lake")
    summary = run_prepare(
        spark,
        Lake.at(settings.lake),
        settings,
        PrepareInputs(
            str(archive / "Data_Entry_2017.csv"),
            str(archive / "images"),
            split_lists=(str(tmp_path / "train_val_list.txt"), str(tmp_path / "test_list.txt")),
        ),
    )
    assert summary["splits"]["test"]["images"] == 30
    assert summary["splits"]["unlisted"]["images"] == 10
    assert summary["splits"]["train"]["images"] + summary["splits"]["val"]["images"] == 120


# -- usage errors ------------------------------------------------------------------------------
def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_usage_errors_name_the_file_and_the_fix(spark, tmp_path, archive):
    images = str(archive / "images")
    with pytest.raises(UsageError, match=r"metadata file .*nope.csv does not exist"):
        check_inputs(PrepareInputs(str(tmp_path / "nope.csv"), images))
    with pytest.raises(UsageError, match=r"is empty"):
        check_inputs(PrepareInputs(_write(tmp_path / "empty.csv", ""), images))
    wrong = _write(tmp_path / "wrong.csv", "Image,Labels,x\n1,2,3\n")
    with pytest.raises(UsageError, match=r"wrong.csv has 3 columns, the NIH format has 11"):
        check_inputs(PrepareInputs(wrong, images))
    header = list(METADATA_HEADER)
    header[1] = "Diagnosis"
    renamed = _write(tmp_path / "renamed.csv", ",".join(header) + "\n")
    with pytest.raises(UsageError, match=r"column 2 is 'Diagnosis', expected 'findinglabels'"):
        check_inputs(PrepareInputs(renamed, images))
    missing_column = _write(tmp_path / "missing.csv", ",".join(METADATA_HEADER[:4] + METADATA_HEADER[5:]) + "\n")
    with pytest.raises(UsageError, match=r"missing patientage"):
        check_inputs(PrepareInputs(missing_column, images))
    ok = str(archive / "Data_Entry_2017.csv")
    with pytest.raises(UsageError, match=r"images folder .*nowhere does not exist"):
        check_inputs(PrepareInputs(ok, str(tmp_path / "nowhere")))
    with pytest.raises(UsageError, match=r"images folder .*nowhere does not exist"):
        list_image_files(spark, str(tmp_path / "nowhere"))


def test_the_2017_header_with_a_trailing_empty_column_is_accepted(spark, tmp_path):
    text = ",".join(METADATA_HEADER) + ",\n" + ",".join(corpus.metadata_row("00000001_000.png", age="058Y")) + ",\n"
    df = validate_metadata(read_metadata(spark, _write(tmp_path / "2017.csv", text)))
    row = df.collect()[0]
    assert row["reason"] is None and row["age"] == 58 and row["image_id"] == "00000001_000.png"
