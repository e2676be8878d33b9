"""API errors: every client mistake is a 4xx with a machine-readable ``code``.

Body shape: ``{"error": {"code": str, "message": str, "expected"?: any, "got"?: any}}``.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ledger.errors import ChainUnavailable, LedgerError

# Ledger error codes -> HTTP status. Anything a client can cause is a 4xx.
LEDGER_STATUS = {
    "invalid_record": 422,
    "invalid_signature": 401,
    "kind_not_allowed": 403,
    "wrong_domain": 422,
    "merkle_error": 422,
    "chain_unavailable": 503,
    # The chain answers but the ledger contract is gone (reset chain): the operator must
    # restore the chain; a client should retry later, never treat the record as refused.
    "ledger_contract_missing": 503,
}


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, *, expected: Any = None, got: Any = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.expected, self.got = expected, got

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.expected is not None:
            err["expected"] = self.expected
        if self.got is not None:
            err["got"] = self.got
        return {"error": err}


def from_ledger(exc: LedgerError) -> ApiError:
    return ApiError(
        LEDGER_STATUS.get(exc.code, 400),
        exc.code,
        str(exc),
        expected=_jsonable(exc.expected),
        got=_jsonable(exc.got),
    )


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except TypeError:
        return repr(value)


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(ChainUnavailable)
    async def _chain(_: Request, exc: ChainUnavailable) -> JSONResponse:
        return JSONResponse(from_ledger(exc).body(), status_code=503)

    @app.exception_handler(LedgerError)
    async def _ledger(_: Request, exc: LedgerError) -> JSONResponse:
        err = from_ledger(exc)
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        code = "malformed_json" if first.get("type") == "json_invalid" else "invalid_request"
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse(
            {
                "error": {
                    "code": code,
                    "message": f"{where}: {first.get('msg')}",
                    "details": [
                        {"loc": list(e.get("loc", ())), "msg": e.get("msg")} for e in errors[:20]
                    ],
                }
            },
            status_code=400 if code == "malformed_json" else 422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(
            {"error": {"code": code, "message": str(exc.detail)}},
            status_code=exc.status_code,
            headers=exc.headers,
        )
