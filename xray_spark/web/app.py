"""The Flask app: sign-in, the worklist of a scoring date with a verdict form per film, a patient's films.

Every page and picture needs a signed-in session; every form carries its session's CSRF token.
Templates are Jinja2's with autoescaping, so a value from a file, a header, a labels file or a
note is shown as text, never run; the Content-Security-Policy allows no script at all besides.
"""

from __future__ import annotations

import datetime as dt
import math
import secrets
import threading
from collections import OrderedDict
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, abort, g, redirect, render_template, request, session, url_for

from xray_spark.config import WebSettings
from xray_spark.errors import UsageError
from xray_spark.labels import FINDINGS
from xray_spark.pictures import heatmap_to_show, overlay_png, probability_chart
from xray_spark.viewer import viewer_link
from xray_spark.web.accounts import Accounts
from xray_spark.web.lake_view import LakeView
from xray_spark.web.verdicts import CONFIRM, MISSED, REJECT, NotSaved, Verdict, VerdictStore

OPEN = {"signin", "static"}
CSP = (
    "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


def create_app(
    web: WebSettings, view: LakeView, accounts: Accounts, verdicts: VerdictStore, *, tls: bool, viewer_url: str = ""
) -> Flask:
    app = Flask(__name__)
    app.secret_key = accounts.secret()
    app.config.update(
        SESSION_COOKIE_NAME="xray_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=tls,
        PERMANENT_SESSION_LIFETIME=dt.timedelta(hours=web.session_hours),
        MAX_CONTENT_LENGTH=64 * 1024,
    )
    app.extensions["xray"] = {
        "web": web,
        "view": view,
        "accounts": accounts,
        "verdicts": verdicts,
        "viewer_url": viewer_url,
    }

    @app.before_request
    def signed_in() -> Any:
        sid = session.get("sid")
        g.session = accounts.session(sid, web.session_hours * 3600) if sid else None
        if request.method == "POST" and not _csrf_ok():
            return _page("error.html", 400, message="The form's CSRF token is missing or wrong: reload the page.")
        if g.session is None and request.endpoint not in OPEN:
            if request.method == "GET":
                return redirect(url_for("signin", next=request.full_path.rstrip("?")), 303)
            abort(401)
        return None

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"  # a viewer link must not carry our URLs out
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Frame-Options"] = "DENY"
        return response

    _routes(app)
    return app


def _csrf_ok() -> bool:
    sent = request.form.get("csrf", "")
    expected = g.session.csrf if g.session is not None else session.get("pre_csrf", "")
    return bool(sent) and bool(expected) and secrets.compare_digest(sent, expected)


def _page(template: str, status: int = 200, **values: Any) -> tuple[str, int]:
    if g.get("session") is not None:
        values.setdefault("csrf", g.session.csrf)
        values.setdefault("reader", g.session.name)
    return render_template(template, **values), status


def _parts() -> dict[str, Any]:
    from flask import current_app

    return current_app.extensions["xray"]


def _local(target: str | None, default: str) -> str:
    """``target`` when it is a path on this site, else ``default`` (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or urlsplit(target).netloc:
        return default
    return target


def _routes(app: Flask) -> None:
    _account_routes(app)
    _page_routes(app)
    _verdict_routes(app)


def _account_routes(app: Flask) -> None:
    @app.route("/signin", methods=["GET", "POST"])
    def signin() -> Any:
        accounts: Accounts = _parts()["accounts"]
        if request.method == "GET":
            session["pre_csrf"] = session.get("pre_csrf") or secrets.token_urlsafe(32)
            return _page("signin.html", csrf=session["pre_csrf"], next=request.args.get("next", ""))
        name, address = request.form.get("name", "")[:64], request.remote_addr or "?"
        found = accounts.attempt(name, request.form.get("password", ""), address)  # waited, checked, counted: one step
        if isinstance(found, float):
            seconds = math.ceil(found)
            message = f"Too many failed sign-ins: try again in {seconds} s."
            body, status = _page("signin.html", 429, csrf=session.get("pre_csrf"), message=message, next="")
            return Response(body, status, headers={"Retry-After": str(seconds)})
        if found is None:
            next_ = request.form.get("next", "")
            return _page(
                "signin.html", 401, csrf=session.get("pre_csrf"), message="Wrong name or password.", next=next_
            )
        session.clear()
        session.permanent = True
        session["sid"] = found.sid
        return redirect(_local(request.form.get("next"), url_for("home")), 303)

    @app.post("/signout")
    def signout() -> Any:
        _parts()["accounts"].sign_out(g.session.sid)
        session.clear()
        return redirect(url_for("signin"), 303)


def _page_routes(app: Flask) -> None:
    @app.get("/")
    def home() -> Any:
        view: LakeView = _parts()["view"]
        datasets = [(d, view.dates(d)) for d in view.datasets()]
        return _page("index.html", datasets=datasets)

    @app.get("/worklist/<dataset>/<date>")
    def worklist(dataset: str, date: str) -> Any:
        parts = _parts()
        view: LakeView = parts["view"]
        dates = dict(view.dates(dataset))
        if date not in dates:
            abort(404)
        films = view.worklist(dataset, date, parts["web"].films_per_page)
        mine = parts["verdicts"].current_for(dataset, g.session.name, [f["image_id"] for f in films])
        _decorate(view, dataset, films)
        return _page(
            "worklist.html",
            dataset=dataset,
            date=date,
            films=films,
            shown_of=dates[date],
            mine=mine,
            findings=FINDINGS,
            form_id=lambda: secrets.token_urlsafe(16),
            choices=(CONFIRM, REJECT),
        )

    @app.get("/patient/<dataset>/<int:patient_id>")
    def patient(dataset: str, patient_id: int) -> Any:
        films = _parts()["view"].patient(dataset, patient_id)
        if not films:
            abort(404)
        findings = [f for f in FINDINGS if any(f in film["called"] for film in films)]
        chart = probability_chart(films, findings) if findings else ""
        return _page(
            "patient.html", dataset=dataset, patient_id=patient_id, films=films, findings=findings, chart=chart
        )


def _verdict_routes(app: Flask) -> None:
    @app.post("/verdict/<dataset>")
    def verdict(dataset: str) -> Any:
        parts = _parts()
        film = parts["view"].film(dataset, request.form.get("image_id", ""))
        if film is None:
            abort(404)
        if film["model_version"] != request.form.get("model_version"):
            return _page("error.html", 409, message="The film was scored again since the page was shown: reload it.")
        called = tuple(film["called"])
        marks = {f: request.form[f"v:{f}"] for f in called if request.form.get(f"v:{f}")}
        marks |= {f: MISSED for f in request.form.getlist("missed") if f not in called}
        try:
            parts["verdicts"].record(
                Verdict(
                    dataset,
                    film["image_id"],
                    g.session.name,
                    film["model_version"],
                    called,
                    marks,
                    no_finding=request.form.get("no_finding") == "1",
                    note=request.form.get("note", "").strip(),
                ),
                request.form.get("form_id") or secrets.token_urlsafe(16),
            )
        except UsageError as exc:
            return _page("error.html", 400, message=f"The verdict was not saved: {exc}.")
        except NotSaved:
            body, status = _page(
                "error.html", 503, message="Your verdict was NOT saved: the verdicts file is busy. Send it again in a "
                "few seconds (go back: the form is as you left it)."
            )  # fmt: skip
            return Response(body, status, headers={"Retry-After": "5"})
        back = _local(request.form.get("back"), url_for("home"))
        return redirect(f"{back}#film-{film['image_id']}", 303)

    @app.get("/picture")
    def picture() -> Any:
        png = _parts()["view"].picture(request.args.get("dataset", ""), request.args.get("id", ""))
        return Response(png, mimetype="image/png") if png else abort(404)

    @app.get("/overlay")
    def overlay() -> Any:
        args = request.args
        dataset, key = args.get("dataset", ""), (args.get("id", ""), args.get("finding", ""), args.get("v", ""))
        png = _overlays(_parts()["view"], dataset, [key]).get(key)
        return Response(png, mimetype="image/png") if png else abort(404)


#: Overlays drawn lately, by (lake, dataset, image_id, finding, model_version): a page's are drawn in one go.
_OVERLAYS: OrderedDict[tuple[str, str, str, str, str], bytes] = OrderedDict()
_OVERLAYS_KEPT = 2000
_OVERLAYS_LOCK = threading.Lock()


def _overlays(view: LakeView, dataset: str, keys: list[tuple[str, str, str]]) -> dict[tuple[str, str, str], bytes]:
    """The see-through overlay of each (image_id, finding, version), drawn once and kept for the pictures' requests."""
    with _OVERLAYS_LOCK:
        found = {k: _OVERLAYS[(view.root, dataset, *k)] for k in keys if (view.root, dataset, *k) in _OVERLAYS}
    missing = [k for k in keys if k not in found]
    for key, png in view.heatmaps(dataset, missing).items():
        found[key] = overlay_png(png, 160)
        with _OVERLAYS_LOCK:
            _OVERLAYS[(view.root, dataset, *key)] = found[key]
            while len(_OVERLAYS) > _OVERLAYS_KEPT:
                _OVERLAYS.popitem(last=False)
    return found


def _decorate(view: LakeView, dataset: str, films: list[dict[str, Any]]) -> None:
    """The finding whose heatmap each film shows, and its PACS viewer link."""
    from flask import current_app

    ids = [f["image_id"] for f in films]
    maps = view.heatmap_findings(dataset, ids)
    template = current_app.extensions["xray"].get("viewer_url", "")
    uids = view.study_uids(dataset, ids) if template else {}
    for rank, film in enumerate(films, start=1):
        have = maps.get((film["image_id"], film["model_version"]), set())
        film["rank"] = rank
        called = {f: film["probs"].get(f, 0.0) for f in film["called"]}
        film["overlay"] = heatmap_to_show(called, film["risk_finding"], have)
        film["viewer_href"] = viewer_link(template, uids.get(film["image_id"]), film["accession_number"])
    _overlays(view, dataset, [(f["image_id"], f["overlay"], f["model_version"]) for f in films if f["overlay"]])
