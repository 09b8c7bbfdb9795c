"""The worklist pages as self-contained HTML: no server, no script, every picture embedded.

* ``<date>.html``: the films of one scoring date in risk order, each with its thumbnail and
  the heatmap of its riskiest called finding laid over it (a checkbox hides the overlays), the
  findings called with their probabilities, the patient and follow-up, the accession
  number and study time, and a link to the patient's page.
* ``index.html``: the scoring dates, newest first.
* ``patients/<id>.html``: a patient's films in order, the probability of each finding
  called on any of them as a line per finding (inline SVG), and the numbers.
"""

from __future__ import annotations

import dataclasses
import html
from collections.abc import Mapping, Sequence
from typing import Any

from xray_spark.pictures import data_uri, drift_chart, probability_chart

STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
figure.drift{display:inline-block;margin:4px 8px}figure.drift figcaption{font-size:12px}
table{border-collapse:collapse}td,th{border-bottom:1px solid #ddd;padding:.4em .6em;vertical-align:top;text-align:left}
th{background:#f4f4f4}.film{position:relative;width:160px;height:160px}
.film img{position:absolute;left:0;top:0;width:160px;height:160px;image-rendering:auto}
#heat:not(:checked)~table .overlay{display:none}.risk{font-weight:bold}.called{color:#a00}
.muted{color:#777;font-size:.9em}a{color:#0645ad}td:last-child{max-width:24em;overflow-wrap:anywhere}
.scale{display:inline-block;width:6em;height:.8em;vertical-align:middle;
background:linear-gradient(to right,#00f,#0ff,#0f0,#ff0,#f00)}"""


@dataclasses.dataclass(frozen=True)
class Film:
    """One worklist row, ready to show."""

    rank: int
    image_id: str
    patient_id: int
    follow_up: int
    view: str
    risk_score: float | None
    risk_finding: str | None
    called: list[tuple[str, float]]
    accession_number: str | None
    study_datetime: str | None
    thumbnail_png: bytes
    overlay: tuple[str, bytes] | None  # (finding, RGBA PNG)
    viewer_href: str | None = None  # the study in the PACS viewer (worklist.viewer_url)


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _page(title: str, body: str) -> str:
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        f"<style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


def _film_cell(film: Film) -> str:
    alt = f"film {film.image_id}"
    cell = f'<div class="film"><img class="thumb" alt="{_e(alt)}" src="{data_uri(film.thumbnail_png)}">'
    if film.overlay is not None:
        finding, png = film.overlay
        cell += f'<img class="overlay" alt="{_e(finding)} heatmap" title="{_e(finding)}" src="{data_uri(png)}">'
    return cell + "</div>"


def _row(film: Film, patient_href: str) -> str:
    called = ", ".join(f"{_e(f)} {p:.2f}" for f, p in film.called) or '<span class="muted">none called</span>'
    risk = "" if film.risk_score is None else f"{film.risk_score:.2f}"
    study = " ".join(_e(x) for x in (film.accession_number, film.study_datetime) if x)
    if film.viewer_href:
        study += f'<br><a class="viewer" href="{_e(film.viewer_href)}">open the study in the PACS viewer</a>'
    return (
        f'<tr class="film-row"><td>{film.rank}</td><td>{_film_cell(film)}</td>'
        f'<td class="risk">{risk}<br><span class="muted">{_e(film.risk_finding)}</span></td>'
        f'<td class="called">{called}</td>'
        f'<td><a href="{_e(patient_href)}">patient {film.patient_id}</a>'
        f"<br>follow-up {film.follow_up}, {_e(film.view)}</td>"
        f'<td>{study + "<br>" if study else ""}<span class="muted">{_e(film.image_id)}</span></td></tr>'
    )


def worklist_html(
    dataset: str, date: str, films: Sequence[Film], *, model_version: str, evaluation_href: str | None, shown_of: int
) -> str:
    """The page of one scoring date: ``films`` in risk order (the first ``len(films)`` of ``shown_of``)."""
    rows = "\n".join(_row(f, f"patients/{f.patient_id}.html") for f in films)
    evaluation = (
        f'<a href="{_e(evaluation_href)}">the evaluation of {_e(model_version)}</a>'
        if evaluation_href
        else "no evaluation report of this model yet"
    )
    body = f"""<h1>Worklist {_e(dataset)}, {_e(date)}</h1>
<p>{len(films):,} of {shown_of:,} films scored on {_e(date)} by {_e(model_version)}, riskiest first (risk: the
highest calibrated probability weighted by the finding's urgency). A heatmap shows where the model looked for the
riskiest <b>called</b> finding (low <span class="scale"></span> high); a film with no finding called shows none.
<a href="index.html">All dates</a> &middot; {evaluation}.</p>
<input type="checkbox" id="heat" checked> <label for="heat">show heatmaps</label>
<table><tr><th>#</th><th>film</th><th>risk</th><th>findings called</th><th>patient</th><th>study</th></tr>
{rows}
</table>
<p class="muted">A second reader's suggestions, not a diagnosis. Identifiers shown: the pseudonymous patient number, the
accession number and the image id (a SOP Instance UID for DICOM films).</p>"""
    return _page(f"Worklist {dataset} {date}", body)


def index_html(
    dataset: str, dates: Sequence[tuple[str, int]], monitoring: Mapping[str, Sequence[dict]] | None = None, alpha=0.01
) -> str:
    """The scoring dates (newest first) with their number of films, each linking to its page; then, where the
    nights are monitored, one chart per measure over the nights (``monitoring``: measure -> nights in order)."""
    items = "\n".join(f'<li><a href="{_e(d)}.html">{_e(d)}</a> ({n:,} films)</li>' for d, n in dates)
    body = f"<h1>Worklists {_e(dataset)}</h1>\n<ul>\n{items}\n</ul>"
    if monitoring:
        moved = sorted(m for m, nights in monitoring.items() if any(n["alert"] for n in nights))
        said = f"Alerts on {_e(', '.join(moved))}." if moved else "No night raised an alert."
        charts = "\n".join(drift_chart(m, nights, alpha) for m, nights in monitoring.items())
        body += (
            f'\n<h2 id="monitoring">Monitoring</h2>\n<p>{said} Each chart: one measure over the nights, '
            "-log10 of its p-value against the reference (red dots: alerts, by Holm's procedure over the night's "
            "measures; dashed: the level alpha). Rows in <code>xray.monitoring</code>.</p>\n"
            f'<div class="charts">{charts}</div>'
        )
    return _page(f"Worklists {dataset}", body)


def patient_html(dataset: str, patient_id: int, points: Sequence[dict[str, Any]], findings: Sequence[str]) -> str:
    """A patient's films in order (``points``: follow_up, when, image_id, probs, called) and the chart."""
    head = "".join(f"<th>{_e(f)}</th>" for f in findings)
    rows = "\n".join(
        f"<tr><td>{p['follow_up']}</td><td>{_e(p['when'])}</td><td>{_e(p['image_id'])}</td>"
        + "".join(
            f'<td class="{"called" if f in p["called"] else ""}">{p["probs"].get(f, float("nan")):.2f}</td>'
            for f in findings
        )
        + "</tr>"
        for p in points
    )
    body = f"""<h1>Patient {patient_id} ({_e(dataset)})</h1>
<p><a href="../index.html">All dates</a>. {len(points)} films, in study order; the findings called on any of them
(red where called).</p>
{probability_chart(points, findings) if findings else '<p class="muted">No finding was called on this patient.</p>'}
<table><tr><th>follow-up</th><th>study time</th><th>image</th>{head}</tr>
{rows}
</table>"""
    return _page(f"Patient {patient_id}", body)
