"""The ``xray.models`` and ``xray.model_aliases`` tables: which models a lake holds, proof they are the ones trained,
and which one is the champion.

* training records the SHA-256 of ``model.json`` and of the model file in ``xray.models``
  (:func:`record_model`); scoring and evaluation refuse a folder whose files no longer
  match (a tampered or swapped file), or whose version is not registered in the lake
  (:func:`resolve_model`);
* a model trained elsewhere enters a lake only through :func:`register_model`
  (``python jobs/register_model.py --model DIR``), which checks the format, loads it in
  safe mode, checks its shapes against its model.json, copies the folder under
  ``lake/models/<version>`` and records the hashes;
* an alias (``champion``) names the model the views and the nightly flow use (:func:`set_alias`).

What a model folder holds and how it is read is :mod:`xray_spark.model_card`; which model
files may be loaded at all is :mod:`xray_spark.models`.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from xray_spark.errors import ModelRefused, UsageError
from xray_spark.lake import Lake, catalog, tables
from xray_spark.model_card import META_FILE, ModelCard, digests, file_sha256, load_checked, read_card

log = logging.getLogger(__name__)

CHAMPION = tables.CHAMPION


def registered_row(spark: SparkSession, lake: Lake, version: str) -> dict[str, Any] | None:
    models = tables.read_table(spark, lake, "models")
    if models is None:
        return None
    row = models.where(F.col("version") == version).orderBy(F.desc("created")).first()
    return row.asDict() if row is not None else None


def verify_registered(spark: SparkSession, lake: Lake, folder: ModelCard) -> None:
    """The folder's model.json and model file are byte for byte those recorded in ``xray.models``."""
    row = registered_row(spark, lake, folder.version)
    how = f"register it with: python jobs/register_model.py --lake {lake.root} --model {folder.path}"
    if row is None:
        raise ModelRefused(
            f"model {folder.version} ({folder.path}) is not registered in xray.models of this lake: {how}"
        )
    if not row.get("model_sha256") or not row.get("meta_sha256"):
        raise ModelRefused(f"model {folder.version} was registered without SHA-256 digests (an older lake): {how}")
    meta_sha = file_sha256(os.path.join(folder.path, META_FILE))
    for what, recorded, found in (
        (os.path.basename(folder.model_file), row["model_sha256"], folder.model_sha256),
        (META_FILE, row["meta_sha256"], meta_sha),
    ):
        if recorded != found:
            raise ModelRefused(
                f"{what} of model {folder.version} in {folder.path} does not match the SHA-256 recorded in "
                f"xray.models at training ({found[:12]}... vs {recorded[:12]}...): the file was changed; "
                "restore it, or retrain"
            )


def alias_holder(spark: SparkSession, lake: Lake, alias: str = CHAMPION) -> dict[str, Any] | None:
    """The newest ``xray.model_aliases`` row of ``alias`` (who holds it, since when, why), or None."""
    aliases = tables.read_table(spark, lake, "model_aliases")
    if aliases is None:
        return None
    row = aliases.where(F.col("alias") == alias).orderBy(F.desc("set_at")).first()
    return row.asDict() if row is not None else None


def challenge_outcome(spark: SparkSession, lake: Lake, challenge_id: str) -> dict[str, Any]:
    """What ``xray.challenges`` recorded of one challenge: champion, challenger, passed, the rules' outcomes."""
    import json

    from pyspark.sql import functions as F

    table = tables.read_table(spark, lake, "challenges")
    row = None if table is None else table.where(F.col("challenge_id") == challenge_id).first()
    if row is None:
        raise UsageError(
            f"no challenge {challenge_id!r} in xray.challenges: run jobs/challenge.py --challenger V first"
        )
    return {
        "challenge_id": challenge_id,
        "champion": row["champion"],
        "challenger": row["challenger"],
        "passed": bool(row["passed"]),
        "outcome": (row.asDict().get("outcome") or ("PASS" if row["passed"] else "FAIL")),
        "rules": json.loads(row["rules"]),
    }


def set_alias(spark: SparkSession, lake: Lake, version: str, *, alias: str = CHAMPION, reason: str = "") -> dict:
    """Give ``alias`` to a registered, intact model version (a row appended to ``xray.model_aliases``)."""
    import getpass

    if not alias or not alias.replace("-", "").replace("_", "").isalnum():
        raise UsageError(f"alias {alias!r}: use letters, digits, '-' and '_'")
    if registered_row(spark, lake, version) is None:
        raise UsageError(f"model version {version!r} is not registered in xray.models of this lake")
    verify_registered(spark, lake, read_card(lake.path("models", version)))
    row = {
        "alias": alias,
        "version": version,
        "set_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "set_by": getpass.getuser(),
        "reason": reason or None,
    }
    tables.write_table(
        spark.createDataFrame([row], catalog.schema("model_aliases")), lake, "model_aliases", mode="append"
    )
    tables.register_tables(spark, lake)  # the views follow the champion
    return row


def default_version(spark: SparkSession, lake: Lake) -> str:
    """The champion's version; without a champion, the newest registered model (and a warning)."""
    champion = alias_holder(spark, lake)
    if champion is not None:
        log.info(
            "model: the champion, %s (promoted by %s at %s)",
            champion["version"],
            champion["set_by"],
            champion["set_at"],
        )
        return str(champion["version"])
    models = tables.read_table(spark, lake, "models")
    newest = models.orderBy(F.desc("created"), F.desc("version")).first() if models is not None else None
    if newest is None:
        raise UsageError(f"no model in {lake.path('tables', 'models')}: train one with jobs/train.py first")
    log.warning(
        "model: no champion in this lake, so the newest model, %s; promote one with jobs/promote.py --model-version V",
        newest["version"],
    )
    return str(newest["version"])


def resolve_model(spark: SparkSession, lake: Lake, *, version: str | None = None, path: str | None = None) -> ModelCard:
    """The verified folder for ``--model PATH``, ``--model-version V`` or the default (:func:`default_version`)."""
    if path is None:
        path = lake.path("models", version or default_version(spark, lake))
    folder = read_card(path)
    verify_registered(spark, lake, folder)
    return folder


def models_row(card: ModelCard, *, dataset: str) -> dict[str, Any]:
    """The card's ``xray.models`` row: what it is, where it lies, and the digests of its two files."""
    meta = card.meta
    return {
        "version": card.version,
        "created": str(meta.get("created") or dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")),
        "path": card.path,
        "model": card.kind,
        "dataset": card.dataset or dataset,
        "labels": card.labels,
        "image_size": card.size,
        "val_auroc_mean": float(meta["val_auroc_mean"]) if meta.get("val_auroc_mean") is not None else None,
        "best_epoch": int(meta.get("best_epoch") or 0),
        "num_workers": int(meta.get("training", {}).get("num_workers", 1) or 1),
        **digests(card),
    }


def record_model(spark: SparkSession, lake: Lake, card: ModelCard, *, dataset: str) -> dict[str, Any]:
    """Append the card's row to ``xray.models``; returns it."""
    row = models_row(card, dataset=dataset)
    tables.write_table(spark.createDataFrame([row], catalog.schema("models")), lake, "models", mode="append")
    return row


def register_model(spark: SparkSession, lake: Lake, source: str, *, dataset: str) -> dict[str, Any]:
    """Check a model folder trained elsewhere, copy it into ``lake/models/<version>`` and record it."""
    card = read_card(os.path.abspath(source))
    if registered_row(spark, lake, card.version) is not None:
        raise UsageError(
            f"model version {card.version} is already registered in this lake: give the copy a new version"
        )
    load_checked(card)
    target = lake.path("models", card.version)
    if os.path.normpath(target) != os.path.normpath(card.path):
        if os.path.exists(target):
            raise UsageError(f"{target} exists already: remove it or give the model another version")
        shutil.copytree(card.path, target)
    return record_model(spark, lake, read_card(target), dataset=dataset)
