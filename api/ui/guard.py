"""One ASGI middleware for everything under ``/ui``: security headers on every response
(pages, redirects, error pages, 404s, even a crash's 500) and a same-origin check on every
state-changing request (CSRF), on top of the session cookie's SameSite=Strict.

The CSRF check is OWASP's "verifying origin with standard headers": a POST (or any method other
than GET/HEAD/OPTIONS) must carry an ``Origin`` -- or failing that a ``Referer`` -- naming the
service's own origin: that of ``public_url`` when it is set (behind a proxy), otherwise the
scheme and ``Host`` of the request itself. A missing or ``null`` origin is refused too: every
browser sends one on a POST, and pages here set ``Referrer-Policy: same-origin`` so that a
same-origin POST carries its origin (with ``no-referrer`` browsers send ``Origin: null``).
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import ApiError

log = logging.getLogger("qledger.ui")

UI_PREFIX = "/ui"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DEFAULT_PORTS = {"http": 80, "https": 443}

# Sent with every /ui response unless the route set its own value (static files keep their
# public Cache-Control). Together: no inline or foreign script, style or frame; never framed
# (frame-ancestors, and X-Frame-Options for browsers without CSP level 2); no MIME sniffing;
# the referrer only to ourselves; nothing cached by shared caches.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
    "script-src 'self'; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of ``url``, lower-cased, default port left out; None if it has
    no scheme or host."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if scheme not in DEFAULT_PORTS or not host:
        return None
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{scheme}://{host}" + (f":{port}" if port and port != DEFAULT_PORTS[scheme] else "")


def _under_ui(path: str) -> bool:
    return path == UI_PREFIX or path.startswith(UI_PREFIX + "/")


class UiGuard:
    """Security headers and the same-origin check for ``/ui`` (see the module docstring)."""

    def __init__(self, app: ASGIApp, public_url: str | None = None) -> None:
        self.app = app
        self.public_origin = origin_of(public_url) if public_url else None

    def own_origin(self, scope: Scope, headers: Headers) -> str | None:
        if self.public_origin:
            return self.public_origin
        host = headers.get("host")
        return origin_of(f"{scope.get('scheme', 'http')}://{host}") if host else None

    def cross_site_reason(self, scope: Scope) -> str | None:
        """Why this request is not provably same-origin, or None if it is."""
        headers = Headers(scope=scope)
        claimed = headers.get("origin")
        if claimed is None:
            referer = headers.get("referer")
            if referer is None:
                return "the request names no Origin or Referer"
            claimed = referer
        if claimed.strip() == "null":
            return "the request's Origin is null (opaque or privacy-masked)"
        own = self.own_origin(scope, headers)
        if own is None or origin_of(claimed) != own:
            return f"the request comes from {claimed[:200]!r}, not from this service ({own})"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _under_ui(scope["path"]):
            await self.app(scope, receive, send)
            return
        started = False

        async def send_secured(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        if scope["method"] not in SAFE_METHODS:
            reason = self.cross_site_reason(scope)
            if reason is not None:
                log.warning("refused cross-site %s %s: %s", scope["method"], scope["path"], reason)
                error = ApiError(403, "cross_site_request", f"refused: {reason}")
                await error.response()(scope, receive, send_secured)
                return
        try:
            await self.app(scope, receive, send_secured)
        except Exception:
            # The server's own 500 page would go out without our headers; send it ourselves
            # (when nothing was sent yet) and let the error propagate to be logged.
            if not started:
                await PlainTextResponse("Internal Server Error", status_code=500)(
                    scope, receive, send_secured
                )
            raise
