"""Web routes around the Gradio page: login with expiring sessions, and the viewer's image API.

Every request needs a valid session cookie except the login page and ``/healthz`` (liveness
only): a browser is sent to ``/login``, anything else gets 401. The Gradio page learns the user
from the same cookie (``auth_dependency``), so callbacks see ``request.username``.

Every route that serves patient data asks ``readingroom.access`` whether the user's sites cover
the study; another site's study is answered 404, exactly like a missing one. Every view is
audited (``readingroom.audit``: who, what, from which address). State-changing requests from a
browser must come from this page (Origin or Referer), and every answer carries the security
headers (``SECURITY_HEADERS``; HSTS over HTTPS).

Viewer API (JSON and PNG; the browser code is ``workstation/static/viewer.js``):
    GET /api/viewer/study/{study_uid}                 series, windows, key tags, AI results, priors
    GET /api/viewer/series/{series_uid}/{index}.png   one slice, windowed (?c=&w=&invert=0|1)
    GET /api/viewer/heatmap/{finding_id}/{index}.png  the AI heatmap of that slice (RGBA)
    GET /api/status                                   the studies the user may see, for scripts

FHIR (orders.fhir): POST /fhir/ServiceRequest, with a session or HTTP Basic credentials.

Dictation API (the page's microphone, workstation/static/viewer.js):
    POST /api/dictation/{study_uid}/audio?rate=R      16-bit mono PCM, in order
    POST /api/dictation/{study_uid}/stop              end of recording
"""

from __future__ import annotations

import html
import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np
from fastapi import Form, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy import select

from readingroom import NOT_FOR_CLINICAL_USE
from readingroom.access import (
    NotVisible, finding_for_user, may_see, series_for_user, study_for_user, user_sites, visible_to,
)
from readingroom.audit import AccessLog, record_access
from readingroom.auth import LoginThrottle, authenticate, create_session, end_session, session_user
from readingroom.db import Database
from readingroom.schema import AIFinding, Instance, Order, Series, Site, Study
from readingroom.settings import Settings
from triage.priority import PolicyConfig
from triage.worklist import ai_view, policy_config
from workstation.viewer import (
    PRESETS, VolumeCache, ViewerError, encode_png, heatmap_layer, heatmap_rgba, render_slice,
)

log = logging.getLogger(__name__)

COOKIE = "rr_session"
# Gradio's page needs inline scripts and styles, the microphone's AudioWorklet a blob: script;
# everything else is locked to this origin.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval' blob:; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; media-src 'self' data: blob:; font-src 'self' data:; "
    "connect-src 'self' ws: wss:; worker-src 'self' blob:; object-src 'none'; base-uri 'self'; "
    "form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin",   # no-referrer makes Origin "null"
}
HSTS = "max-age=31536000"
UNSAFE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
PUBLIC_PATHS = ("/login", "/healthz", "/favicon.ico")
# Machine clients (a site's order system posting FHIR ServiceRequests) may use HTTP Basic
# authentication with an account instead of the browser's session cookie.
API_CLIENT_PREFIXES = ("/fhir/",)

LOGIN_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>ReadingRoom login</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{{background:#0b0f14;color:#d8dee9;font:16px system-ui,sans-serif;display:flex;justify-content:center;
align-items:center;height:100vh;margin:0}} form{{background:#151b23;padding:2em 2.5em;border-radius:8px;width:22em}}
h1{{font-size:1.4em;margin:0 0 .3em}} p.note{{color:#f0a020;font-size:.85em;margin:0 0 1.2em}}
label{{display:block;margin:.8em 0 .3em}} input{{width:100%;padding:.5em;background:#0b0f14;color:#eee;
border:1px solid #334;border-radius:4px;box-sizing:border-box}} button{{margin-top:1.4em;width:100%;padding:.6em;
background:#2563eb;color:white;border:0;border-radius:4px;font-size:1em;cursor:pointer}}
.error{{color:#ff6b6b;margin-top:1em}}</style></head>
<body><form method="post" action="/login" id="login">
<h1>ReadingRoom</h1><p class="note">{notice}</p>
<label for="username">User</label><input id="username" name="username" autocomplete="username" autofocus required>
<label for="password">Password</label><input id="password" name="password" type="password"
 autocomplete="current-password" required>
<button type="submit" id="login-button">Log in</button>{error}</form></body></html>"""


def source(request: Any) -> str:
    """The client's address, for the audit log."""
    return request.client.host if request.client else ""


def same_origin(request: Any) -> bool:
    """Whether a state-changing request may go on: a browser names the page it comes from
    (Origin, or Referer), which must be this server; a client that names none (curl, a RIS,
    gradio_client) carries no browser's cookies by accident, so it passes."""
    from urllib.parse import urlsplit

    claimed = request.headers.get("origin") or request.headers.get("referer")
    if not claimed:
        return True
    return claimed != "null" and urlsplit(claimed).netloc == request.headers.get("host", "")


def study_payload(db: Database, study_uid: str, config: PolicyConfig, *,
                  allowed: set[str] | None) -> dict[str, Any] | None:
    """What the viewer needs to open a study (without decoding any image). ``config`` is the
    priority policy, whose ``decide`` says which AI findings are positive; ``allowed`` the
    user's sites (``access.user_sites``), which the priors are limited to."""
    with db.reader() as session:
        study = session.scalar(select(Study).where(Study.study_uid == study_uid))
        if study is None:
            return None
        series = [{
            "uid": s.series_uid, "number": s.series_number, "modality": s.modality,
            "description": s.description or f"Series {s.series_number or ''}".strip(),
            "images": sum(i.number_of_frames or 1 for i in s.instances),
        } for s in study.series]
        findings = session.scalars(select(AIFinding).where(AIFinding.study_id == study.id)
                                   .order_by(AIFinding.id)).all()
        ai = [{"id": f.id, **ai_view(f, config), "series_uid": getattr(f, "series_uid", None),
               "heatmap": bool(getattr(f, "heatmap_path", None))} for f in findings]
        priors = []
        if study.patient_id:
            for p in session.scalars(select(Study).where(Study.patient_id == study.patient_id,
                                                         Study.id != study.id).order_by(Study.study_date.desc())):
                if not may_see(allowed, p.site.name if p.site else None):
                    continue
                priors.append({"study_uid": p.study_uid, "date": p.study_date, "description": p.description,
                               "accession": p.accession, "status": p.status})
        info = {
            "patient_name": study.patient_name, "patient_id": study.patient_id, "sex": study.patient_sex,
            "birth_date": study.patient_birth_date, "accession": study.accession, "date": study.study_date,
            "description": study.description, "referring_physician": study.referring_physician,
            "order_priority": study.order_priority, "site": study.site.name if study.site else "",
            "status": study.status, "ai_status": study.ai_status,
        }
        order = session.get(Order, study.order_id) if getattr(study, "order_id", None) else None
        if order is not None:
            info.update(indication=order.indication, laterality=order.laterality,
                        ordering_physician=order.ordering_physician,
                        order_priority=order.priority or info["order_priority"],
                        protocol=order.protocol_name, contrast_allergy=order.contrast_allergy)
        info["linked_order"] = order is not None
    return {"study_uid": study_uid, "info": info, "series": series, "ai": ai, "priors": priors,
            "presets": {k: list(v) for k, v in PRESETS.items()}, "notice": NOT_FOR_CLINICAL_USE}


def series_paths(db: Database, settings: Settings, series_uid: str) -> list[Path] | None:
    with db.reader() as session:
        series_id = session.scalar(select(Series.id).where(Series.series_uid == series_uid))
        if series_id is None:
            return None
        rel = session.scalars(select(Instance.path).where(Instance.series_id == series_id)).all()
    return [Path(settings.home) / p for p in rel]


class WebSessions:
    """Who is asking: the server-side session behind the cookie (``auth.session_user``: logout,
    a password change or disabling the user end it; so does ``web.session_idle_min`` unused), or
    HTTP Basic credentials for machine clients. Failed logins are throttled per user and per
    address (``auth.LoginThrottle``) and audited."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.ttl_s = settings.web.session_ttl_min * 60
        self.idle_s = settings.web.session_idle_min * 60
        self.throttle = LoginThrottle()

    def user(self, request: Any) -> str | None:
        """The logged-in user of a request, or None (Gradio's ``auth_dependency``)."""
        return session_user(self.db, request.cookies.get(COOKIE), self.idle_s)

    def require(self, request: Any) -> str:
        name = self.user(request)
        if name is None:          # the gate lets no such request through; this is a second lock
            raise HTTPException(401, "not logged in, or the session expired: log in at /login")
        return name

    def check_password(self, request: Any, username: str, password: str) -> tuple[str | None, float]:
        """(the user, 0) for right credentials; (None, seconds to wait) otherwise. A refusal
        while throttled does not even look at the password."""
        address = source(request)
        wait = self.throttle.allowed(username, address)
        if wait:
            log.warning("login for %r from %s refused: %d failures, locked for %.0f s", username, address,
                        self.throttle.max_failures, wait)
            return None, wait
        user = authenticate(self.db, username, password)
        if user is None:
            self.throttle.failed(username, address)
            record_access(self.db, username[:64] or "(none)", "login_failed", source=address)
            return None, 0.0
        self.throttle.succeeded(username, address)
        return user.username, 0.0

    def basic(self, request: Any) -> str | None:
        import base64
        import binascii

        header = request.headers.get("authorization", "")
        if not header.lower().startswith("basic "):
            return None
        try:
            name, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return self.check_password(request, name, password)[0]


def install_routes(api: Any, settings: Settings, db: Database, cache: VolumeCache | None = None) -> Any:
    """Add the security gate, login and logout, the viewer and the dictation API to a FastAPI
    app. Returns the ``auth_dependency`` to give Gradio."""
    sessions = WebSessions(db, settings)
    install_gate(api, sessions)
    install_login(api, db, sessions)
    install_viewer(api, settings, db, sessions, cache or VolumeCache(settings.web.viewer_cache_mb << 20))
    install_dictation(api, db, sessions)
    return sessions.user


def install_gate(api: Any, sessions: WebSessions) -> None:
    """Every answer gets the security headers; a cross-site browser POST is refused; without a
    session only the public paths (and Basic credentials on the machine-client paths) pass."""

    @api.middleware("http")
    async def session_gate(request: Request, call_next):  # FastAPI middleware
        response = await gate(request, call_next)
        response.headers.update(SECURITY_HEADERS)
        if request.url.scheme == "https":
            response.headers["Strict-Transport-Security"] = HSTS
        return response

    async def gate(request: Request, call_next) -> Response:
        path = request.url.path
        if request.method in UNSAFE_METHODS and not same_origin(request):
            log.warning("refused %s %s from %s: Origin/Referer %r is not this server", request.method, path,
                        source(request), request.headers.get("origin") or request.headers.get("referer"))
            return JSONResponse({"error": "cross-site request refused: use the ReadingRoom page itself"},
                                status_code=403)
        request.state.username = sessions.user(request)    # the routes (orders.fhir) read who it is
        if path in PUBLIC_PATHS or request.state.username:
            return await call_next(request)
        if path.startswith(API_CLIENT_PREFIXES) and (basic := sessions.basic(request)):
            request.state.username = basic
            return await call_next(request)
        if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
            return RedirectResponse("/login", status_code=303)
        return JSONResponse({"error": "not logged in, or the session expired: log in at /login"}, status_code=401)


def install_login(api: Any, db: Database, sessions: WebSessions) -> None:
    @api.get("/login", response_class=HTMLResponse)
    def login_page(error: str = "") -> str:
        message = f'<p class="error" id="login-error">{html.escape(error)}</p>' if error else ""
        return LOGIN_PAGE.format(notice=html.escape(NOT_FOR_CLINICAL_USE), error=message)

    @api.post("/login")
    def login(request: Request, username: str = Form(...), password: str = Form(...)) -> Response:
        # A browser's form gets redirects; an API client (gradio_client, curl) gets 200, 401 or 429.
        browser = "text/html" in request.headers.get("accept", "")
        name, wait = sessions.check_password(request, username, password)
        if name is None:
            text = (f"Too many failed logins: try again in {wait / 60:.0f} min." if wait
                    else "Wrong user or password.")
            if browser:
                return RedirectResponse("/login?" + urlencode({"error": text}), status_code=303)
            return JSONResponse({"error": text}, status_code=429 if wait else 401)
        response = RedirectResponse("/", status_code=303) if browser else JSONResponse({"success": True})
        response.set_cookie(COOKIE, create_session(db, name, sessions.ttl_s), max_age=int(sessions.ttl_s),
                            httponly=True, samesite="strict", secure=request.url.scheme == "https")
        log.info("%s logged in from %s", name, source(request))
        return response

    @api.get("/logout")
    def logout(request: Request) -> Response:
        end_session(db, request.cookies.get(COOKIE))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE)
        return response


def install_viewer(api: Any, settings: Settings, db: Database, sessions: WebSessions, cache: VolumeCache) -> None:
    """The viewer's API: every route checks the user's sites, and every view is audited."""
    views = AccessLog(db)

    def visible(check: Any, *args: Any) -> str:
        """The study UID the check returns, or 404 for a missing object or another site's."""
        try:
            return check(db, *args)
        except NotVisible as exc:
            raise HTTPException(404, str(exc)) from exc

    @api.get("/api/viewer/study/{study_uid}")
    def viewer_study(study_uid: str, request: Request) -> dict[str, Any]:
        name = sessions.require(request)
        visible(study_for_user, name, study_uid)
        payload = study_payload(db, study_uid, policy_config(settings), allowed=user_sites(db, name))
        if payload is None:
            raise HTTPException(404, f"study {study_uid} is not in the database")
        record_access(db, name, "view", study_uid=study_uid, what="study", source=source(request))
        return payload

    @api.get("/api/status")
    def status(request: Request) -> dict[str, Any]:
        """How many studies the user may see, and how many still wait for the AI (for scripts and tests)."""
        allowed = user_sites(db, sessions.require(request))
        with db.reader() as session:
            rows = session.execute(select(Study.ai_status, Site.name).outerjoin(Site, Site.id == Study.site_id)).all()
        mine = [ai for ai, site in rows if may_see(allowed, site)]
        return {"studies": len(mine), "ai_pending": mine.count("pending"), "notice": NOT_FOR_CLINICAL_USE}

    def volume(series_uid: str, request: Request, what: str):
        name = sessions.require(request)
        study_uid = visible(series_for_user, name, series_uid)
        paths = series_paths(db, settings, series_uid)
        if paths is None:
            raise HTTPException(404, f"series {series_uid} is not in the database")
        views.view(name, study_uid, f"{what} {series_uid}", source(request))
        try:
            return cache.get(series_uid, paths)
        except ViewerError as exc:
            raise HTTPException(422, str(exc)) from exc

    @api.get("/api/viewer/series/{series_uid}/info")
    def series_info(series_uid: str, request: Request) -> dict[str, Any]:
        vol = volume(series_uid, request, "series tags")
        return {"uid": series_uid, "slices": vol.slices, "window": list(vol.default_window), "invert": vol.invert,
                "color": vol.color, "rows": int(vol.pixels.shape[1]), "columns": int(vol.pixels.shape[2]),
                "tags": vol.tags}

    @api.get("/api/viewer/series/{series_uid}/{index}.png")
    def series_slice(series_uid: str, index: int, request: Request, c: float | None = None,
                     w: float | None = None, invert: int | None = None) -> Response:
        vol = volume(series_uid, request, "images")
        png = render_slice(vol, index, c, w, None if invert is None else bool(invert))
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=300"})

    @api.get("/api/viewer/heatmap/{finding_id}/{index}.png")
    def heatmap(finding_id: int, index: int, request: Request) -> Response:
        visible(finding_for_user, sessions.require(request), finding_id)
        with db.reader() as session:
            finding = session.get(AIFinding, finding_id)
            rel = getattr(finding, "heatmap_path", None) if finding else None
            series_uid = getattr(finding, "series_uid", None) if finding else None
        if not rel or not series_uid:
            raise HTTPException(404, "this AI finding has no heatmap")
        import json

        path = Path(settings.home) / rel
        maps = np.load(path).astype(np.float32)
        sidecar = path.with_suffix(".json")
        sop_uids = json.loads(sidecar.read_text()).get("sop_uids", []) if sidecar.exists() else []
        vol = volume(series_uid, request, "AI heatmap")
        layer = heatmap_layer(maps, vol, index, sop_uids)
        if layer is None:
            layer = np.zeros((8, 8), np.float32)               # no map for this slice: transparent
        return Response(encode_png(heatmap_rgba(layer, tuple(vol.pixels.shape[1:3]))), media_type="image/png",
                        headers={"Cache-Control": "private, max-age=300"})


def install_dictation(api: Any, db: Database, sessions: WebSessions) -> None:
    @api.post("/api/dictation/{study_uid}/audio")
    async def dictation_audio(study_uid: str, request: Request, rate: int = 16000) -> dict[str, Any]:
        """Raw little-endian 16-bit mono PCM from the page's microphone, in order."""
        from dictation.live import REGISTRY

        name = sessions.require(request)
        if not visible_to(db, name, study_uid):
            raise HTTPException(404, f"study {study_uid} is not in the database, or not in your sites")
        live = REGISTRY.get(name, study_uid)
        if live is None:
            raise HTTPException(409, "no dictation is open for this study: open the study from the worklist first")
        if live.read_only:
            raise HTTPException(409, "this report is signed final and cannot change: type an addendum under "
                                     "Checks and sign-off instead")
        body = await request.body()
        if len(body) % 2 or not 8000 <= rate <= 192000:
            raise HTTPException(400, "send 16-bit mono PCM with ?rate= between 8000 and 192000")
        live.feed(rate, np.frombuffer(body, "<i2"))
        return {"queued_s": round(len(body) / 2 / rate, 3)}

    @api.post("/api/dictation/{study_uid}/stop")
    def dictation_stop(study_uid: str, request: Request) -> dict[str, Any]:
        from dictation.live import REGISTRY

        live = REGISTRY.get(sessions.require(request), study_uid)
        if live is not None:
            live.stop(wait=False)
        return {"stopped": live is not None}

