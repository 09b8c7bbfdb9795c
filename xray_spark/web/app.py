"""The Flask app: sign-in, the worklist of a scoring date with a verdict form per film, a patient's films.

Every page and picture needs a signed-in session; every form carries its session's CSRF token.
Templates are Jinja2's with autoescaping, so a value from a file, a header, a labels file or a
note is shown as text, never run; the Content-Security-Policy allows no script but the app's own file
(``static/worklist.js``: the large view, window/level, the keyboard, saves without a reload), and every form
still works without it.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import jinja2
from flask import Flask, Response, abort, g, redirect, render_template, request, session, url_for

from xray_spark.audit import (
    INSTANCES_ACCESSED,
    LOGIN,
    MINOR_FAILURE,
    PATIENT_RECORD,
    SOP_UID,
    SUCCESS,
    USER_AUTHENTICATION,
    AuditTrail,
    Participant,
    Subject,
    patient,
)
from xray_spark.config import WebSettings, WorklistSettings
from xray_spark.errors import UsageError
from xray_spark.pages import render
from xray_spark.pages.lake_view import LARGE_OVERLAY, OVERLAY_SIDE, LakeView
from xray_spark.pages.viewer import needs_lookup, orthanc_study_id, viewer_link
from xray_spark.web.accounts import Accounts
from xray_spark.web.verdicts import CONFIRM, MISSED, REJECT, NotSaved, Verdict, VerdictStore

OPEN = {"signin", "static"}
#: Nothing from elsewhere: pictures, the app's own script and its saves from this site only, no inline script.
CSP = (
    "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; script-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def create_app(
    web: WebSettings,
    view: LakeView,
    accounts: Accounts,
    verdicts: VerdictStore,
    *,
    tls: bool,
    worklist: WorklistSettings | None = None,
    audit: AuditTrail | None = None,
) -> Flask:
    app = Flask(__name__)
    # The app's own pages (sign-in, errors, the verdict form), then the worklist's, shared with the static pages.
    own = jinja2.FileSystemLoader(os.path.join(os.path.dirname(__file__), "templates"))
    app.jinja_loader = jinja2.ChoiceLoader([own, render.loader()])  # type: ignore[method-assign, assignment]
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
        "viewer_url": worklist.viewer_url if worklist else "",
        "worklist": worklist or WorklistSettings(),
        "zone": render.time_zone(web.timezone),
        "audit": audit,
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


class AppLinks:
    """The app's URLs for the shared templates (:class:`render.Links`)."""

    def home(self) -> str:
        return url_for("home")

    def signout(self) -> str:
        return url_for("signout")

    def worklist(self, dataset: str, which: str) -> str:
        return url_for("worklist", dataset=dataset, which=which)

    def patient(self, dataset: str, patient_id: int) -> str:
        return url_for("patient", dataset=dataset, patient_id=patient_id)

    def picture(self, dataset: str, film: Mapping[str, Any]) -> str:
        return url_for("picture", dataset=dataset, id=film["image_id"])

    def overlay(self, dataset: str, film: Mapping[str, Any], large: bool = False) -> str:
        key = {"id": film["image_id"], "finding": film["overlay"], "v": film["model_version"]}
        return url_for("overlay", dataset=dataset, **key, **({"large": "1"} if large else {}))

    def display(self, dataset: str, film: Mapping[str, Any]) -> str:
        return url_for("display", dataset=dataset, id=film["image_id"])

    def film(self, dataset: str, film: Mapping[str, Any]) -> str:
        return url_for("film", dataset=dataset, image_id=film["image_id"])


def _page(template: str, status: int = 200, **values: Any) -> tuple[str, int]:
    if g.get("session") is not None:
        values.setdefault("csrf", g.session.csrf)
        values.setdefault("reader", g.session.name)
    values = render.page_values({"app": True, "links": AppLinks(), **values})
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
    _picture_routes(app)


def _account_routes(app: Flask) -> None:
    @app.route("/signin", methods=["GET", "POST"])
    def signin() -> Any:
        accounts: Accounts = _parts()["accounts"]
        if request.method == "GET":
            session["pre_csrf"] = session.get("pre_csrf") or secrets.token_urlsafe(32)
            return _page("signin.html", csrf=session["pre_csrf"], next=request.args.get("next", ""))
        name, address = request.form.get("name", "")[:64], request.remote_addr or "?"
        found = accounts.attempt(name, request.form.get("password", ""), address)  # waited, checked, counted: one step
        _audit_signin(name, address, ok=not isinstance(found, float) and found is not None)
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
        zone = _parts()["zone"]
        datasets = view.datasets()
        nights = {d: view.nights(d, zone) for d in datasets}
        days = [(d, view.dates(d, zone)) for d in datasets]
        return _page("index.html", datasets=days, nights=nights, monitoring=None)

    @app.get("/worklist/<dataset>/<which>")
    def worklist(dataset: str, which: str) -> Any:
        parts = _parts()
        view: LakeView = parts["view"]
        size = view.list_size(dataset, which, parts["zone"])
        if size is None:
            abort(404)
        unanswered = request.args.get("unanswered") == "1"
        answered = parts["verdicts"].answered(dataset, g.session.name) if unanswered else set()
        films = view.worklist(dataset, which, parts["web"].films_per_page, parts["zone"], skip=answered)
        mine = parts["verdicts"].current_for(dataset, g.session.name, [f["image_id"] for f in films])
        render.ready_to_show(view, dataset, films, parts["viewer_url"], _lookup_link(dataset))
        return _page(
            "worklist.html",
            dataset=dataset,
            date=which,
            title=_list_title(view, dataset, which, parts["zone"]),
            films=films,
            shown_of=size,
            unanswered=unanswered,
            answered=len(answered),
            versions=sorted({f["model_version"] for f in films}),
            mine=mine,
            form_id=lambda: secrets.token_urlsafe(16),
            choices=(CONFIRM, REJECT),
        )

    @app.get("/film/<dataset>/<image_id>")
    def film(dataset: str, image_id: str) -> Any:
        parts = _parts()
        view: LakeView = parts["view"]
        found = view.film(dataset, image_id)
        if found is None:
            abort(404)
        render.ready_to_show(view, dataset, [found], parts["viewer_url"], _lookup_link(dataset))
        mine = parts["verdicts"].current_for(dataset, g.session.name, [image_id])
        _audit_read(INSTANCES_ACCESSED, f"{dataset}/{found['patient_id']}", image_id)
        return _page(
            "film.html",
            dataset=dataset,
            film=found,
            mine=mine,
            form_id=lambda: secrets.token_urlsafe(16),
            choices=(CONFIRM, REJECT),
        )

    @app.get("/patient/<dataset>/<int:patient_id>")
    def patient(dataset: str, patient_id: int) -> Any:
        films = _parts()["view"].patient(dataset, patient_id)
        if not films:
            abort(404)
        called_ever, chart = render.patient_chart(films)
        _audit_read(PATIENT_RECORD, f"{dataset}/{patient_id}")
        return _page(
            "patient.html", dataset=dataset, patient_id=patient_id, films=films, called_ever=called_ever, chart=chart
        )


def _audit_signin(name: str, address: str, *, ok: bool) -> None:
    """User Authentication: a sign-in, or one refused (a wrong password, or too many tries)."""
    trail: AuditTrail | None = _parts()["audit"]
    if trail is not None:
        who = Participant(name or "(no name)", True, address)
        outcome = SUCCESS if ok else MINOR_FAILURE
        trail.record(USER_AUTHENTICATION, "E", outcome, [who, Participant("xray-spark web", False)], event_type=LOGIN)


def _audit_read(event: tuple[str, str, str], lake_patient: str, image_id: str = "") -> None:
    """A page with a patient's films that the signed-in reader opened."""
    trail: AuditTrail | None = _parts()["audit"]
    if trail is not None:
        subjects = [patient(lake_patient)] + ([Subject(image_id, SOP_UID, "2", "4")] if image_id else [])
        trail.record(event, "R", SUCCESS, [Participant(g.session.name, True, request.remote_addr or "")], subjects)


def _lookup_link(dataset: str) -> Any:
    return lambda film: url_for("viewer", dataset=dataset, image_id=film["image_id"])


def _list_title(view: LakeView, dataset: str, which: str, zone: Any) -> str:
    """``scored on <day>`` or ``the night that began <time>`` (a scoring run)."""
    began = {run: when for run, when, _ in view.nights(dataset, zone)}.get(which)
    return f"scored in the run that began {began}" if began else f"scored on {which}"


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
        agree = request.form.get("agree_all") == "1"  # every call confirmed; on a film without one, no finding
        marks = {f: request.form[f"v:{f}"] for f in called if request.form.get(f"v:{f}")}
        marks = {f: CONFIRM for f in called} if agree else marks
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
                    no_finding=request.form.get("no_finding") == "1" or (agree and not called),
                    note=request.form.get("note", "").strip(),
                ),
                request.form.get("form_id") or secrets.token_urlsafe(16),
            )
        except UsageError as exc:
            if _wants_json():
                return {"saved": False, "message": f"The verdict was not saved: {exc}."}, 400
            return _page("error.html", 400, message=f"The verdict was not saved: {exc}.")
        except NotSaved:
            if _wants_json():
                message = "Your verdict was NOT saved: the verdicts file is busy. Send it again in a few seconds."
                return Response(
                    json.dumps({"saved": False, "message": message}), 503, mimetype="application/json",
                    headers={"Retry-After": "5"},
                )  # fmt: skip
            body, status = _page(
                "error.html", 503, message="Your verdict was NOT saved: the verdicts file is busy. Send it again in a "
                "few seconds (go back: the form is as you left it)."
            )  # fmt: skip
            return Response(body, status, headers={"Retry-After": "5"})
        if _wants_json():  # the page's own script: the verdict as saved, no reload
            saved = parts["verdicts"].current_for(dataset, g.session.name, [film["image_id"]])[film["image_id"]]
            return {"saved": True, "image_id": film["image_id"], "findings": saved["findings"],
                    "no_finding": saved["no_finding"], "note": saved["note"]}  # fmt: skip
        back = _local(request.form.get("back"), url_for("home"))
        return redirect(f"{back}#film-{film['image_id']}", 303)


def _picture_routes(app: Flask) -> None:
    @app.get("/picture")
    def picture() -> Any:
        png = _parts()["view"].picture(request.args.get("dataset", ""), request.args.get("id", ""))
        return Response(png, mimetype="image/png") if png else abort(404)

    @app.get("/viewer/<dataset>/<image_id>")
    def viewer(dataset: str, image_id: str) -> Any:
        """The study in the PACS viewer, its archive asked for the id the viewer wants (``{orthanc_study}``)."""
        parts = _parts()
        settings: WorklistSettings = parts["worklist"]
        film = parts["view"].film(dataset, image_id)
        study_uid = parts["view"].study_uids(dataset, [image_id]).get(image_id) if film else None
        if not study_uid or not needs_lookup(settings.viewer_url):
            abort(404)
        credentials = _read_credentials(settings.viewer_lookup_auth)
        try:
            orthanc = orthanc_study_id(settings.viewer_lookup, study_uid, credentials)
        except (OSError, ValueError) as exc:
            message = f"The PACS at {settings.viewer_lookup} did not answer ({type(exc).__name__}): try again later."
            return _page("error.html", 502, message=message)
        if orthanc is None:
            return _page("error.html", 404, message="The PACS does not hold this film's study (asked by its UID).")
        return redirect(viewer_link(settings.viewer_url, study_uid, film["accession_number"], orthanc), 303)

    @app.get("/display")
    def display() -> Any:
        found = _parts()["view"].display(request.args.get("dataset", ""), request.args.get("id", ""))
        picture = found[0] if found else None
        return Response(picture, mimetype="image/jpeg") if picture else abort(404)

    @app.get("/overlay")
    def overlay() -> Any:
        args = request.args
        dataset, key = args.get("dataset", ""), (args.get("id", ""), args.get("finding", ""), args.get("v", ""))
        side = LARGE_OVERLAY if args.get("large") == "1" else OVERLAY_SIDE
        png = _parts()["view"].overlays(dataset, [key], side).get(key)
        return Response(png, mimetype="image/png") if png else abort(404)


def _read_credentials(path: str) -> str:
    """``user:password`` from the file ``path`` (its first line), or empty when there is none."""
    if not path:
        return ""
    with open(path, encoding="utf-8") as fh:
        return fh.readline().strip()


def _wants_json() -> bool:
    """The page's own script asks for JSON; a plain form post gets the page back."""
    return request.accept_mimetypes.best == "application/json"
