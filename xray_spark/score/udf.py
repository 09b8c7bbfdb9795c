"""The scoring frame: the store's rows in, calibrated probabilities, calls and risk out.

The probabilities come from the pandas UDF of :mod:`xray_spark.score.runtime`, in Arrow
batches of at most :data:`ARROW_BATCH_IMAGES` x ``batch_size`` rows (memory per worker
stays bounded however large a partition is). The model holds its own preprocessing, so
scoring feeds exactly the pixels training saw. Calibration, the calls at each finding's
threshold and the risk score (:mod:`xray_spark.risk`) are Spark expressions on the result.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from xray_spark import risk
from xray_spark.labels import probability_column, raw_score_column
from xray_spark.lake.schema import XraySchema
from xray_spark.operating import EPS
from xray_spark.score.run import ScoreRun
from xray_spark.score.runtime import ModelRef, PredictFn, predict_png_udf

#: Rows per Arrow batch sent to the scoring UDF, in model batches.
ARROW_BATCH_IMAGES = 4

#: The column :func:`score_frame` adds: why a film is not scored (null when it is).
NOT_SCORED = "not_scored_reason"
#: A film whose model outputs hold NaN or an infinity: a broken model's output is never a probability
#: (Spark orders NaN above every number, so clamping it would make it 1 - eps, a certain call).
NON_FINITE = "the model's output is not a finite number (NaN or infinite): not scored, nothing called"


def non_finite(raw: Column) -> Column:
    """Whether any of a film's raw outputs is NaN, infinite or missing."""
    return F.exists(raw, lambda x: x.isNull() | F.isnan(x) | (F.abs(x) == float("inf")))


def prediction_columns(labels: Sequence[str]) -> list[str]:
    return [probability_column(label) for label in labels]


def calibrated(raw: Column, fitted: tuple[float, float] | None) -> Column:
    """Platt scaling in Spark: ``1 / (1 + exp(-(a * logit(raw) + b)))``; the raw score where none was fitted."""
    if fitted is None:
        return raw.cast("float")
    a, b = fitted
    x = F.least(F.greatest(raw.cast("double"), F.lit(EPS)), F.lit(1 - EPS))
    return (1 / (1 + F.exp(-(F.lit(a) * F.log(x / (1 - x)) + F.lit(b))))).cast("float")


def score_frame(
    rows: DataFrame,
    run: ScoreRun,
    *,
    batch_size: int,
    urgency: Mapping[str, float] | None = None,
    make_predict_fn: Callable[[ModelRef], PredictFn] | None = None,
) -> DataFrame:
    """Predictions for ``rows``: calibrated and raw scores per label, the top finding, the positives, the risk.

    A finding is called positive when its calibrated probability reaches its threshold; one
    without a threshold (not calibrated) is never called. A film whose raw outputs are not all
    finite has its reason in :data:`NOT_SCORED` (null otherwise): its other columns mean nothing.
    ``make_predict_fn`` is the model loader (default: the runtime of the model file's format,
    :mod:`xray_spark.model_runtime`).
    """
    card = run.card
    labels = card.labels
    thresholds = [card.thresholds[label] for label in labels]
    predict = predict_png_udf(ModelRef.of(card), batch_size, make_predict_fn)
    scored = rows.withColumn("_raw", predict(F.col(XraySchema.image.name)))
    scored = scored.withColumn(
        "_p", F.array(*[calibrated(F.col("_raw")[i], card.calibration.get(x)) for i, x in enumerate(labels)])
    )
    weights = risk.risk_weights(labels, card.thresholds, urgency or {})
    scored = scored.withColumn(risk.WEIGHTED, risk.weighted_probabilities(F.col("_p"), weights))
    prob_cols = [F.col("_p")[i].alias(name) for i, name in enumerate(prediction_columns(labels))]
    raw_cols = [F.col("_raw")[i].alias(raw_score_column(label)) for i, label in enumerate(labels)]
    label_array = F.array(*[F.lit(x) for x in labels])
    top_index = F.expr("array_position(_p, array_max(_p))")
    limits = F.array(*[F.lit(t).cast("float") for t in thresholds])
    positives = F.filter(
        F.arrays_zip(label_array.alias("label"), F.col("_p").alias("p"), limits.alias("t")),
        lambda z: z["p"] >= z["t"],
    )
    return scored.select(
        "image_id",
        "patient_id",
        "follow_up",
        "view",
        F.lit(run.dataset).alias("dataset"),
        F.lit(card.version).alias("model_version"),
        F.lit(run.scored_at).cast("timestamp").alias("scored_at"),
        *prob_cols,
        F.element_at(label_array, top_index.cast("int")).alias("top_finding"),
        F.array_max("_p").alias("top_probability"),
        F.transform(positives, lambda z: z["label"]).alias("called"),
        *risk.risk_columns(labels),
        *raw_cols,
        F.when(non_finite(F.col("_raw")), F.lit(NON_FINITE)).alias(NOT_SCORED),
    )
