"""The heatmap step of a scoring run: which films and findings, computed on the executors, published.

See :mod:`xray_spark.score.heatmaps` for the method and ``xray.heatmaps`` for the rows.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from xray_spark import risk
from xray_spark.config import Settings
from xray_spark.heatmap_choice import HeatmapChoice, parse_heatmap_choice
from xray_spark.labels import probability_column
from xray_spark.lake import Lake
from xray_spark.score.heatmaps import HEATMAP_SCHEMA, make_heatmapper
from xray_spark.score.publish import HEATMAPS, PREDICTIONS, publish_run
from xray_spark.score.run import ScoreRun
from xray_spark.score.runtime import ModelRef
from xray_spark.session import temporary_conf

log = logging.getLogger(__name__)


def _probability_of(labels: list[str], finding: Column) -> Column:
    pairs = [item for label in labels for item in (F.lit(label), F.col(probability_column(label)))]
    return F.element_at(F.create_map(*pairs), finding)


def chosen_findings(run: DataFrame, labels: list[str], choice: HeatmapChoice) -> DataFrame:
    """(image_id, finding, probability) to explain: every finding called, or those of the N riskiest films."""
    if choice.kind == "called":
        rows = run.where(F.size("called") > 0).withColumn("finding", F.explode("called"))
    else:
        top = run.orderBy(*risk.order_columns()).limit(choice.n)
        fallback = F.array(F.coalesce(F.col("risk_finding"), F.col("top_finding")))
        findings = F.when(F.size("called") > 0, F.col("called")).otherwise(fallback)
        rows = top.withColumn("finding", F.explode(findings))
    return rows.select("image_id", "finding", _probability_of(labels, F.col("finding")).alias("probability"))


def write_heatmaps(
    spark: SparkSession, lake: Lake, run: ScoreRun, settings: Settings, *, written: int
) -> dict[str, Any]:
    """Heatmaps for the run's films chosen by ``score.heatmaps``, published as part of ``xray.heatmaps``."""
    choice = parse_heatmap_choice(settings.score.heatmaps)
    if choice.kind == "none" or not written:
        return {"choice": str(choice), "written": 0}
    started = time.monotonic()
    card = run.card
    ref = ModelRef.of(card)
    if not ref.fmt.explains:
        log.warning("model %s is a %s: its runtime cannot explain, so no heatmaps", card.version, ref.fmt.description)
        return {
            "choice": str(choice),
            "written": 0,
            "not_drawn": f"the runtime of {ref.fmt.suffix} files cannot explain",
        }
    run_path = lake.path("tables", PREDICTIONS, f"score_date={run.score_date}", f"run_id={run.run_id}")
    wanted = chosen_findings(spark.read.parquet(lake.url_of(run_path)), card.labels, choice)
    store = spark.read.parquet(lake.store_url(run.dataset))
    rows = wanted.join(store.select("image_id", "image", "original_width", "original_height"), "image_id")
    batch = settings.score.batch_size
    maps = rows.mapInPandas(make_heatmapper(ref, card.labels, batch), HEATMAP_SCHEMA)
    maps = maps.select(
        "*",
        F.lit(run.dataset).alias("dataset"),
        F.lit(card.version).alias("model_version"),
        F.lit(run.scored_at).cast("timestamp").alias("scored_at"),
    )
    with temporary_conf(spark, "spark.sql.execution.arrow.maxRecordsPerBatch", str(batch)):
        n = publish_run(maps, lake, score_date=run.score_date, run_id=run.run_id, table=HEATMAPS)
    return {"choice": str(choice), "written": n, "seconds": round(time.monotonic() - started, 1)}
