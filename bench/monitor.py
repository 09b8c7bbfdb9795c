"""Nightly monitoring: how often a night drawn from the reference distribution raises an alert, and
whether each kind of shift raises its own.

    python bench/monitor.py [--nights 30] [--films 50] [--reference 200] [--out bench/results/monitor_cpu2.json]

1. A champion: ``small_cnn`` trained six epochs on a synthetic NIH archive (160 films, 64 px).
2. One synthetic DICOM ward of the usual acquisition (``reference + nights x films`` films and
   5% more) is prepared and scored by the champion once; its films are dealt at random into
   reference nights (``--reference`` films) and ``--nights`` nights of ``--films`` films each,
   disjoint, no patient twice in one night (a real night holds one study per patient; the
   synthetic patients' follow-ups share their anatomy, so two in one night are not
   independent draws, which the tests assume).
3. Each night is measured against the reference exactly as ``jobs/monitor.py`` does it
   (:func:`xray_spark.monitor.pipeline.measure_night`: every input and output measure, the
   call rates against the validation share on the model card) and its alerts are chosen by
   Holm's step-down procedure at ``monitor.alpha`` (0.01): the count of alerts over all nights
   is the false-alarm figure; the same films dealt ``--deals`` times in all say whether it is typical.
4. Shifted wards (``--shifted-nights`` nights of each shift, prepared and scored the same way):
   another manufacturer with another contrast, MONOCHROME1 films stored inverted, twice the
   pixel spacing; and the usual nights with a wrong calibration (every finding's calibrated
   logit 3 higher, its calls redrawn at the card's thresholds: what a champion with a Platt
   intercept 3 too high would score). For each: the share of nights raising the expected
   measures' alerts, and every measure that alerted.

Call rates are tested against the reference's share (what ``monitor`` does once its reference
is complete); the calibrated findings are those the champion has thresholds for.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import log, machine  # noqa: E402  (beside this file)

KEY = "a-monitoring-benchmark-key-long-enough"
SIZE = 64
#: Each shift's acquisition (as keyword arguments) and the measures whose alerts it must raise.
SHIFTS = {
    "vendor": ({"manufacturer": "Other Imaging", "model_name": "X9", "contrast": 0.6}, {"manufacturer", "model_name"}),
    "inverted": ({"monochrome1_share": 1.0, "monochrome1_inverted": True}, {"photometric", "image_mean"}),
    "spacing": ({"spacing_scale": 2.0}, {"pixel_spacing"}),
}


def settings_for(work: Path, *extra: str):
    from xray_spark.config import load_settings

    return load_settings(
        ROOT / "conf" / "local.yaml",
        [
            f"lake={work / 'lake'}",
            f"privacy.identity_dir={work / 'identity'}",
            f"image.size={SIZE}",
            "spark.master=local[2]",
            "score.heatmaps=none",
            "quarantine.max_fraction=0.5",
            *extra,
        ],
    )


def champion(spark, lake, settings, work: Path):
    """Train and promote the champion; its model card."""
    from xray_spark import registry
    from xray_spark.dev.synthetic import write_archive
    from xray_spark.prepare import PrepareInputs, run_prepare
    from xray_spark.train.pipeline import run_training

    archive = work / "nih"
    write_archive(archive, n_images=160, size=96, seed=11)
    inputs = PrepareInputs(str(archive / "Data_Entry_2017.csv"), str(archive / "images"))
    run_prepare(spark, lake, settings, inputs)
    trained = run_training(spark, lake, settings_for(work, "train.epochs=6", "train.eval_max_rows=50"))
    registry.set_alias(spark, lake, trained["version"], reason="the monitoring benchmark's champion")
    return registry.resolve_model(spark, lake, version=trained["version"])


def ward(spark, lake, work: Path, name: str, films: int, seed: int, first_patient: int, **acquisition):
    """A DICOM ward of ``films`` films prepared and scored once: its per-film frame."""
    from pyspark.sql import functions as F

    from xray_spark.dev.dicom_archive import Acquisition, write_dicom_archive
    from xray_spark.lake import tables
    from xray_spark.monitor.films import film_frame
    from xray_spark.prepare import PrepareInputs, run_prepare
    from xray_spark.score.pipeline import run_scoring

    started = time.monotonic()
    out = work / name
    write_dicom_archive(
        out, films, SIZE, seed, first_patient=first_patient, labelled=0.0, acquisition=Acquisition(**acquisition)
    )
    mine = settings_for(work, f"dataset={name}")
    run_prepare(spark, lake, mine, PrepareInputs(None, str(out / "export"), source="dicom", incremental=True))
    run_id = run_scoring(spark, lake, mine, new_only=True)["run_id"]
    card = _card(spark, lake)
    rows = tables.read_table(spark, lake, "predictions").where(F.col("run_id") == run_id)
    frame = film_frame(spark, lake, rows, name, card.labels).drop_duplicates("image_id")
    log(f"  ward {name}: {len(frame)} films prepared and scored in {time.monotonic() - started:.0f} s")
    return frame


def deal(frame, sizes: list[int], rng) -> list:
    """The films dealt at random into sets of ``sizes``, no patient twice in one set, as a night holds one
    study per patient (a patient's films are alike: several in one night would not be independent draws)."""
    frame = frame.sort_values("image_id").reset_index(drop=True)
    sets: list[list[int]] = [[] for _ in sizes]
    patients: list[set] = [set() for _ in sizes]
    for i in rng.permutation(len(frame)):
        patient = frame["patient_id"].iloc[i]
        for k, size in enumerate(sizes):
            if len(sets[k]) < size and patient not in patients[k]:
                sets[k].append(i)
                patients[k].add(patient)
                break
    assert all(len(s) == n for s, n in zip(sets, sizes, strict=True)), "too few films to deal"
    return [frame.iloc[s] for s in sets]


def _card(spark, lake):
    from xray_spark import registry

    return registry.resolve_model(spark, lake, version=registry.alias_holder(spark, lake)["version"])


def miscalibrated(night, card, shift: float = 3.0):
    """The night as a champion with every calibrated logit ``shift`` higher would have scored it."""
    out = night.copy()
    for f in card.labels:
        p = out[f"p:{f}"].clip(1e-7, 1 - 1e-7)
        out[f"p:{f}"] = 1 / (1 + np.exp(-(np.log(p / (1 - p)) + shift)))
        threshold = card.thresholds.get(f)
        out[f"call:{f}"] = False if threshold is None else out[f"p:{f}"] >= threshold
    return out


def alerts_of(reference, night, card, alpha: float) -> tuple[set[str], int]:
    """The measures alerted on one night (Holm at ``alpha``) and how many measures were tested."""
    from xray_spark.monitor import drift
    from xray_spark.monitor.pipeline import _expected_rates, measure_night

    measured = measure_night(reference, night, card.labels, _expected_rates(card))
    alerts = drift.holm({m.measure: m.p_value for _, m in measured}, alpha)
    for _, m in measured:
        if m.measure in alerts:
            log(f"    alert {m.measure}: {m.reference} -> {m.night} (p = {m.p_value:.2g})")
    return alerts, len(measured)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nights", type=int, default=30)
    parser.add_argument("--films", type=int, default=50, help="films per night")
    parser.add_argument("--reference", type=int, default=200, help="films in the reference")
    parser.add_argument("--shifted-nights", type=int, default=3)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--deals", type=int, default=10, help="deals of the usual films into reference and nights")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "monitor_cpu2.json"))
    args = parser.parse_args()
    os.environ.setdefault("XRAY_SPARK_PSEUDONYM_KEY", KEY)

    from xray_spark.lake import Lake
    from xray_spark.session import build_session

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="xray-monitor-bench-") as tmp:
        work = Path(tmp)
        settings = settings_for(work)
        alpha = settings.monitor.alpha
        spark = build_session(settings.spark, app_name="xray-spark monitor bench")
        lake = Lake.at(settings.lake)
        card = champion(spark, lake, settings, work)
        usual_films = int(1.05 * (args.reference + args.nights * args.films))  # slack for the dealing
        usual = ward(spark, lake, work, "usual", usual_films, 40, 1)
        reference_nights = -(-args.reference // args.films)
        dealt = deal(usual, [args.films] * (reference_nights + args.nights), np.random.default_rng(args.seed))
        reference = pd.concat(dealt[:reference_nights]).iloc[: args.reference]
        nights = dealt[reference_nights:]
        quiet = [alerts_of(reference, n, card, alpha) for n in nights]
        measures = quiet[0][1]
        false_alarms = Counter(m for alerts, _ in quiet for m in alerts)
        log(f"  {args.nights} usual nights: {sum(false_alarms.values())} alerts of {args.nights * measures} tests")
        other_deals = []  # the same films dealt again: is the first deal's figure typical?
        for seed in range(args.seed + 1, args.seed + args.deals):
            again = deal(usual, [args.films] * (reference_nights + args.nights), np.random.default_rng(seed))
            ref = pd.concat(again[:reference_nights]).iloc[: args.reference]
            other_deals.append(sum(len(alerts_of(ref, n, card, alpha)[0]) for n in again[reference_nights:]))
        log(f"  alerts in {args.nights} usual nights of {args.deals - 1} more deals: {other_deals}")

        shifted: dict[str, dict] = {}
        n_shifted = int(1.2 * args.shifted_nights * args.films)
        for k, (name, (acquisition, expected)) in enumerate(SHIFTS.items()):
            frame = ward(spark, lake, work, name, n_shifted, 60 + k, 100000 * (k + 1), **acquisition)
            parts = deal(frame, [args.films] * args.shifted_nights, np.random.default_rng(args.seed + k))
            shifted[name] = _shift_result([alerts_of(reference, p, card, alpha)[0] for p in parts], expected)
        wrong = [alerts_of(reference, miscalibrated(n, card), card, alpha)[0] for n in nights[: args.shifted_nights]]
        shifted["calibration"] = _shift_result(wrong, {"call rate"}, any_of=True)
        spark.stop()

    result = {
        "benchmark": "monitor",
        "machine": machine(),
        "when": time.strftime("%Y-%m-%d"),
        "settings": {
            "nights": args.nights,
            "films_per_night": args.films,
            "reference_films": args.reference,
            "image_size": SIZE,
            "alpha": alpha,
            "correction": "Holm step-down per night, family-wise",
            "measures_per_night": measures,
            "calibrated_findings": sorted(f for f in card.labels if card.thresholds.get(f) is not None),
        },
        "false_alarms": {
            "alerts": sum(false_alarms.values()),
            "nights_with_an_alert": sum(1 for alerts, _ in quiet if alerts),
            "tests": args.nights * measures,
            "by_measure": dict(false_alarms),
            "alerts_in_other_deals": other_deals,
        },
        "shifts": shifted,
        "wall_s": round(time.monotonic() - started, 1),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    json.dump(result, sys.stdout, indent=2)
    print()


def _shift_result(alerts: list[set[str]], expected: set[str], any_of: bool = False) -> dict:
    """How many nights raised the expected measures' alerts (all of them; or any measure starting with one)."""

    def caught(moved: set[str]) -> bool:
        if any_of:
            return any(m.startswith(tuple(expected)) for m in moved)
        return expected <= moved

    return {
        "expected": sorted(expected),
        "nights": len(alerts),
        "caught": sum(caught(a) for a in alerts),
        "alerted": [sorted(a) for a in alerts],
    }


if __name__ == "__main__":
    main()
