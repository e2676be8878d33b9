"""API errors as RFC 9457 problem details (``application/problem+json``).

Every error body, whatever raised it, is one problem object::

    {"type": "https://qledger.dev/problems/<code>", "title": "...", "status": 422,
     "detail": "...", "code": "<code>", "expected"?: any, "got"?: any, "errors"?: [...]}

``code`` (an extension member) is the machine code clients branch on; ``type`` is its stable
URI. Statuses come from the error itself: an :class:`ApiError` names its status where it is
raised, and the typed errors of the layers below (``ledger.errors``, ``api.store.errors``,
``credit.score.AdditivityError``) carry ``code``, ``http_status`` and ``retry_after_seconds`` as
class attributes. There is no table of codes here. Anything a client can cause is a 4xx; a 5xx
never shows internals (the last-resort handler answers ``internal_error`` and logs the rest).
docs/api.md lists every code.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.store.errors import StoreUnavailable, store_error
from ledger.errors import LedgerError

log = logging.getLogger("qledger.api")

PROBLEM_MEDIA_TYPE = "application/problem+json"  # RFC 9457 section 3
# A problem type is a URI naming the code; it is an identifier, stable across releases, and the
# page it names documents the code (docs/api.md, "Error codes").
PROBLEM_TYPE_BASE = "https://qledger.dev/problems/"
MAX_VALIDATION_ERRORS = 20  # validation details listed in one answer


def problem_type(code: str) -> str:
    return PROBLEM_TYPE_BASE + code


def problem_title(code: str) -> str:
    """The type's short summary (the same for every occurrence, as RFC 9457 asks)."""
    return code.replace("_", " ").capitalize()


class ValidationIssue(BaseModel):
    loc: list[str | int]
    msg: str
    type: str | None = None


class Problem(BaseModel):
    """An RFC 9457 problem object with qledger's extension members."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(examples=["https://qledger.dev/problems/invalid_signature"])
    title: str = Field(examples=["Invalid signature"])
    status: int = Field(ge=400, le=599)
    detail: str
    code: str = Field(description="machine code; docs/api.md lists them all")
    expected: Any | None = None
    got: Any | None = None
    errors: list[ValidationIssue] | None = Field(None, description="request validation details")


class ApiError(Exception):
    """An error the service answers as a problem; ``status`` is chosen where it is raised."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        expected: Any = None,
        got: Any = None,
        errors: list[dict[str, Any]] | None = None,
        retry_after: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.expected, self.got, self.errors = expected, got, errors
        self.headers = dict(headers or {})
        if retry_after is not None:
            self.headers["Retry-After"] = str(retry_after)

    @property
    def http_status(self) -> int:
        return self.status

    def problem(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": problem_type(self.code),
            "title": problem_title(self.code),
            "status": self.status,
            "detail": self.message,
            "code": self.code,
        }
        if self.expected is not None:
            body["expected"] = _jsonable(self.expected)
        if self.got is not None:
            body["got"] = _jsonable(self.got)
        if self.errors is not None:
            body["errors"] = self.errors
        return body

    def response(self) -> JSONResponse:
        return JSONResponse(
            self.problem(),
            status_code=self.status,
            headers=self.headers or None,
            media_type=PROBLEM_MEDIA_TYPE,
        )


def from_typed(exc: LedgerError | StoreUnavailable) -> ApiError:
    """The problem for a typed error of a lower layer, from its own class attributes."""
    status = exc.http_status
    public = exc.message_is_public
    message = str(exc) if public else _summary(exc)
    return ApiError(
        status,
        exc.code,
        message,
        expected=exc.expected if public else None,
        got=exc.got if public else None,
        retry_after=exc.retry_after_seconds,
    )


def _summary(exc: Exception) -> str:
    doc = type(exc).__doc__ or ""
    return doc.strip().splitlines()[0] if doc.strip() else problem_title(getattr(exc, "code", ""))


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


def validation_problem(exc: RequestValidationError) -> ApiError:
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    code = "malformed_json" if first.get("type") == "json_invalid" else "invalid_request"
    where = ".".join(str(p) for p in first.get("loc", ()))
    return ApiError(
        400 if code == "malformed_json" else 422,
        code,
        f"{where}: {first.get('msg')}",
        errors=[
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg")), "type": e.get("type")}
            for e in errors[:MAX_VALIDATION_ERRORS]
        ],
    )


HTTP_CODES = {
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


def http_problem(exc: StarletteHTTPException) -> ApiError:
    """Starlette's own errors (no route, wrong method) as problems."""
    return ApiError(
        exc.status_code,
        HTTP_CODES.get(exc.status_code, "http_error"),
        str(exc.detail),
        headers=dict(exc.headers or {}),
    )


INTERNAL_ERROR = ApiError(
    500, "internal_error", "the service failed to answer this request; it has been logged"
)


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(LedgerError)
    async def _ledger(request: Request, exc: LedgerError) -> JSONResponse:
        if exc.http_status >= 500:
            log.warning("%s %s: %s: %s", request.method, request.url.path, exc.code, exc)
        return from_typed(exc).response()

    @app.exception_handler(StoreUnavailable)
    async def _store(request: Request, exc: StoreUnavailable) -> JSONResponse:
        log.warning("%s %s: %s", request.method, request.url.path, exc.code)
        return from_typed(exc).response()

    async def _database(request: Request, exc: Exception) -> JSONResponse:
        # A full or unreachable database reached from any route: a typed 503. Any other driver
        # error is a bug: a 500 without internals. The driver's text names SQL and files, so it
        # is logged here and never sent.
        typed = store_error(exc)
        if typed is None:
            log.error("%s %s: database error", request.method, request.url.path, exc_info=exc)
            return INTERNAL_ERROR.response()
        log.error("%s %s: %s: %s", request.method, request.url.path, typed.code, exc)
        return from_typed(typed).response()

    app.add_exception_handler(DBAPIError, _database)
    app.add_exception_handler(PoolTimeout, _database)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_problem(exc).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return http_problem(exc).response()

    # Last resort (Starlette runs it in ServerErrorMiddleware): a problem without internals.
    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.error(
            "%s %s: unhandled %s",
            request.method,
            request.url.path,
            type(exc).__name__,
            exc_info=exc,
        )
        return INTERNAL_ERROR.response()


# -- OpenAPI -------------------------------------------------------------------------------------


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: these statuses answer a :class:`Problem`."""
    return {s: {"model": Problem, "description": HTTPStatus(s).phrase} for s in statuses}


# Every operation can meet these whatever its parameters: a failure of the service itself and
# a database or chain that is down.
ALWAYS = (500, 503)


def _problem_content() -> dict[str, Any]:
    return {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}


def _implied_statuses(operation: dict[str, Any]) -> set[int]:
    """4xx an operation can answer from its shape alone (the rest a route declares)."""
    statuses: set[int] = set()
    params = operation.get("parameters", [])
    if params or "requestBody" in operation:
        statuses.add(422)
    if "requestBody" in operation:
        statuses.add(400)  # malformed JSON
    if any(p.get("in") == "path" for p in params):
        statuses.add(404)
    if operation.get("security"):
        statuses.update((401, 403))
    return statuses


def install_openapi(app: FastAPI) -> None:
    """Every error response in the schema is ``application/problem+json`` with ``Problem``."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(
            Problem.model_json_schema(ref_template="#/components/schemas/{model}").pop("$defs", {})
        )
        components["Problem"] = Problem.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        components["Problem"].pop("$defs", None)
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                if not isinstance(operation, dict) or "responses" not in operation:
                    continue
                responses = operation["responses"]
                for status in _implied_statuses(operation) | set(ALWAYS):
                    responses.setdefault(str(status), {"description": HTTPStatus(status).phrase})
                for status, response in responses.items():
                    if status.isdigit() and int(status) >= 400:
                        if int(status) == 422:
                            response["description"] = "Validation error"
                        response["content"] = _problem_content()
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
