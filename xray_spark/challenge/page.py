"""The challenge's page: the rule and its outcome, the per-finding comparison, the films the models disagree on."""

from __future__ import annotations

import html
import math
from typing import Any


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _n(value: Any, spec: str = ".3f") -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def challenge_html(meta, rows, rules, disagreements, rule_settings) -> str:
    verdict = meta.get("outcome") or ("PASS" if meta["passed"] else "FAIL")
    rule_rows = "".join(
        f"<tr><td>{_e(r['rule'])}</td><td class='{'ok' if r['passed'] else 'no'}'>{_said(r)}"
        f"</td><td>{_e(r['detail'])}</td></tr>"
        for r in rules
    )
    finding_rows = "".join(
        f"<tr><td>{_e(r['finding'])}</td><td>{r['positives']}</td><td>{_n(r['auroc_champion'])}</td>"
        f"<td>{_n(r['auroc_challenger'])}</td><td>{_n(r['difference'], '+.3f')}</td>"
        f"<td>{_n(r['delong_low'], '+.3f')} to {_n(r['delong_high'], '+.3f')}</td><td>{_n(r['p_value'], '.4f')}</td>"
        f"<td>{_n(r['bootstrap_low'], '+.3f')} to {_n(r['bootstrap_high'], '+.3f')}</td>"
        f"<td>{_n(r['sensitivity_champion'])} / {_n(r['specificity_champion'])}</td>"
        f"<td>{_n(r['sensitivity_challenger'])} / {_n(r['specificity_challenger'])}</td>"
        f"<td>{'yes' if r['judged'] else 'no'}</td></tr>"
        for r in rows
    )
    films = "".join(
        f"<tr><td>{_e(d['image_id'])}</td><td>{_e(d['finding'])}</td><td>{'yes' if d['truth'] else 'no'}</td>"
        f"<td>{d['champion']:.3f}</td><td>{d['challenger']:.3f}</td></tr>"
        for d in disagreements
    )
    settings = ", ".join(f"{_e(k)} = {_e(v)}" for k, v in rule_settings.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Challenge {_e(meta["challenge_id"])}: {verdict}</title>
<style>body{{font-family:system-ui,sans-serif;margin:1.5em;color:#222}}table{{border-collapse:collapse;margin-bottom:1em}}
td,th{{border-bottom:1px solid #ddd;padding:.3em .6em;text-align:left}}th{{background:#f4f4f4}}
.ok{{color:#060;font-weight:bold}}.no{{color:#a00;font-weight:bold}}</style></head><body>
<h1>Challenge {_e(meta["challenge_id"])}: <span class="{"ok" if meta["passed"] else "no"}">{verdict}</span></h1>
<p>Challenger {_e(meta["challenger"])} against the champion {_e(meta["champion"])} on the {_e(meta["split"])} films
of dataset {_e(meta["dataset"])}, the same films for both. The rule, set before the test: {settings}.</p>
<table><tr><th>rule</th><th>outcome</th><th>the numbers</th></tr>{rule_rows}</table>
<table><tr><th>finding</th><th>positives</th><th>AUROC champion</th><th>AUROC challenger</th><th>difference</th>
<th>DeLong interval</th><th>p</th><th>patient bootstrap interval</th><th>champion sens / spec</th>
<th>challenger sens / spec</th><th>judged</th></tr>{finding_rows}</table>
<h2>Where they disagree most</h2>
<table><tr><th>film</th><th>finding</th><th>labelled</th><th>champion</th><th>challenger</th></tr>{films}</table>
</body></html>
"""


def _said(rule: dict) -> str:
    if rule.get("informational"):
        return "ok" if rule["passed"] else "SHORT"
    return "PASS" if rule["passed"] else "FAIL"
