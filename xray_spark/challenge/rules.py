"""The promotion rule (``promotion.*``), applied to the per-finding comparison: PASS or FAIL with the numbers.

A finding is *judged* when the test films hold at least ``min_positives`` of it and both models
have an operating point for it. The challenger passes when every rule holds:

* **non-inferiority**, per judged finding: the lower bound of DeLong's interval of
  AUROC(challenger) - AUROC(champion) is above ``-non_inferiority_margin``;
* **mean AUROC**, over the judged findings: the challenger's at least the champion's
  (``mean_auroc_not_lower``);
* **sensitivity**, per judged finding: the challenger's at its own operating point no lower than
  the champion's at its own by more than ``max_sensitivity_drop``.

With no judged finding at all the challenge fails: there is no evidence to promote on.
"""

from __future__ import annotations

import math
from typing import Any

from xray_spark.config import PromotionSettings


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
