"""The risk order: which film a radiologist should open first, defined here only.

A film's risk score is the highest calibrated probability over its calibrated findings,
each weighted by the finding's urgency (``score.urgency``, 0 to 1; the defaults are
:data:`xray_spark.config.DEFAULT_URGENCY`). A finding that is not calibrated (too few
validation positives) has no weight: it is never called, so it never ranks a film. When
no finding of the model is calibrated, every finding counts with its urgency (a ranking
by the raw scores). The score is computed when a film is scored and stored in
``xray.predictions`` (``risk_score``, ``risk_finding``): a change of the urgencies orders
the films scored after it, not those scored before.

Films are ordered by the risk score (highest first, films without one last), then by the
top probability, then by image id (:data:`ORDER`): the order of ``xray.worklist``, the
worklist pages and ``score --heatmaps top:N``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pyspark.sql import Column
from pyspark.sql import functions as F

#: The risk order, as (column, direction) from the first key to the last.
ORDER: tuple[tuple[str, str], ...] = (
    ("risk_score", "DESC NULLS LAST"),
    ("top_probability", "DESC"),
    ("image_id", "ASC"),
)
#: A finding's urgency when ``score.urgency`` does not name it.
DEFAULT_WEIGHT = 0.5


def order_columns() -> list[Column]:
    """:data:`ORDER` as DataFrame sort columns."""
    how = {"DESC NULLS LAST": Column.desc_nulls_last, "DESC": Column.desc, "ASC": Column.asc}
    return [how[direction](F.col(name)) for name, direction in ORDER]


def order_sql(alias: str = "") -> str:
    """:data:`ORDER` as an SQL ``ORDER BY`` list, its columns qualified with ``alias`` (e.g. ``p``)."""
    prefix = f"{alias}." if alias else ""
    return ", ".join(f"{prefix}{name} {direction}" for name, direction in ORDER)


def risk_weights(
    labels: Sequence[str], thresholds: Mapping[str, float | None], urgency: Mapping[str, float]
) -> list[float | None]:
    """Each label's weight in the risk score: its urgency, or None for a finding that is not calibrated."""
    if all(thresholds[label] is None for label in labels):
        return [float(urgency.get(label, DEFAULT_WEIGHT)) for label in labels]  # nothing calibrated: the scores
    return [None if thresholds[x] is None else float(urgency.get(x, DEFAULT_WEIGHT)) for x in labels]


#: The temporary column that holds a film's weighted probabilities while its risk is computed.
WEIGHTED = "_risk"


def weighted_probabilities(probabilities: Column, weights: Sequence[float | None]) -> Column:
    """The array to put in :data:`WEIGHTED`: each calibrated probability times its weight (null: no weight)."""
    return F.array(*[F.lit(None).cast("float") if w is None else probabilities[i] * w for i, w in enumerate(weights)])


def risk_columns(labels: Sequence[str]) -> tuple[Column, Column]:
    """``risk_score`` and ``risk_finding`` over the :data:`WEIGHTED` column of a frame."""
    label_array = F.array(*[F.lit(x) for x in labels])
    where = F.expr(f"array_position({WEIGHTED}, array_max({WEIGHTED}))").cast("int")
    return (
        F.array_max(WEIGHTED).cast("float").alias("risk_score"),
        F.element_at(label_array, where).alias("risk_finding"),
    )
