"""Dashboard pages under ``/ui``: server-rendered Jinja2, inline SVG charts, no CDN.

Sign-in is the API's own: the login page signs the EIP-4361 challenge in the browser with the
participant's key (it never leaves the browser), exchanges it at ``POST /v1/auth/token``, and
hands the access token to ``POST /ui/session``, which checks it exactly as the API does and
keeps it in an HttpOnly, SameSite=Strict cookie. Every page decodes that cookie with the API's
``decode_token`` + revocation check and applies the API's role rules.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote

import jwt
from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field
from sqlalchemy.exc import OperationalError

from api import notification_views
from api.auth import Principal, revoke_token
from api.context import ServiceContext
from api.deps import Ctx, get_principal
from api.errors import ApiError, from_typed, validation_problem
from api.genealogy_service import (
    MAX_SUSPECTS,
    READERS,
    TraceQuery,
    TreeRow,
    as_built_tree,
    may_trace,
    trace,
)
from api.store.errors import StoreUnavailable, store_error
from api.ui import charts, data, fmt
from credit.features import DEFAULT_WINDOW_DAYS
from credit.gates import default_policy
from ledger.errors import LedgerError
from ledger.records import Role, is_identifier
from traceability.genealogy import Filters, Node

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
COOKIE = "qledger_ui"
COOKIE_PATH = "/ui"
STRUCT_HASH = re.compile(r"^0x[0-9a-f]{64}$")
WINDOWS = (90, 180, 365)
NEAR_GATE_POINTS = 3.0  # "near the gate": one bad month can move a score this much

# Served files: our own, and the ethers v6 browser bundle from node_modules (npm ci), so the
# login page signs with a standard implementation and nothing is fetched from a CDN.
STATIC: dict[str, tuple[Path, str]] = {
    "ui.css": (HERE / "static" / "ui.css", "text/css"),
    "login.js": (HERE / "static" / "login.js", "text/javascript"),
    "ethers.umd.min.js": (
        ROOT / "node_modules" / "ethers" / "dist" / "ethers.umd.min.js",
        "text/javascript",
    ),
}

templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.filters.update(
    {
        "num": fmt.num,
        "with_unit": fmt.with_unit,
        "points": fmt.points,
        "percent": fmt.percent,
        "ppm": fmt.ppm,
        "utc": fmt.utc,
        "day": fmt.day,
        "short": fmt.short_hash,
        "feature": fmt.feature_label,
        "kind": lambda k: fmt.KIND_LABELS.get(k, k),
        "kind_one": lambda k: fmt.KIND_ONE.get(k, k),
        "check_label": lambda c: fmt.CHECK_LABELS.get(c, c.replace("_", " ")),
    }
)
templates.env.globals.update({"BAND_MEANING": fmt.BAND_MEANING})


class LoginRequired(Exception):
    """No usable session: go to the login page and come back to ``next_url`` afterwards."""

    def __init__(self, next_url: str, reason: str | None) -> None:
        super().__init__(reason or "login required")
        self.next_url, self.reason = next_url, reason


def _safe_next(value: str | None) -> str | None:
    """Only a path of this dashboard (no scheme, host or protocol-relative URL)."""
    if (
        value
        and value.startswith(COOKIE_PATH + "/")
        and not value.startswith("//")
        and "\\" not in value
        and "://" not in value
    ):
        return value
    return None


def _principal_of(ctx: ServiceContext, token: str) -> Principal:
    """The API's check, verbatim: signature, expiry, and a key still holding a role."""
    return get_principal(ctx, HTTPAuthorizationCredentials(scheme="Bearer", credentials=token))


def page_user(request: Request, ctx: Ctx) -> Principal:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    token = request.cookies.get(COOKIE)
    if not token:
        raise LoginRequired(here, None)
    try:
        return _principal_of(ctx, token)
    except ApiError as exc:
        if exc.status == 401:
            raise LoginRequired(here, exc.code) from exc
        raise


PageUser = Annotated[Principal, Depends(page_user)]


def _quiet_user(request: Request) -> Principal | None:
    """The signed-in user for an error page's header, if any (never raises)."""
    token = request.cookies.get(COOKIE)
    ctx = getattr(request.app.state, "ctx", None)
    if not token or ctx is None:
        return None
    try:
        return _principal_of(ctx, token)
    except (ApiError, LedgerError):
        return None


def nav(user: Principal | None) -> list[tuple[str, str, str]]:
    """(key, label, href) of the pages this role may open."""
    if user is None:
        return []
    items: list[tuple[str, str, str]] = []
    if user.role is Role.SUPPLIER:
        items.append(("supplier", "My credit", f"/ui/suppliers/{quote(user.org_id or '')}"))
    else:
        items.append(("ranking", "Ranking", "/ui/suppliers"))
    items += [
        ("incidents", "Incidents", "/ui/incidents"),
        ("notifications", "Notifications", "/ui/notifications"),
        (
            "records",
            "Record lookup" if user.role in (Role.AUDITOR, Role.ADMIN) else "Records",
            "/ui/records",
        ),
        ("models", "Models", "/ui/models"),
    ]
    if user.role in READERS or user.role is Role.SUPPLIER:
        items[2:2] = [
            ("trace", "As-built", "/ui/trace"),
            ("scope", "Recall scope", "/ui/trace/scope"),
        ]
    return items


def render(
    request: Request,
    template: str,
    user: Principal | None,
    page: str,
    status_code: int = 200,
    **context: Any,
) -> Response:
    response = templates.TemplateResponse(
        request,
        template,
        {"user": user, "nav": nav(user), "page": page, **context},
        status_code=status_code,
    )
    return response  # security headers: api/ui/guard.py, on every /ui response


def error_page(
    request: Request,
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
) -> Response:
    user = _quiet_user(request)
    titles = {
        403: "Not for your role",
        404: "Not found",
        422: "Invalid request",
        500: "Something went wrong",
        502: "Chain error",
        503: "Temporarily unavailable",
    }
    response = render(
        request,
        "error.html",
        user,
        "error",
        status_code=status,
        title=titles.get(status, "Error"),
        status=status,
        code=code,
        message=message,
    )
    response.headers.update(headers or {})
    return response


def _login_redirect(exc: LoginRequired) -> Response:
    target = f"/ui/login?next={quote(exc.next_url, safe='')}"
    if exc.reason:
        target += f"&reason={quote(exc.reason)}"
    response = RedirectResponse(target, status_code=303)
    response.delete_cookie(COOKIE, path=COOKIE_PATH)
    return response


class PageRoute(APIRoute):
    """A page: errors become HTML (a login redirect for 401, an error page otherwise) instead
    of the API's JSON error bodies."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except LoginRequired as exc:
                return _login_redirect(exc)
            except RequestValidationError as exc:
                err = validation_problem(exc)
            except (LedgerError, StoreUnavailable) as exc:
                err = from_typed(exc)
            except OperationalError as exc:  # the database is down or full: 503, not a crash
                typed = store_error(exc)
                if typed is None:
                    raise
                err = from_typed(typed)
            except ApiError as exc:
                err = exc
            return error_page(request, err.status, err.code, err.message, err.headers)

        return page_handler


pages = APIRouter(prefix="/ui", route_class=PageRoute, include_in_schema=False)
endpoints = APIRouter(prefix="/ui", include_in_schema=False)
router = APIRouter()


def _landing(user: Principal) -> str:
    if user.role is Role.SUPPLIER and user.org_id:
        return f"/ui/suppliers/{quote(user.org_id)}"
    return "/ui/suppliers"


# -- session ---------------------------------------------------------------------------------


class SessionRequest(BaseModel):
    accessToken: str = Field(min_length=16, max_length=4096)
    next: str | None = Field(None, max_length=2000)


@endpoints.post("/session")
def create_session(body: SessionRequest, request: Request, ctx: Ctx) -> JSONResponse:
    """Keep an access token (from ``POST /v1/auth/token``) in an HttpOnly, SameSite=Strict
    cookie for the pages. JSON only, so a cross-site form cannot log a browser in."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the token as application/json")
    principal = _principal_of(ctx, body.accessToken)
    expires = int(jwt.decode(body.accessToken, options={"verify_signature": False})["exp"])
    response = JSONResponse(
        {
            "address": principal.address,
            "role": principal.role.value,
            "orgId": principal.org_id,
            "expiresAt": expires,
            "next": _safe_next(body.next) or _landing(principal),
        }
    )
    response.set_cookie(
        COOKIE,
        body.accessToken,
        max_age=max(1, expires - int(time.time())),
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@endpoints.post("/logout")
def logout(request: Request, ctx: Ctx) -> Response:
    """Sign out: revoke the session's token (a copy of it no longer works at the API either)
    and forget the cookie. A cross-site POST never gets here (api/ui/guard.py)."""
    user = _quiet_user(request)
    if user is not None:
        revoke_token(ctx.sessions, user)
    response = RedirectResponse("/ui/login?reason=signed_out", status_code=303)
    response.delete_cookie(COOKIE, path=COOKIE_PATH)
    return response


@endpoints.get("/static/{name}")
def static(name: str) -> Response:
    entry = STATIC.get(name)
    if entry is None:
        raise ApiError(404, "not_found", "no such static file", got=name)
    path, media_type = entry
    if not path.is_file():
        raise ApiError(
            404,
            "not_installed",
            f"{path.name} is missing; run `make install` "
            "(npm ci installs ethers for the login page)",
        )
    return FileResponse(
        path,
        media_type=media_type,
        headers={"Cache-Control": "public, max-age=3600"},  # the rest: api/ui/guard.py
    )


LOGIN_REASONS = {
    "signed_out": "You are signed out.",
    "token_expired": "Your session expired. Sign in again.",
    "invalid_token": "Your session is not valid any more. Sign in again.",
    "key_revoked": "This key no longer holds a role on chain.",
}


@pages.get("/login")
def login(request: Request, next: str | None = None, reason: str | None = None) -> Response:
    current = _quiet_user(request)
    return render(
        request,
        "login.html",
        None,
        "login",
        title="Sign in",
        next=_safe_next(next) or "",
        notice=LOGIN_REASONS.get(reason or ""),
        current=current,
        landing=_landing(current) if current else None,
    )


@pages.get("")
@pages.get("/")
def home(user: PageUser) -> Response:
    return RedirectResponse(_landing(user), status_code=303)


# -- credit ----------------------------------------------------------------------------------

Window = Annotated[int, Query(ge=30, le=730)]


@pages.get("/suppliers")
def ranking_page(
    request: Request, ctx: Ctx, user: PageUser, window_days: Window = DEFAULT_WINDOW_DAYS
) -> Response:
    # Published scores use the gate policy's window; another window would be a what-if, which
    # the dashboard does not publish.
    window_days = default_policy().window_days
    unavailable: list[data.Unavailable] = []
    rows = data.ranking(ctx, user, window_days, unavailable)
    threshold = next((r.threshold for r in rows if r.threshold is not None), None)
    chart = charts.bar_chart(
        [
            charts.Bar(
                r.supplier_id,
                r.score,
                f"band-{r.band}",
                href=f"/ui/suppliers/{quote(r.supplier_id)}",
                note=f" points, band {r.band}, gate {r.outcome}",
            )
            for r in rows
            if r.score is not None  # thin files have no bar: the table says why
        ],
        title=f"Credit score by supplier ({window_days}-day window)",
        axis_title="credit score (points, 0-100)",
        marker=threshold,
        marker_label=f"gate {threshold:g}" if threshold is not None else "",
    )
    sparks = {r.supplier_id: charts.sparkline(r.history) for r in rows}
    policy = next((r.policy for r in rows if r.policy), None)
    passing = sum(r.outcome == "pass" for r in rows)
    bands = [(b, sum(r.band == b for r in rows)) for b in fmt.BAND_MEANING]
    near = [r for r in rows if r.distance is not None and abs(r.distance) <= NEAR_GATE_POINTS]
    movers = sorted(
        (r for r in rows if r.trend is not None and abs(r.trend) >= 0.05),
        key=lambda r: -abs(r.trend or 0.0),
    )[:3]
    return render(
        request,
        "ranking.html",
        user,
        "ranking",
        title="Supplier ranking",
        rows=rows,
        chart=chart,
        sparks=sparks,
        window_days=window_days,
        windows=WINDOWS,
        threshold=threshold,
        policy=policy,
        passing=passing,
        bands=bands,
        near=near,
        near_points=NEAR_GATE_POINTS,
        movers=movers,
        unavailable=unavailable,
    )


@pages.get("/suppliers/{supplier_id}")
def supplier_page(
    supplier_id: str,
    request: Request,
    ctx: Ctx,
    user: PageUser,
    window_days: Window = DEFAULT_WINDOW_DAYS,
) -> Response:
    window_days = default_policy().window_days  # the published reading's window (issue 16)
    view = data.supplier(ctx, user, supplier_id, window_days)
    credit = view.credit
    gate = credit.get("gate") or None
    threshold = gate["threshold"] if gate else None
    top = sorted(credit["contributions"], key=lambda c: abs(c["points"]), reverse=True)
    shown, rest = top[:8], top[8:]
    steps = [
        charts.Step(
            fmt.feature_label(c["feature"]),
            (
                fmt.with_unit(c["value"], c["unit"])
                if c["observed"]
                else "no evidence: " + fmt.with_unit(c["value"], c["unit"])
            ),
            c["points"],
        )
        for c in shown
    ]
    if rest:
        steps.append(
            charts.Step(f"{len(rest)} other features", "combined", sum(c["points"] for c in rest))
        )
    waterfall = (
        charts.waterfall(
            credit["base_value"],
            steps,
            credit["score"],
            threshold=threshold,
            title=f"Why {supplier_id} scores {credit['score']:.1f}: contribution of each "
            "feature in score points (SHAP)",
        )
        if credit["score"] is not None
        else ""  # a thin file: no number, so nothing to explain (the reasons say why)
    )
    history = charts.history_line(
        view.history,
        threshold=threshold,
        title=f"Published credit scores of {supplier_id} over time",
    )
    return render(
        request,
        "supplier.html",
        user,
        "ranking" if user.role is not Role.SUPPLIER else "supplier",
        title=f"Supplier {supplier_id}",
        sid=supplier_id,
        view=view,
        credit=credit,
        gate=gate,
        waterfall=waterfall,
        history_chart=history,
        window_days=window_days,
        windows=WINDOWS,
        contributions=top,
    )


# -- incidents -------------------------------------------------------------------------------


@pages.get("/incidents")
def incidents_page(request: Request, ctx: Ctx, user: PageUser) -> Response:
    rows = data.incidents(ctx, user)
    return render(request, "incidents.html", user, "incidents", title="Incidents", rows=rows)


@pages.get("/incidents/{incident_id}")
def incident_page(incident_id: str, request: Request, ctx: Ctx, user: PageUser) -> Response:
    view = data.incident(ctx, user, incident_id)
    matrix = view["matrix"]
    rows = sorted(matrix["rows"], key=lambda r: -r["weight"])
    chart = charts.bar_chart(
        [
            charts.Bar(
                r["supplier_id"],
                100 * r["weight"],
                "weight",
                href=(
                    f"/ui/suppliers/{quote(r['supplier_id'])}"
                    if user.role is not Role.SUPPLIER or r["supplier_id"] == user.org_id
                    else None
                ),
            )
            for r in rows
        ],
        title=f"Responsibility weights for incident {incident_id} (sum 100 %)",
        axis_title="share of responsibility (%)",
        value_fmt="{:.1f} %",
    )
    return render(
        request,
        "incident.html",
        user,
        "incidents",
        title=f"Incident {incident_id}",
        incident=view["incident"],
        matrix=matrix,
        rows=rows,
        chart=chart,
    )


# -- genealogy (issue 19) --------------------------------------------------------------------


def _lot_form(maker: str | None, part: str | None, lot: str | None) -> Node | None:
    """A lot from the form's three fields, or None while the form is empty."""
    if not (maker or part or lot):
        return None
    values = (maker or "", part or "", lot or "")
    if not all(is_identifier(v) for v in values):
        raise ApiError(
            422,
            "invalid_lot",
            "a lot is named by maker, part number and lot id (letters, digits, - _ : / # .)",
            got="/".join(values),
        )
    return values


@pages.get("/trace")
def trace_tree_page(
    request: Request,
    ctx: Ctx,
    user: PageUser,
    maker: Annotated[str | None, Query(max_length=64)] = None,
    part: Annotated[str | None, Query(max_length=64)] = None,
    lot: Annotated[str | None, Query(max_length=64)] = None,
    direction: Literal["where-from", "where-used"] = "where-from",
) -> Response:
    """As-built part tree of a lot (what it is made of), or the products it went into."""
    root = _lot_form(maker, part, lot)
    rows: list[TreeRow] = []
    cut = False
    if root is not None:
        may_trace(user, [root])
        with ctx.sessions() as s:
            rows, cut = as_built_tree(s, root, direction)
    return render(
        request,
        "trace_tree.html",
        user,
        "trace",
        title="As-built tree",
        root=root,
        rows=rows,
        cut=cut,
        direction=direction,
        form={"maker": maker or "", "part": part or "", "lot": lot or ""},
    )


def _suspects(text: str) -> list[Node]:
    lots: list[Node] = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        parts = tuple(p.strip() for p in line.split(","))
        if len(parts) != 3 or not all(is_identifier(p) for p in parts):
            raise ApiError(
                422, "invalid_lot", "one suspect lot per line: MAKER,PART,LOT", got=line[:200]
            )
        lots.append((parts[0], parts[1], parts[2]))
    if len(lots) > MAX_SUSPECTS:
        raise ApiError(
            422, "too_many_lots", "too many suspect lots", expected=MAX_SUSPECTS, got=len(lots)
        )
    return lots


def _day(value: str | None, end: bool) -> int | None:
    """A YYYY-MM-DD form date as Unix seconds (start of the day, or its last second)."""
    if not value:
        return None
    try:
        day = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError as exc:
        raise ApiError(422, "invalid_date", "dates are YYYY-MM-DD", got=value[:20]) from exc
    return int(day.timestamp()) + (86_399 if end else 0)


@pages.get("/trace/scope")
def trace_scope_page(
    request: Request,
    ctx: Ctx,
    user: PageUser,
    lots: Annotated[str, Query(max_length=MAX_SUSPECTS * 200)] = "",
    since: Annotated[str | None, Query(max_length=10)] = None,
    until: Annotated[str | None, Query(max_length=10)] = None,
    site: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """Recall scope: suspect lots in, every affected product out, counted per level."""
    suspects = _suspects(lots)
    if site and not is_identifier(site):
        raise ApiError(422, "invalid_site", "a site is an identifier", got=site)
    answer = None
    chart = None
    if suspects:
        may_trace(user, suspects)
        filters = Filters(_day(since, False), _day(until, True), site or None)
        with ctx.sessions() as s:
            answer = trace(s, TraceQuery(suspects, "where-used", filters, 500))
        top = max((lv["count"] for lv in answer["levels"]), default=1)
        chart = charts.bar_chart(
            [
                charts.Bar(
                    f"level {lv['depth']}",
                    lv["count"],
                    "weight",
                    note=", ".join(f"{p} {n}" for p, n in lv["parts"].items())[:80],
                )
                for lv in answer["levels"]
            ],
            title="Affected lots per level",
            axis_title="lots",
            hi=float(top),
            value_fmt="{:.0f}",
        )
    return render(
        request,
        "trace_scope.html",
        user,
        "scope",
        title="Recall scope",
        answer=answer,
        chart=chart,
        form={"lots": lots, "since": since or "", "until": until or "", "site": site or ""},
    )


# -- quality notifications ---------------------------------------------------------------------


@pages.get("/notifications")
def notifications_page(
    request: Request,
    ctx: Ctx,
    user: PageUser,
    box: str = "all",
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> Response:
    """The inbox of the reader's organisation: received and sent, state, deadline, overdue."""
    chosen: notification_views.Box = (
        "received" if box == "received" else "sent" if box == "sent" else "all"
    )
    limit = 50
    listing = notification_views.inbox(ctx, user, box=chosen, limit=limit, offset=offset)
    return render(
        request,
        "notifications.html",
        user,
        "notifications",
        title="Notifications",
        rows=listing["notifications"],
        box=chosen,
        offset=offset,
        limit=limit,
    )


@pages.get("/notifications/{notification_id}")
def notification_page(notification_id: str, request: Request, ctx: Ctx, user: PageUser) -> Response:
    if not is_identifier(notification_id):
        raise ApiError(404, "notification_not_found", "no such notification", got="(malformed)")
    thread = notification_views.thread(ctx, user, notification_id)
    return render(
        request,
        "notification.html",
        user,
        "notifications",
        title=f"Notification {notification_id}",
        t=thread,
    )


# -- records ---------------------------------------------------------------------------------


@pages.get("/records")
def records_page(
    request: Request,
    ctx: Ctx,
    user: PageUser,
    q: str | None = None,
    subject: str | None = None,
    kind: str | None = None,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    problem = None
    if q is not None and q.strip():
        wanted = q.strip().lower()
        if not wanted.startswith("0x"):
            wanted = "0x" + wanted
        if STRUCT_HASH.match(wanted):
            return RedirectResponse(f"/ui/records/{wanted}", status_code=303)
        problem = (
            "A record is looked up by its struct hash: 0x followed by 64 hex digits "
            "(the leaf anchored on chain, printed on every receipt)."
        )
    if kind and kind not in data.KINDS:
        kind = None
    if user.role is Role.SUPPLIER:
        subject = None  # a supplier's list is its own records only (the API's rule)
    limit = 50
    listing = data.records(ctx, user, subject=subject, kind=kind, limit=limit, offset=offset)
    return render(
        request,
        "records.html",
        user,
        "records",
        title="Records",
        records=listing["records"],
        q=q or "",
        problem=problem,
        subject=subject or "",
        kind=kind or "",
        kinds=data.KINDS,
        offset=offset,
        limit=limit,
        status_code=422 if problem else 200,
    )


@pages.get("/records/{struct_hash}")
def record_page(struct_hash: str, request: Request, ctx: Ctx, user: PageUser) -> Response:
    view = data.record(ctx, user, struct_hash)
    return render(
        request,
        "record.html",
        user,
        "records",
        title=f"Record {fmt.short_hash(view['summary']['structHash'])}",
        view=view,
        rec=view["summary"],
    )


@pages.get("/records/{struct_hash}/receipt.json")
def receipt_download(struct_hash: str, ctx: Ctx, user: PageUser) -> Response:
    """The receipt as a file, for ``qledger verify RECORD RECEIPT --rpc URL`` offline."""
    if not data.may_get_receipt(user):
        raise ApiError(
            403,
            "forbidden_role",
            "receipts are for suppliers and auditors",
            expected=["SUPPLIER", "AUDITOR", "ADMIN"],
            got=user.role.value,
        )
    view = data.record(ctx, user, struct_hash)
    if view["receipt"] is None:
        raise ApiError(404, "receipt_pending", "the record is not anchored yet")
    name = f"receipt-{view['summary']['structHash'][2:14]}.json"
    return JSONResponse(
        view["receipt"],
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
        },
    )


# -- federated models ------------------------------------------------------------------------


@pages.get("/models")
def models_page(request: Request, ctx: Ctx, user: PageUser) -> Response:
    runs = data.models(ctx, user)
    return render(request, "models.html", user, "models", title="Federated models", runs=runs)


router.include_router(endpoints)
router.include_router(pages)
