"""The worklist's pages from one set of Jinja2 templates, for the static pages and the web app alike.

A template never builds a URL: it asks its :class:`Links` (the static pages embed each picture and link to
files beside them; the app links to its own routes). The films are :class:`LakeView` rows, made ready to
show by :func:`ready_to_show` (rank, the heatmap to lay over the film, the PACS viewer link).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import os
import zoneinfo
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import jinja2

from xray_spark.labels import FINDINGS
from xray_spark.pages.lake_view import LakeView
from xray_spark.pages.viewer import needs_lookup, viewer_link
from xray_spark.pictures import data_uri, drift_chart, heatmap_to_show, probability_chart


class Links(Protocol):
    """Where each thing a page shows or links to is found."""

    def home(self) -> str: ...

    def worklist(self, dataset: str, date: str) -> str: ...

    def patient(self, dataset: str, patient_id: int) -> str: ...

    def picture(self, dataset: str, film: Mapping[str, Any]) -> str: ...

    def overlay(self, dataset: str, film: Mapping[str, Any], large: bool = False) -> str: ...


@dataclasses.dataclass(frozen=True)
class StaticLinks:
    """Self-contained pages in one folder: pictures embedded, ``<date>.html``, ``index.html``, ``patients/<id>.html``
    (``up``: the way from the page's folder to that one)."""

    view: LakeView
    up: str = ""

    def home(self) -> str:
        return f"{self.up}index.html"

    def worklist(self, dataset: str, date: str) -> str:
        return f"{self.up}{date}.html"

    def patient(self, dataset: str, patient_id: int) -> str:
        return f"{self.up}patients/{patient_id}.html"

    def picture(self, dataset: str, film: Mapping[str, Any]) -> str:
        return data_uri(self.view.picture(dataset, film["image_id"]) or b"")

    def overlay(self, dataset: str, film: Mapping[str, Any], large: bool = False) -> str:
        key = (film["image_id"], film["overlay"], film["model_version"])
        return data_uri(self.view.overlays(dataset, [key]).get(key, b""))


@functools.cache
def environment() -> jinja2.Environment:
    """The templates, autoescaped: a value from a file, a header or a note is shown as text, never run."""
    return jinja2.Environment(
        loader=loader(), autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=False, lstrip_blocks=False
    )


def loader() -> jinja2.BaseLoader:
    return jinja2.PackageLoader("xray_spark.pages", "templates")


def render(template: str, links: Links, **values: Any) -> str:
    """A page of the static set (the app renders the same templates through Flask, with its own links)."""
    return environment().get_template(template).render(links=links, **page_values(values))


def page_values(values: dict[str, Any]) -> dict[str, Any]:
    """What every page may name, with the defaults of a page shown to no one in particular."""
    defaults = {
        "reader": None, "app": False, "findings": FINDINGS, "mine": {}, "evaluation_href": None, "nights": None,
        "title": None, "single": False,
    }  # fmt: skip
    return defaults | values


def ready_to_show(
    view: LakeView,
    dataset: str,
    films: list[dict[str, Any]],
    viewer_url: str = "",
    lookup: Callable[[dict[str, Any]], str] | None = None,
) -> None:
    """Each film's rank, the finding whose heatmap it shows (the riskiest called one with a map, never an uncalled
    one) and its PACS viewer link (through ``lookup``, the app's own link that asks the archive, when the template
    needs the archive's id: without it, none); the overlays are drawn in one go."""
    ids = [f["image_id"] for f in films]
    maps = view.heatmap_findings(dataset, ids)
    uids = view.study_uids(dataset, ids) if viewer_url else {}
    shown = view.display_notes(dataset, ids)
    for rank, film in enumerate(films, start=1):
        have = maps.get((film["image_id"], film["model_version"]), set())
        called = {f: film["probs"].get(f, 0.0) for f in film["called"]}
        film["rank"] = rank
        film["overlay"] = heatmap_to_show(called, film["risk_finding"], have)
        if needs_lookup(viewer_url):
            film["viewer_href"] = lookup(film) if lookup and uids.get(film["image_id"]) else None
        else:
            film["viewer_href"] = viewer_link(viewer_url, uids.get(film["image_id"]), film["accession_number"])
        note = shown.get(film["image_id"], "missing")  # "": it has a display picture
        film["display_note"] = DISPLAY_NOTES.get(note, note)
    keys = [(f["image_id"], f["overlay"], f["model_version"]) for f in films if f["overlay"]]
    view.overlays(dataset, keys)
    boxes = view.hot_boxes(dataset, keys)
    for film in films:
        box = boxes.get((film["image_id"], film["overlay"], film["model_version"]))
        film["box"] = ",".join(f"{v:.4f}" for v in box) if box else ""


#: What the large view says where a film has no display picture (by the note of ``xray.display_pictures``).
DISPLAY_NOTES = {
    "": "",
    "burned_in_annotation": "its header says text is burnt into the pixels (a name or date could be read at display "
    "size): no large picture is kept; open it in the PACS viewer",
    "missing": "no display picture was kept for this film (prepared before display pictures, or with them off): "
    "the large view shows the thumbnail",
}


def time_zone(name: str) -> dt.tzinfo:
    """The zone ``name`` (IANA, e.g. Europe/Berlin), or the machine's own when empty (TZ, else /etc/localtime)."""
    if name:
        return zoneinfo.ZoneInfo(name)
    found = os.environ.get("TZ", "").lstrip(":")
    if not found and os.path.islink("/etc/localtime"):
        found = os.readlink("/etc/localtime").rpartition("zoneinfo/")[2]
    try:
        return zoneinfo.ZoneInfo(found) if found else dt.UTC
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return dt.datetime.now().astimezone().tzinfo or dt.UTC


def patient_chart(films: list[dict[str, Any]]) -> tuple[list[str], str]:
    """The findings called on any of a patient's films, and their probabilities over the films as a chart."""
    findings = [f for f in FINDINGS if any(f in film["called"] for film in films)]
    return findings, probability_chart(films, findings) if findings else ""


def monitoring_charts(view: LakeView, dataset: str, alpha: float) -> dict[str, Any] | None:
    """The monitored nights of ``dataset`` as one chart per measure, and the measures that alerted; None when none."""
    nights = view.monitoring(dataset)
    if not nights:
        return None
    moved = sorted(m for m, runs in nights.items() if any(n["alert"] for n in runs))
    return {"moved": moved, "charts": [drift_chart(m, runs, alpha) for m, runs in nights.items()]}
