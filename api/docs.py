"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) from files this service serves itself.

FastAPI's default pages load Swagger UI and ReDoc from a CDN, so on a plant network without
internet access ``/docs`` stays blank. Here the assets come from the npm packages
``swagger-ui-dist`` and ``redoc`` (package.json, installed by ``make install``'s ``npm ci``, as
the dashboard's ethers bundle is) and are served under ``/docs/assets/``; nothing else is
fetched. Each page carries a Content-Security-Policy that allows only this origin's scripts
plus the page's own inline initialiser, by its SHA-256 hash.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

from api.errors import ApiError

ROOT = Path(__file__).resolve().parents[1]
NODE_MODULES = ROOT / "node_modules"
ASSET_PREFIX = "/docs/assets"

ASSETS: dict[str, tuple[Path, str]] = {
    "swagger-ui-bundle.js": (
        NODE_MODULES / "swagger-ui-dist" / "swagger-ui-bundle.js",
        "text/javascript",
    ),
    "swagger-ui.css": (NODE_MODULES / "swagger-ui-dist" / "swagger-ui.css", "text/css"),
    "favicon-32x32.png": (NODE_MODULES / "swagger-ui-dist" / "favicon-32x32.png", "image/png"),
    "redoc.standalone.js": (
        NODE_MODULES / "redoc" / "bundles" / "redoc.standalone.js",
        "text/javascript",
    ),
}

_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def _csp(html: str) -> str:
    """Only our own scripts and this page's inline initialiser (by hash); styles may be inline
    (Swagger UI and ReDoc set them at run time); ReDoc's search runs in a blob: worker."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
        for s in _INLINE_SCRIPT.findall(html)
    )
    return (
        f"default-src 'self'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
        "worker-src 'self' blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    )


def _page(response: HTMLResponse) -> HTMLResponse:
    html = bytes(response.body).decode()
    response.headers["Content-Security-Policy"] = _csp(html)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


def install_docs(app: FastAPI) -> None:
    """Mount ``/docs``, ``/redoc`` and their assets (the app is built with ``docs_url=None``
    and ``redoc_url=None``)."""
    router = APIRouter(include_in_schema=False)
    title = f"{app.title} API"

    def assets(request: Request) -> str:
        return request.scope.get("root_path", "") + ASSET_PREFIX

    def openapi_url(request: Request) -> str:
        return request.scope.get("root_path", "") + (app.openapi_url or "/openapi.json")

    @router.get("/docs")
    def swagger(request: Request) -> HTMLResponse:
        base = assets(request)
        return _page(
            get_swagger_ui_html(
                openapi_url=openapi_url(request),
                title=title,
                swagger_js_url=f"{base}/swagger-ui-bundle.js",
                swagger_css_url=f"{base}/swagger-ui.css",
                swagger_favicon_url=f"{base}/favicon-32x32.png",
            )
        )

    @router.get("/redoc")
    def redoc(request: Request) -> HTMLResponse:
        base = assets(request)
        return _page(
            get_redoc_html(
                openapi_url=openapi_url(request),
                title=title,
                redoc_js_url=f"{base}/redoc.standalone.js",
                redoc_favicon_url=f"{base}/favicon-32x32.png",
                with_google_fonts=False,
            )
        )

    @router.get(ASSET_PREFIX + "/{name}")
    def asset(name: str) -> FileResponse:
        if name not in ASSETS:
            raise ApiError(404, "not_found", "no such documentation asset", got=name[:64])
        path, media_type = ASSETS[name]
        if not path.is_file():
            raise ApiError(
                503,
                "docs_assets_missing",
                f"the API page's {name} is not installed: run `make install` (npm ci)",
            )
        return FileResponse(
            path, media_type=media_type, headers={"Cache-Control": "public, max-age=86400"}
        )

    app.include_router(router)
