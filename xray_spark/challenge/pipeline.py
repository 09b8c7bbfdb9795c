"""The challenge job: a challenger and the champion on the same labelled patients, judged by ``promotion.*``.

:func:`run_challenge` reads both models' predictions of the ``promotion.split`` films of the
dataset (``xray.predictions``; the films both scored), and per finding measures both AUROCs,
their paired difference with DeLong's interval and p-value (:mod:`xray_spark.challenge.paired`), a
patient-level bootstrap interval of the difference, and each model's sensitivity and
specificity at its own operating point; then it applies the rule written down beforehand
(:mod:`xray_spark.challenge.rules`). The result is one row per finding in ``xray.challenges``
(the rule's outcome with its numbers on each row) and a page beside the evaluation report.
``promote --if-passed CHALLENGE_ID`` promotes only a PASS.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from typing import Any

import numpy as np
from pyspark.sql import SparkSession

from xray_spark import registry
from xray_spark.challenge.page import challenge_html
from xray_spark.challenge.paired import bootstrap_difference_ci, delong_test
from xray_spark.challenge.power import Power, power_of
from xray_spark.challenge.rules import PASS, apply, judged, kept_findings, outcome, power_rule
from xray_spark.challenge.run import ChallengeRun, ChallengeSummary
from xray_spark.config import Settings
from xray_spark.errors import UsageError
from xray_spark.lake import Lake, catalog, new_run_id, tables
from xray_spark.metrics import sensitivity_specificity
from xray_spark.model_card import ModelCard, patient_digest, training_patients
from xray_spark.scored import collect_scored_labels

SCHEMA = catalog.schema("challenges")
NAN = float("nan")


def run_challenge(
    spark: SparkSession, lake: Lake, settings: Settings, *, challenger: str, champion: str | None = None
) -> ChallengeSummary:
    """Challenge the champion (or ``champion``) with ``challenger`` on ``settings.dataset``; returns the summary."""
    rule = settings.promotion
    if champion is None:
        holder = registry.alias_holder(spark, lake)
        if holder is None:
            raise UsageError(
                "no champion to challenge: promote a first model with jobs/promote.py (no challenge needed)"
            )
        champion = holder["version"]
    if champion == challenger:
        raise UsageError(f"{challenger} is the champion already: a model cannot challenge itself")
    cards = {v: registry.resolve_model(spark, lake, version=v) for v in (champion, challenger)}
    labels = [x for x in cards[champion].labels if x in cards[challenger].labels]
    data = {v: collect_scored_labels(spark, lake, v, rule.split, labels, dataset=settings.dataset) for v in cards}
    common = sorted(set(data[champion]["ids"]) & set(data[challenger]["ids"]))
    if not common:
        raise UsageError(
            f"no {rule.split!r} film of dataset {settings.dataset!r} was scored by both {champion} and {challenger}: "
            f"score it with jobs/score.py --dataset {settings.dataset} --model-version V for each first"
        )
    aligned = {v: _aligned(data[v], common) for v in cards}
    run = ChallengeRun(cards[champion], cards[challenger], rule, settings.dataset, aligned)
    unchecked = [v for v in cards if not check_unseen(cards[v], aligned[v], settings.dataset, rule.split)]
    rows = [_compare(run, i, name) | {"finding": name} for i, name in enumerate(labels)]
    powers = [_power(run.of("champion"), labels.index(r["finding"]), r, rule) for r in rows if r["judged"]]
    kept = kept_findings(dropped_findings(cards[champion], cards[challenger]), rule.may_drop)
    rules = [*apply(rows, rule), kept, power_rule(powers, rule)]
    if unchecked:
        rules.append(_unchecked_rule(unchecked))
    verdict = outcome(rows, rules, rule)
    challenge_id = new_run_id()
    at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    meta = {"challenge_id": challenge_id, "at": at, "dataset": settings.dataset, "split": rule.split}
    meta |= {"champion": champion, "challenger": challenger, "passed": verdict == PASS, "outcome": verdict}
    meta |= {"rules": json.dumps(rules)}
    table = spark.createDataFrame([_row(meta, r) for r in rows], SCHEMA)
    tables.write_table(table, lake, "challenges", mode="append")
    disagreements = _disagreements(run)
    page = lake.path("reports", "evaluate", challenger, settings.dataset, rule.split, f"challenge-{challenge_id}.html")
    lake.write_text(page, challenge_html(meta, rows, rules, disagreements, dataclasses.asdict(rule)))
    summary: ChallengeSummary = {**meta, "at": at.isoformat(), "films": len(common), "findings": rows}  # type: ignore[typeddict-item]
    summary |= {"rule": rules, "page": page, "power": [p.as_dict() for p in powers]}
    return summary


def dropped_findings(champion: ModelCard, challenger: ModelCard) -> list[str]:
    """The findings the champion calls (has an operating point for) that the challenger does not call or have."""
    return [
        x for x in champion.labels
        if champion.thresholds.get(x) is not None and challenger.thresholds.get(x) is None
    ]  # fmt: skip


def check_unseen(card: ModelCard, films: dict[str, np.ndarray], dataset: str, split: str) -> bool:
    """Refuse a model trained on patients of the challenge's films (by the patient digests its card records);
    False when its card records none (a model from elsewhere: the overlap cannot be checked)."""
    trained_on = training_patients(card)
    if trained_on is None:
        return False
    patients = [str(p) for p in films["patients"]]
    digests = {p: patient_digest(dataset, p) for p in set(patients)}
    seen = {p for p, d in digests.items() if d in trained_on}
    if seen:
        n_films = sum(p in seen for p in patients)
        raise UsageError(
            f"model {card.version} was trained on {len(seen)} of the {len(digests)} patients of the {split!r} films "
            f"({n_films} of {len(patients)} films): a challenge on them measures memory, not skill; challenge on "
            "patients neither model was trained on"
        )
    return True


def _unchecked_rule(versions: list[str]) -> dict[str, Any]:
    return {
        "rule": "unseen patients",
        "passed": True,
        "informational": True,
        "detail": f"{', '.join(versions)} records no training patients (trained elsewhere): overlap not checked",
    }


def _power(films: dict[str, np.ndarray], i: int, row: dict[str, Any], rule) -> Power:
    """The power calculation for one judged finding, from its counts and the champion's AUROC (not the challenger's)."""
    positives = int(films["y"][:, i].sum())
    return power_of(
        row["finding"], row["auroc_champion"], positives, len(films["y"]) - positives,
        margin=rule.non_inferiority_margin, level=rule.level, power=rule.power, correlation=rule.assumed_correlation,
    )  # fmt: skip


def _aligned(data: dict[str, np.ndarray], ids: list[str]) -> dict[str, np.ndarray]:
    where = {image_id: i for i, image_id in enumerate(data["ids"])}
    rows = np.array([where[i] for i in ids])
    return {key: data[key][rows] for key in ("y", "p", "patients", "groups", "ids")}


def _compare(run: ChallengeRun, i: int, name: str) -> dict[str, Any]:
    """One finding's row: both AUROCs, DeLong's test, the patient bootstrap of the difference, each operating point."""
    rule, champion, challenger = run.rule, run.of("champion"), run.of("challenger")
    y = champion["y"][:, i]
    p_cp, p_ch = champion["p"][:, i], challenger["p"][:, i]
    out: dict[str, Any] = {"films": len(y), "positives": int(y.sum())}
    if y.sum() >= 2 and (1 - y).sum() >= 2:
        test = delong_test(y, p_ch, p_cp, level=rule.level)
        low, high = bootstrap_difference_ci(
            y, p_ch, p_cp, champion["groups"], resamples=rule.bootstrap, seed=i, level=rule.level
        )
        out |= {"auroc_champion": test.auroc_b, "auroc_challenger": test.auroc_a, "difference": test.difference}
        out |= {"delong_low": test.low, "delong_high": test.high, "p_value": test.p_value}
        out |= {"bootstrap_low": low, "bootstrap_high": high}
    else:
        out |= dict.fromkeys(
            ("auroc_champion", "auroc_challenger", "difference", "delong_low", "delong_high", "p_value"), NAN
        )
        out |= {"bootstrap_low": NAN, "bootstrap_high": NAN}
    for who, card, p in (("champion", run.champion, p_cp), ("challenger", run.challenger, p_ch)):
        threshold = card.thresholds.get(name)
        sens, spec = sensitivity_specificity(y, p, threshold) if threshold is not None else (NAN, NAN)
        out |= {f"sensitivity_{who}": float(sens), f"specificity_{who}": float(spec)}
    out["judged"] = judged(out, rule) and not math.isnan(out["delong_low"])
    return out


def _row(meta: dict[str, Any], r: dict[str, Any]) -> tuple:
    names = SCHEMA.fieldNames()
    values = meta | r
    return tuple(None if isinstance(values[n], float) and math.isnan(values[n]) else values[n] for n in names)


def _disagreements(run: ChallengeRun, n: int = 10) -> list[dict[str, Any]]:
    """The films where the two models' probabilities differ most (any finding)."""
    champion, challenger, labels = run.of("champion"), run.of("challenger"), run.labels
    gap = np.abs(challenger["p"] - champion["p"])
    films, findings = np.unravel_index(np.argsort(-gap, axis=None)[: n * 3], gap.shape)
    out, seen = [], set()
    for f, k in zip(films.tolist(), findings.tolist(), strict=True):
        if f in seen:
            continue
        seen.add(f)
        out.append(
            {
                "image_id": str(champion["ids"][f]),
                "finding": labels[k],
                "truth": bool(champion["y"][f, k]),
                "champion": float(champion["p"][f, k]),
                "challenger": float(challenger["p"][f, k]),
            }
        )
        if len(out) == n:
            break
    return out
