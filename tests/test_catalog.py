"""The table catalog: every table declared once, the files the jobs write agree with it, and the SQL catalog
shows its comments."""

from __future__ import annotations

import ast

import pytest

from xray_spark.lake import catalog, tables

from .conftest import ROOT


def test_every_declared_type_is_a_spark_type_and_partitions_are_columns():
    for table in catalog.TABLES.values():
        names = table.column_names()
        assert len(set(names)) == len(names), table.name
        assert set(table.partitioned_by) <= set(names), table.name
        assert all(c.comment for c in table.columns), f"xray.{table.name} has a column without a comment"
        table.schema()  # every type parses
    with pytest.raises(KeyError, match="not a table of the lake"):
        catalog.table("studys")


def test_the_files_prepare_writes_have_the_catalogs_columns_and_types(spark, prepared):
    _, lake, _ = prepared
    for name in ("studies", "boxes"):
        written = {f.name: f.dataType for f in spark.read.parquet(lake.table_url(name)).schema.fields}
        declared = {f.name: f.dataType for f in catalog.schema(name).fields}
        assert written == declared, name


def test_the_sql_catalog_describes_each_column_with_its_comment(spark, prepared):
    _, lake, _ = prepared
    tables.register_tables(spark, lake)
    described = {r["col_name"]: r["comment"] for r in spark.sql("DESCRIBE TABLE xray.studies").collect()}
    assert described["image_id"] == catalog.table("studies").columns[0].comment
    assert described["accession_number"].startswith("the DICOM accession number")


def test_no_table_schema_is_declared_outside_the_catalog():
    """A StructType or DDL string of a table's columns belongs to the catalog; the other modules take theirs from it."""
    declared_elsewhere = []
    for path in sorted((ROOT / "xray_spark").rglob("*.py")):
        if path.name == "catalog.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
                name = node.targets[0].id
                is_schema = name.endswith("SCHEMA") and not isinstance(node.value, ast.Call | ast.Attribute)
                if is_schema or (name.endswith("SCHEMA") and _builds_struct(node.value)):
                    declared_elsewhere.append(f"{path.relative_to(ROOT)}:{name}")
    allowed = {"xray_spark/deliver/build.py:BUILT_SCHEMA", "xray_spark/monitor/films.py:STATS_SCHEMA"}
    allowed |= {"xray_spark/prepare/sources/dicom/headers.py:HEADER_SCHEMA"}  # frames between steps, not tables
    allowed |= {"xray_spark/web/accounts.py:SCHEMA", "xray_spark/web/verdicts.py:SCHEMA"}  # SQLite, outside the lake
    assert set(declared_elsewhere) <= allowed, sorted(set(declared_elsewhere) - allowed)


def _builds_struct(value: ast.AST) -> bool:
    return isinstance(value, ast.Call) and getattr(value.func, "attr", getattr(value.func, "id", "")) == "StructType"


def test_a_lake_from_the_release_before_gets_todays_column_names_once(spark, tmp_path):
    """Files with a former column name (``positive_findings``, ``patient_key``) are rewritten with today's, rows
    and partitions kept; a lake mixing both names (a night after the upgrade) keeps each row's value; the views
    then tell patients apart across datasets."""
    from pyspark.sql import functions as F

    from xray_spark.lake import Lake
    from xray_spark.lake.migrate import migrate

    lake = Lake.at(str(tmp_path / "lake"))
    old = spark.createDataFrame(
        [("a.png", 7, 0, "PA", "nih", "v1", ["Mass"], 0.9), ("b.png", 7, 0, "PA", "hospital", "v1", [], 0.1)],
        "image_id string, patient_id int, follow_up int, view string, dataset string, model_version string, "
        "positive_findings array<string>, p_mass float",
    ).withColumns({"scored_at": F.current_timestamp(), "score_date": F.lit("2026-12-01"), "run_id": F.lit("r1")})
    old.write.partitionBy("score_date", "run_id").parquet(lake.table_url("predictions"))
    new = old.limit(1).withColumnRenamed("positive_findings", "called").withColumn("run_id", F.lit("r2"))
    new.withColumn("image_id", F.lit("c.png")).write.mode("append").partitionBy("score_date", "run_id").parquet(
        lake.table_url("predictions")
    )
    spark.createDataFrame(
        [("1.2.3", "9f00", "hospital")], "image_id string, patient_key string, dataset string"
    ).write.partitionBy("dataset").parquet(lake.table_url("dicom_instances"))

    assert sorted(migrate(spark, lake)) == ["dicom_instances", "predictions"]
    predictions = spark.read.parquet(lake.table_url("predictions"))
    assert "positive_findings" not in predictions.columns
    called = {r["image_id"]: list(r["called"]) for r in predictions.collect()}
    assert called == {"a.png": ["Mass"], "b.png": [], "c.png": ["Mass"]}
    assert {r["run_id"] for r in predictions.collect()} == {"r1", "r2"}  # partitions kept
    instances = spark.read.parquet(lake.table_url("dicom_instances")).collect()
    assert [(r["patient_pseudonym"], r["dataset"]) for r in instances] == [("9f00", "hospital")]
    assert migrate(spark, lake) == []  # once: the lake records its names

    tables.register_tables(spark, lake)
    patients = spark.sql("SELECT image_id, patient FROM xray.latest_predictions ORDER BY image_id").collect()
    assert [tuple(r) for r in patients] == [("a.png", "nih/7"), ("b.png", "hospital/7"), ("c.png", "nih/7")]
    described = {r["col_name"]: r["comment"] for r in spark.sql("DESCRIBE TABLE xray.predictions").collect()}
    assert described["called"].startswith("the findings the model called")
