"""The promotion rule (``promotion.*``), applied to the per-finding comparison: PASS or FAIL with the numbers.

A finding is *judged* when the test films hold at least ``min_positives`` of it and both models
have an operating point for it. The challenger passes when every rule holds:

* **non-inferiority**, per judged finding: the lower bound of DeLong's interval of
  AUROC(challenger) - AUROC(champion) is above ``-non_inferiority_margin``;
* **mean AUROC**, over the judged findings: the challenger's at least the champion's
  (``mean_auroc_not_lower``);
* **sensitivity**, per judged finding: the challenger's at its own operating point no lower than
  the champion's at its own by more than ``max_sensitivity_drop``.

* **findings kept**: every finding the champion calls (has an operating point for) the challenger
  calls too, unless ``may_drop`` names it: a challenger on fewer findings is not judged only on
  the ones it kept.

With no judged finding at all the challenge fails: there is no evidence to promote on.

The outcome (:func:`outcome`) is PASS when every rule holds. When one does not, and the power
calculation made before the test (:mod:`xray_spark.challenge.power`) says these films are too
few to show an equal challenger non-inferior, it is INCONCLUSIVE with the films needed, never a
verdict on the model, unless a finding is shown inferior (the upper bound of its difference
below ``-non_inferiority_margin``) or the challenger drops findings: then it is FAIL.
"""

from __future__ import annotations

import math
from typing import Any

from xray_spark.challenge.power import Power
from xray_spark.config import PromotionSettings

PASS, FAIL, INCONCLUSIVE = "PASS", "FAIL", "INCONCLUSIVE"


def judged(row: dict[str, Any], rule: PromotionSettings) -> bool:
    rates = (row["sensitivity_champion"], row["sensitivity_challenger"])
    return row["positives"] >= rule.min_positives and not any(math.isnan(r) for r in rates)


def apply(rows: list[dict[str, Any]], rule: PromotionSettings) -> list[dict[str, Any]]:
    """Each rule's outcome: name, passed, and the numbers it was decided on (in words)."""
    judged_rows = [r for r in rows if r["judged"]]
    if not judged_rows:
        return [
            {
                "rule": "evidence",
                "passed": False,
                "detail": f"no finding has {rule.min_positives} positives and an operating point in both models",
            }
        ]
    out = []
    worst = min(judged_rows, key=lambda r: r["delong_low"])
    out.append(
        {
            "rule": "non-inferiority",
            "passed": all(r["delong_low"] > -rule.non_inferiority_margin for r in judged_rows),
            "detail": f"lowest bound {worst['delong_low']:+.3f} ({worst['finding']}) against "
            f"-{rule.non_inferiority_margin} over {len(judged_rows)} judged findings",
        }
    )
    if rule.mean_auroc_not_lower:
        mean_ch = sum(r["auroc_challenger"] for r in judged_rows) / len(judged_rows)
        mean_cp = sum(r["auroc_champion"] for r in judged_rows) / len(judged_rows)
        out.append(
            {
                "rule": "mean AUROC",
                "passed": mean_ch >= mean_cp,
                "detail": f"challenger {mean_ch:.3f}, champion {mean_cp:.3f}",
            }
        )
    drops = [(r["sensitivity_champion"] - r["sensitivity_challenger"], r["finding"]) for r in judged_rows]
    drop, finding = max(drops)
    out.append(
        {
            "rule": "sensitivity",
            "passed": drop <= rule.max_sensitivity_drop,
            "detail": f"largest drop {drop:+.3f} ({finding}) against {rule.max_sensitivity_drop}",
        }
    )
    return out


def kept_findings(dropped: list[str], allowed: list[str]) -> dict[str, Any]:
    """The rule that a challenger calls every finding the champion calls, unless it was allowed to drop it."""
    refused = [x for x in dropped if x not in allowed]
    detail = f"drops {', '.join(refused)}, which the champion calls" if refused else "every finding the champion calls"
    if dropped and not refused:
        detail = f"drops only what promotion.may_drop allows ({', '.join(dropped)})"
    return {"rule": "findings kept", "passed": not refused, "detail": detail}


def power_rule(powers: list[Power], rule: PromotionSettings) -> dict[str, Any]:
    """What the films can show (an informational entry: it decides between FAIL and INCONCLUSIVE, not PASS)."""
    short = [p for p in powers if not p.enough]
    if not powers:
        return {"rule": "power", "passed": True, "informational": True, "detail": "no judged finding"}
    if not short:
        worst = max(powers, key=lambda p: p.se / p.target)
        return {
            "rule": "power",
            "passed": True,
            "informational": True,
            "detail": f"enough films: foreseen SE of the difference at most {worst.se:.4f} ({worst.finding}) "
            f"against {worst.target:.4f} for power {rule.power:g} at the margin {rule.non_inferiority_margin:g}",
        }
    worst = max(short, key=lambda p: p.films_needed)
    return {
        "rule": "power",
        "passed": False,
        "informational": True,
        "detail": f"too few films to show non-inferiority at the margin {rule.non_inferiority_margin:g} with power "
        f"{rule.power:g} for {len(short)} of {len(powers)} judged findings: {worst.finding} has {worst.positives} "
        f"positives in {worst.films} films (foreseen SE {worst.se:.3f} against {worst.target:.4f}) and needs about "
        f"{worst.positives_needed:,} positives in {worst.films_needed:,} films",
    }


def outcome(rows: list[dict[str, Any]], rules: list[dict[str, Any]], rule: PromotionSettings) -> str:
    """PASS, FAIL or INCONCLUSIVE (see the module's text)."""
    decisive = [r for r in rules if not r.get("informational")]
    if all(r["passed"] for r in decisive):
        return PASS
    underpowered = any(r["rule"] == "power" and not r["passed"] for r in rules)
    dropped = any(r["rule"] == "findings kept" and not r["passed"] for r in rules)
    shown_inferior = any(r["judged"] and r["delong_high"] < -rule.non_inferiority_margin for r in rows)
    no_evidence = any(r["rule"] == "evidence" for r in rules)
    if underpowered and not (dropped or shown_inferior or no_evidence):
        return INCONCLUSIVE
    return FAIL
