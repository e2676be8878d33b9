"""Strict edges for every JSON body the API reads, before any route sees it.

One ASGI middleware, so no route can forget a check:

- a body on a ``/v1`` route must be ``application/json`` (415 ``unsupported_media_type``);
- bodies are bounded per route: records by the intake settings, everything else by
  ``DEFAULT_BODY_BYTES`` (413 ``request_too_large``), read no further than the bound;
- strict JSON: a duplicate object key is refused (400 ``duplicate_key``; another parser would
  keep the other value and read another record), as are ``NaN``/``Infinity`` and numbers that
  overflow a double (400 ``malformed_json``);
- text: a lone surrogate or a control character (anything below U+0020 but tab, line feed and
  carriage return; U+007F-U+009F) in any key or string is refused (422 ``invalid_text``): it
  cannot be stored or shown the same way by every reader.

The checked bytes are passed on unchanged: what is signed is what is stored.
"""

from __future__ import annotations

import json
import math
import re
from itertools import accumulate
from typing import Any

import orjson
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import ApiError

# Every JSON route but intake takes small bodies (a registration, an incident, a decision):
# 1 MiB leaves room for an incident's process readings. Intake has its own settings.
DEFAULT_BODY_BYTES = 1024 * 1024
# POST /v1/models/predict takes up to 10,000 rows of readings (~200 bytes a row).
PREDICT_BODY_BYTES = 4 * 1024 * 1024
# Envelope overhead on top of the payload limit: domain, struct fields, signature (~1 KiB).
ENVELOPE_OVERHEAD_BYTES = 4096
# JSON nesting deeper than this is no record of ours; refusing it keeps the parser's recursion
# far from Python's limit.
MAX_JSON_DEPTH = 64

BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Nesting is measured before parsing: deep enough nesting overflows the C stack of Python's
# JSON scanner (a segfault, not a RecursionError, where the recursion limit has been raised).
_STRING_LITERAL = re.compile(rb'"(?:[^"\\]++|\\.)*+"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_OPENING = frozenset(b"[{")
_BAD_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


class _Duplicate(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Duplicate(key)
        out[key] = value
    return out


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} overflows a double")
    return value


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _check_text(value: Any, path: str, depth: int = 0) -> None:
    if depth > MAX_JSON_DEPTH:
        raise ApiError(
            400, "malformed_json", "JSON nested too deeply", expected=f"<= {MAX_JSON_DEPTH}"
        )
    if isinstance(value, str):
        bad = _BAD_TEXT.search(value)
        if bad:
            raise ApiError(
                422,
                "invalid_text",
                f"{path or 'body'}: control characters and lone surrogates are not text",
                expected="printable Unicode (tab, LF, CR allowed)",
                got=f"U+{ord(bad.group()):04X} at {bad.start()}",
            )
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key, path + ".<key>", depth + 1)
            _check_text(item, f"{path}.{key}" if path else key, depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_text(item, f"{path}[{i}]", depth + 1)


def json_depth(body: bytes) -> int:
    """Deepest bracket nesting of a JSON text, strings left out (an upper bound is enough)."""
    skeleton = _STRING_LITERAL.sub(b"", body).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for byte in skeleton:
        depth += 1 if byte in _OPENING else -1
        deepest = max(deepest, depth)
    return deepest


# For the fast check's nesting count: every byte but quotes and brackets is dropped, and each
# bracket counts +1 (opening) or -1 (closing).
_NOT_QUOTES_OR_BRACKETS = bytes(b for b in range(256) if b not in b'"[]{}')
_BRACKET_STEP = [1 if b in b"[{" else -1 if b in b"]}" else 0 for b in range(256)]


def _valid_json_depth(body: bytes) -> int:
    """:func:`json_depth` of a body that is valid JSON, without the string regex. With the
    escaped backslashes and then the escaped quotes taken out (escapes are pairs, read left
    to right), every quote left delimits a string, opening and closing in turn; the text
    between the 2k-th and the (2k+1)-th quote is inside one, and its brackets do not count.
    Usually no string holds a bracket: then, with only quotes and brackets kept, taking out
    every adjacent pair of quotes leaves no quote (the first quote can only pair with the
    second, the third then only with the fourth, and so on: each pair is one string, empty of
    brackets), and what is left is the structure."""
    if b"\\" in body:
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    skeleton = body.translate(None, _NOT_QUOTES_OR_BRACKETS)
    structure = skeleton.replace(b'""', b"")
    if b'"' in structure:  # some string holds a bracket: drop every string's content
        structure = b"".join(skeleton.split(b'"')[::2])
    return max(accumulate(map(_BRACKET_STEP.__getitem__, structure)), default=0)


_UNSURE = object()
# The request-state key under which the middleware leaves orjson's value of a body it proved
# strict by the fast check.
PARSED_JSON = "qledger.parsed_json"
# Shapes of the text that the fast check leaves to the exact one: any \u escape (a control
# character, a lone surrogate, or a colon written as \u003a, which the duplicate count below
# could not see), \b and \f (escaped control characters; also a false alarm on an escaped
# backslash before b or f), and, written raw, DEL and any code point from U+0080 to U+00BF
# (UTF-8 lead byte 0xC2: the C1 controls U+0080-U+009F are among them).
_ESCAPES_EXACT_ONLY = (b"\\u", b"\\b", b"\\f")


def _parse_fast(body: bytes) -> Any:
    """orjson's value of the body where :func:`parse_strict_json` would accept it, proven
    without running it; else _UNSURE (then run it: it refuses the body or accepts it).

    orjson refuses everything the exact parser refuses (invalid UTF-8 and a BOM, NaN and
    Infinity, numbers that overflow a double, control characters written raw in strings,
    trailing data) and sometimes more (integers beyond a double: then the exact path judges).
    What orjson accepts and the exact check refuses is checked here: duplicate keys (orjson
    keeps the last: its own output then has fewer members, counted by their colons, than the
    body, whose strings carry no escaped colon), control characters and lone surrogates (only
    writable as escapes or raw DEL/C1 bytes, see _ESCAPES_EXACT_ONLY), and nesting deeper than
    MAX_JSON_DEPTH. The value is orjson's, what the routes read
    (it differs from the standard library's for integers beyond 64 bits, which orjson reads as
    floats). On a 1,000-record batch ~7x faster than the exact path (4.6 against 34.1 us a
    record; scripts/bench_intake_components.py, docs/benchmarks.md)."""
    if b"\x7f" in body or b"\xc2" in body:
        return _UNSURE
    if b"\\" in body and any(shape in body for shape in _ESCAPES_EXACT_ONLY):
        return _UNSURE
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _UNSURE
    if orjson.dumps(data).count(b":") != body.count(b":"):
        return _UNSURE
    if _valid_json_depth(body) > MAX_JSON_DEPTH:
        return _UNSURE
    return data


def parse_strict_json(body: bytes) -> Any:
    """Parse a request body as strict JSON (see the module docstring); raises ApiError."""
    if json_depth(body) > MAX_JSON_DEPTH:
        raise ApiError(
            400, "malformed_json", "JSON nested too deeply", expected=f"<= {MAX_JSON_DEPTH}"
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "malformed_json", "request body is not UTF-8") from exc
    try:
        data = json.loads(
            text, object_pairs_hook=_pairs, parse_float=_finite, parse_constant=_constant
        )
    except _Duplicate as exc:
        raise ApiError(
            400,
            "duplicate_key",
            "a JSON object repeats a key (parsers disagree on which value counts)",
            got=exc.key[:100],
        ) from exc
    except RecursionError as exc:
        raise ApiError(400, "malformed_json", "JSON nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError, oversize integers, non-finite numbers
        raise ApiError(400, "malformed_json", f"request body is not valid JSON: {exc}") from exc
    _check_text(data, "")
    return data


def read_parsed_json(scope: Scope) -> tuple[bool, Any]:
    """(True, value) where the middleware left orjson's value of this request's body (the
    value ``orjson.loads`` of the body gives); (False, None) where the route must parse."""
    state = scope.get("state")
    if isinstance(state, dict) and PARSED_JSON in state:
        return True, state[PARSED_JSON]
    return False, None


def _too_large(limit: int, got: int | str) -> ApiError:
    return ApiError(
        413, "request_too_large", "request body is too large", expected=f"<= {limit} bytes", got=got
    )


async def read_bounded(request: Request, limit: int) -> bytes:
    """A route's raw body (a model file), read no further than ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit, int(declared))
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _too_large(limit, f"> {limit}")
    return bytes(body)


def body_limit(scope: Scope) -> int | None:
    """The byte bound of this route's body; None where the route reads no JSON."""
    path: str = scope["path"]
    if path == "/ui/session":
        return DEFAULT_BODY_BYTES  # the dashboard's one JSON body (its access token)
    if not path.startswith("/v1/"):
        return None  # the dashboard's forms and the health check
    if scope["method"] == "PUT" and path.startswith("/v1/models/") and path.endswith("/file"):
        return None  # a binary model file, bounded by its route
    settings = scope["app"].state.ctx.settings
    if path == "/v1/records":
        return int(settings.max_record_bytes) + ENVELOPE_OVERHEAD_BYTES
    if path == "/v1/records:batch":
        return int(settings.max_batch_bytes)
    if path == "/v1/models/predict":
        return PREDICT_BODY_BYTES
    return DEFAULT_BODY_BYTES


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json"


async def _answer(scope: Scope, receive: Receive, send: Send, error: ApiError) -> None:
    """Answer the problem before the app ever sees the request (RFC 9457, as every error)."""
    await error.response()(scope, receive, send)


class StrictJsonMiddleware:
    """Checks every JSON request body once, then hands the same bytes to the route."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        limit = body_limit(scope)
        if limit is None:
            await self.app(scope, receive, send)
            return
        try:
            body = await self._read(scope, receive, limit)
            if body:
                headers = dict(scope["headers"])
                content_type = headers.get(b"content-type", b"").decode("latin-1")
                if not _is_json(content_type):
                    raise ApiError(
                        415,
                        "unsupported_media_type",
                        "JSON routes take application/json bodies only",
                        expected="application/json",
                        got=content_type[:100] or None,
                    )
                parsed = _parse_fast(body)
                if parsed is _UNSURE:
                    parse_strict_json(body)
                else:
                    # Routes that parse their body with orjson themselves (intake) take this
                    # value instead of parsing the same bytes again (read_parsed_json).
                    scope.setdefault("state", {})[PARSED_JSON] = parsed
        except ApiError as exc:
            await _answer(scope, receive, send, exc)
            return

        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect

        await self.app(scope, replay, send)

    @staticmethod
    async def _read(scope: Scope, receive: Receive, limit: int) -> bytes:
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _too_large(limit, int(declared))
        body = bytearray()  # appending to bytes would copy the whole body on every chunk
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            body += message.get("body", b"")
            if len(body) > limit:
                raise _too_large(limit, f"> {limit}")
            if not message.get("more_body", False):
                break
        return bytes(body)
