"""The deliver job: the champion's results for a DICOM dataset's films sent back into each film's study.

1. The films to deliver: those of ``settings.dataset`` that the champion scored (its newest
   scoring of each), whose newest ``xray.deliveries`` row at a destination is not ``sent``.
2. Their source files: from the film map outside the lake (:func:`privacy.read_film_map`):
   the one place where delivery learns where a film's file, and so its patient, is.
3. ``pending`` rows for every film and destination about to be tried.
4. The SR (and SC) of each film built on the executors in Arrow batches (:mod:`.build`).
5. Each object sent by the driver, one association per destination (:mod:`.send`), and the
   outcome recorded every ``deliver.record_every`` films (:mod:`.record`).

Nothing identifying is written to the lake: the objects travel from the executors to the
driver and on to the destination; the table records UIDs, statuses and reasons only.
"""

from __future__ import annotations

import collections
import concurrent.futures
import datetime as dt
import io
import itertools
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

import xray_spark
from xray_spark import locks, privacy, progress, registry, spool
from xray_spark.config import Settings
from xray_spark.deliver import record
from xray_spark.deliver.build import BUILT_SCHEMA, Pictures, make_builder
from xray_spark.deliver.objects import ModelFacts
from xray_spark.deliver.run import DeliverRun, DeliverySummary
from xray_spark.deliver.send import (
    COMPREHENSIVE_SR,
    SECONDARY_CAPTURE,
    FailureKind,
    Sender,
    SendFailure,
    sender_for,
)
from xray_spark.destinations import Destination, parse_destination
from xray_spark.errors import UsageError
from xray_spark.imaging.decode import display_image
from xray_spark.labels import probability_column
from xray_spark.lake import Lake, is_inside, tables
from xray_spark.model_card import ModelCard

#: A destination that refused this many connections in a row is not tried again in the run.
MAX_CONNECT_FAILURES = 3
#: The most result bytes one wave of built objects brings to the driver (two waves are held at once).
MAX_WAVE_BYTES = 256 << 20
SR_BYTES = 64 << 10  # an SR of 14 findings is 20-40 KB
NO_SOURCE = SendFailure(
    FailureKind.NO_SOURCE,
    "no source file recorded for this film (the film map outside the lake has no entry for it)",
)


def run_delivery(
    spark: SparkSession,
    lake: Lake,
    settings: Settings,
    *,
    destinations: Sequence[str] | None = None,
    secondary_capture: bool | None = None,
    display: Callable[[bytes], np.ndarray] | None = None,
    retry_given_up: bool = False,
) -> DeliverySummary:
    """Deliver the champion's results for ``settings.dataset``; ``display`` renders a film for the SC (by default
    as prepare displays it: :func:`xray_spark.imaging.decode.display_image`, 8-bit gray at full size).

    Films given up before (their source could not be used) are left out unless ``retry_given_up``."""
    options = settings.deliver
    targets = _destinations(destinations if destinations is not None else options.destinations, lake)
    with_sc = options.secondary_capture if secondary_capture is None else secondary_capture
    if with_sc and display is None:
        display = display_image
    run = DeliverRun(spark, lake, settings, _champion(spark, lake), tuple(targets), with_sc)
    started, dataset = time.monotonic(), run.dataset
    with locks.lake_lock(lake, f"deliver-{dataset}", job="deliver", wait_seconds=settings.locks.wait_seconds):
        films = _results(spark, lake, dataset, run.card)
        todo, retried, aged = _to_do(run, films, retry_given_up)
        if aged:
            record.append(spark, lake, aged)
        summary = DeliverySummary(
            dataset=dataset,
            model_version=run.version,
            run_id=run.run_id,
            secondary_capture=with_sc,
            films_scored=films.count(),
            to_deliver=len(todo),
            retried=retried,
            aged_out=len(aged),
            aged_out_reasons=dict(collections.Counter(row["error"] for row in aged).most_common(5)),
            destinations=[t.name for t in targets],
        )
        if todo:
            _pending(run, todo)
            pictures = Pictures(display, options.max_side, options.sc_without_call) if with_sc and display else None
            builder = make_builder(model_facts(run.card), options.uid_root, pictures, settings.image.max_file_bytes)
            with progress.step("delivering", films=len(todo)):
                summary.update(_send_all(run, films, todo, builder))
    summary["seconds"] = round(time.monotonic() - started, 2)
    return summary


def _destinations(texts: Sequence[str], lake: Lake) -> list[Destination]:
    targets = [parse_destination(t) for t in texts]
    if not targets:
        raise UsageError("no destination: pass --to AE_TITLE@HOST:PORT or --to-folder DIR, or set deliver.destinations")
    for target in targets:
        if target.folder and lake.is_local and is_inside(target.folder, lake.root):
            raise UsageError(f"destination folder {target.folder} is inside the lake: results carry identity")
    if len({t.name for t in targets}) != len(targets):
        raise UsageError("a destination is named twice")
    return targets


def _champion(spark: SparkSession, lake: Lake) -> ModelCard:
    holder = registry.alias_holder(spark, lake)
    if holder is None:
        raise UsageError("the lake has no champion model: promote one first (jobs/promote.py), then deliver")
    return registry.resolve_model(spark, lake, version=str(holder["version"]))


def model_facts(card: ModelCard) -> ModelFacts:
    return ModelFacts(
        version=card.version,
        kind=card.kind,
        labels=tuple(card.labels),
        thresholds=dict(card.thresholds),
        threshold_rule=card.threshold_rule,
        package_version=xray_spark.__version__,
    )


def _newest(df: DataFrame, keys: Sequence[str]) -> DataFrame:
    order = Window.partitionBy(*keys).orderBy(F.desc("scored_at"))
    return df.withColumn("_n", F.row_number().over(order)).where(F.col("_n") == 1).drop("_n")


def _results(spark: SparkSession, lake: Lake, dataset: str, card: ModelCard) -> DataFrame:
    """Per DICOM film the champion scored: its probabilities (card order), called findings, risk finding, regions."""
    instances = tables.read_table(spark, lake, "dicom_instances")
    instances = instances.where(F.col("dataset") == dataset) if instances is not None else None
    if instances is None or instances.isEmpty():
        raise UsageError(
            f"dataset {dataset!r} holds no DICOM films: delivery sends results back to the PACS the films came from"
        )
    predictions = tables.read_table(spark, lake, "predictions")
    if predictions is None:
        raise UsageError(f"nothing is scored yet: run score on dataset {dataset!r} first")
    mine = predictions.where((F.col("dataset") == dataset) & (F.col("model_version") == card.version))
    probabilities = F.array(*[F.col(probability_column(label)).cast("double") for label in card.labels])
    scored = _newest(mine, ["image_id"]).select(
        "image_id", probabilities.alias("probabilities"), "called", "risk_finding"
    )
    films = scored.join(instances.select("image_id", "study_uid").distinct(), "image_id")
    priors = tables.read_table(spark, lake, "priors")
    if priors is not None:  # a new patient's earlier films: the PACS has them, and their reports
        films = films.join(priors.where(F.col("dataset") == dataset).select("image_id"), "image_id", "left_anti")
    maps = tables.read_table(spark, lake, "heatmaps")
    if maps is not None:
        maps = _newest(
            maps.where((F.col("dataset") == dataset) & (F.col("model_version") == card.version)),
            ["image_id", "finding"],
        )
        fields = ["finding", "probability", "box_x", "box_y", "box_w", "box_h", "heatmap_png"]
        regions = maps.groupBy("image_id").agg(F.collect_list(F.struct(*fields)).alias("regions"))
        films = films.join(regions, "image_id", "left")
    else:
        films = films.withColumn("regions", F.lit(None))
    return films.localCheckpoint()


def _to_do(run: DeliverRun, films: DataFrame, retry_given_up: bool) -> tuple[dict[str, dict[str, int]], int, list]:
    """(image_id -> {destination: attempts so far} for every film not yet sent to a destination nor given up,
    how many of those were tried before, the ``given_up`` rows of the films first tried more than
    ``deliver.retry_days`` ago)."""
    names = run.spark.createDataFrame([(t.name,) for t in run.targets], "destination string")
    pairs = films.select("image_id").crossJoin(names)
    done = record.state(run.spark, run.lake, run.dataset, run.version)
    columns = ["image_id", "destination", "attempts", "first_at", "error"]
    if done is not None:
        pairs = pairs.join(done.select("status", *columns), ["image_id", "destination"], "left").where(
            ~F.coalesce(F.col("status"), F.lit("")).isin(record.SENT, *([] if retry_given_up else [record.GIVEN_UP]))
        )
    else:
        pairs = pairs.select("*", F.lit(0).alias("attempts"), F.lit(None).alias("first_at"), F.lit(None).alias("error"))
    days = run.settings.deliver.retry_days
    oldest = record.now() - dt.timedelta(days=days)
    todo: dict[str, dict[str, int]] = collections.defaultdict(dict)
    aged, retried = [], set()
    for row in pairs.select(*columns).toLocalIterator():
        attempts = int(row["attempts"] or 0)
        first = row["first_at"]
        if first is not None and first < oldest and not retry_given_up:
            last = row["error"] or "never acknowledged"
            aged.append(_given_up_row(run, row["image_id"], row["destination"], attempts, days, last))
            continue
        todo[row["image_id"]][row["destination"]] = attempts
        if first is not None:
            retried.add(row["image_id"])
    return dict(todo), len(retried), aged


def _given_up_row(run: DeliverRun, image: str, destination: str, attempts: int, days: float, last: str) -> dict:
    return {
        "image_id": image,
        "model_version": run.version,
        "destination": destination,
        "status": record.GIVEN_UP,
        "attempt": attempts,
        "error": f"not delivered within {days:g} days of its first try (deliver.retry_days); last: {last}",
        "at": record.now(),
        "run_id": run.run_id,
        "dataset": run.dataset,
    }


def _pending(run: DeliverRun, todo: dict[str, dict[str, int]]) -> None:
    at = record.now()
    rows = [
        {
            "image_id": image,
            "model_version": run.version,
            "destination": name,
            "status": record.PENDING,
            "attempt": attempts,
            "at": at,
            "run_id": run.run_id,
            "dataset": run.dataset,
        }
        for image, by_destination in todo.items()
        for name, attempts in by_destination.items()
    ]
    record.append(run.spark, run.lake, rows)


def _sources(spark: SparkSession, settings: Settings, films: DataFrame, todo) -> DataFrame:
    """The films to deliver with their source file (bytes of the path, never a string column) and pixel hash."""
    located = privacy.read_film_map(settings.privacy, settings.dataset)
    rows = [
        (
            image,
            os.fsencode(spool.where_now(located[image][0])) if image in located else None,
            located.get(image, ("", ""))[1],
        )
        for image in todo
    ]
    schema = T.StructType(
        [
            T.StructField("image_id", T.StringType()),
            T.StructField("path", T.BinaryType()),
            T.StructField("pixel_sha256", T.StringType()),
        ]
    )
    where = spark.createDataFrame(pd.DataFrame(rows, columns=["image_id", "path", "pixel_sha256"]), schema)
    return films.join(where, "image_id")


class _Outcomes:
    """Each film's outcome per destination, counted and appended to ``xray.deliveries`` in groups."""

    def __init__(self, run: DeliverRun) -> None:
        self.run, self.settings = run, run.settings
        self.counts = {t.name: collections.Counter() for t in run.targets}
        self.errors: collections.Counter = collections.Counter()
        self.given_up: collections.Counter = collections.Counter()
        self.rows: list[dict[str, Any]] = []
        self.films = 0

    def add(self, row: dict[str, Any], name: str, attempts: int, failure: SendFailure | None) -> None:
        status = record.FAILED if failure else record.SENT
        error = failure.reason if failure else None
        if failure and gives_up(failure, attempts + 1, self.settings.deliver.give_up_after_attempts):
            status = record.GIVEN_UP
            self.given_up[error] += 1
        self.counts[name][status] += 1
        if status == record.FAILED:
            self.errors[error] += 1
        self.rows.append(
            {
                "image_id": row["image_id"],
                "model_version": self.run.version,
                "destination": name,
                "status": status,
                "attempt": attempts + 1,
                "sr_uid": row.get("sr_uid"),
                "sc_uid": row.get("sc_uid"),
                "error": error,
                "at": record.now(),
                "run_id": self.run.run_id,
                "dataset": self.settings.dataset,
            }
        )

    def film_done(self) -> None:
        self.films += 1
        if self.films % self.settings.deliver.record_every == 0:
            self.flush()

    def flush(self, *, last: bool = False) -> None:
        record.append(self.run.spark, self.run.lake, self.rows, register=last)
        self.rows = []

    def summary(self) -> DeliverySummary:
        return {
            "delivered": {name: dict(c) for name, c in self.counts.items()},
            "sent": sum(c[record.SENT] for c in self.counts.values()),
            "failed": sum(c[record.FAILED] for c in self.counts.values()),
            "given_up": sum(c[record.GIVEN_UP] for c in self.counts.values()),
            "errors": dict(self.errors.most_common(10)),
            "given_up_reasons": dict(self.given_up.most_common(10)),
        }


def gives_up(failure: SendFailure, attempts: int, after: int) -> bool:
    """Whether a film's failure is its source's, for good: none recorded, or gone or changed ``after`` runs running.
    A destination's failure (unreachable, refusing) is never given up: the next run tries again."""
    if failure.kind is FailureKind.NO_SOURCE:
        return True
    return failure.kind is FailureKind.SOURCE and attempts >= after


def _send_all(run: DeliverRun, films: DataFrame, todo: dict[str, dict[str, int]], builder) -> DeliverySummary:
    """Build on the executors, send from here, record every ``deliver.record_every`` films."""
    spark, options = run.spark, run.settings.deliver
    senders = {t.name: sender_for(t, options) for t in run.targets}
    outcomes = _Outcomes(run)
    refusing: collections.Counter = collections.Counter()
    todo_films = _sources(spark, run.settings, films, todo)
    missing = todo_films.where(F.col("path").isNull()).select("image_id").toLocalIterator()
    per_film = SR_BYTES + (3 * options.max_side**2 if builder.secondary_capture else 0)
    built = _built(spark, todo_films.where(F.col("path").isNotNull()), builder, options.batch_size, per_film)
    send_seconds = 0.0
    rejoined: dict[str, set[tuple[str, str]]] = collections.defaultdict(set)  # the audit trail's
    try:
        unrecorded = ({"image_id": r["image_id"], "failure": NO_SOURCE} for r in missing)
        for row in itertools.chain(unrecorded, built):
            for name, attempts in todo[row["image_id"]].items():
                started = time.monotonic()
                failure = row.get("failure") or _built_failure(row) or _deliver(senders[name], row, refusing, name)
                send_seconds += time.monotonic() - started
                outcomes.add(row, name, attempts, failure)
                if failure is None:
                    rejoined[name].add(_patient_and_study(row["sr"]))
            outcomes.film_done()
    finally:  # what was acknowledged is on record however the run ends (a kill leaves it pending)
        outcomes.flush(last=True)
        for sender in senders.values():
            sender.close()
        _audit(run, rejoined)
    return {**outcomes.summary(), "send_seconds": round(send_seconds, 2)}


def _patient_and_study(sr: bytes) -> tuple[str, str]:
    """The Patient ID and Study Instance UID a result object carries (the identity delivery re-joined)."""
    from pydicom import dcmread

    ds = dcmread(io.BytesIO(sr), stop_before_pixels=True, specific_tags=["PatientID", "StudyInstanceUID"])
    return str(ds.get("PatientID", "") or ""), str(ds.get("StudyInstanceUID", "") or "")


def _audit(run: DeliverRun, rejoined: dict[str, set[tuple[str, str]]]) -> None:
    """DICOM Instances Transferred, one message per destination: the patients and studies results went into."""
    from xray_spark import audit

    trail = audit.trail(run.settings)
    if trail is None:
        return
    for destination, sent in rejoined.items():
        us = audit.Participant(run.settings.deliver.ae_title, True, "", audit.SOURCE)
        them = audit.Participant(destination, False, "", audit.DESTINATION)
        subjects = [audit.patient(p) for p in sorted({p for p, _ in sent} - {""})]
        subjects += [audit.study(u) for u in sorted({u for _, u in sent} - {""})]
        trail.record(audit.INSTANCES_TRANSFERRED, "R", audit.SUCCESS, [us, them], subjects)


def _built(spark: SparkSession, films: DataFrame, builder, batch_size: int, per_film: int) -> Iterator[dict[str, Any]]:
    """Each film's objects, built on the executors a wave at a time: every core builds a batch of
    ``batch_size`` films, the wave comes back to the driver, and the next wave is built while this
    one is sent. The driver holds at most two waves, each at most :data:`MAX_WAVE_BYTES` of objects."""
    parallel = spark.sparkContext.defaultParallelism
    wave = max(parallel, min(parallel * batch_size, MAX_WAVE_BYTES // per_film))
    ids = [r["image_id"] for r in films.select("image_id").orderBy("image_id").collect()]
    numbered = spark.createDataFrame([(image, i // wave) for i, image in enumerate(ids)], "image_id string, wave int")
    waves = films.join(numbered, "image_id").localCheckpoint()

    def build(k: int) -> list:
        part = waves.where(F.col("wave") == k).drop("wave").repartition(parallel)
        return part.mapInPandas(builder, BUILT_SCHEMA).collect()

    n_waves = -(-len(ids) // wave)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="deliver-build") as ahead:
        pending = ahead.submit(build, 0) if n_waves else None
        for k in range(n_waves):
            rows = pending.result()
            pending = ahead.submit(build, k + 1) if k + 1 < n_waves else None
            for row in rows:
                yield row.asDict()


def _built_failure(row: dict[str, Any]) -> SendFailure | None:
    """The film's failure on the executors, if it had one: its source's, or its objects' building."""
    if not row.get("error"):
        return None
    return SendFailure(FailureKind.SOURCE if row.get("source_problem") else FailureKind.NOT_BUILT, row["error"])


def _deliver(sender: Sender, row: dict[str, Any], refusing: collections.Counter, name: str) -> SendFailure | None:
    """Send a film's SR, then its SC; the first failure is the film's (None: all acknowledged)."""
    if refusing[name] >= MAX_CONNECT_FAILURES:
        why = f"{name} unreachable: {MAX_CONNECT_FAILURES} connections in a row failed in this run"
        return SendFailure(FailureKind.UNREACHABLE, why)
    for kind, sop_class in (("sr", COMPREHENSIVE_SR), ("sc", SECONDARY_CAPTURE)):
        if row.get(kind) is None:
            continue
        failure = sender.send(row[kind], sop_class, row[f"{kind}_uid"])
        if failure is not None:
            refusing[name] = refusing[name] + 1 if failure.kind is FailureKind.UNREACHABLE else 0
            return failure
        refusing[name] = 0
    return None
