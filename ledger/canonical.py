"""Canonical JSON of detail payloads (RFC 8785, JSON Canonicalization Scheme).

``payloadHash`` = keccak256 of these bytes. JCS is what a JavaScript or Go client can reproduce
byte for byte: keys sorted by UTF-16 code units, no whitespace, numbers in ECMAScript's
shortest round-trip form, strings with only the mandatory escapes.
"""

from __future__ import annotations

import json
import math
from typing import Any

from ledger._hash import keccak
from ledger.errors import InvalidRecord


def _number(value: int | float) -> str:
    if isinstance(value, bool):  # bool is an int subclass; JSON has its own literals
        return "true" if value else "false"
    if isinstance(value, int):
        # Integers beyond 2**53 would be rounded by every JavaScript client: refuse them.
        if abs(value) > 2**53:
            raise InvalidRecord("integer outside the exactly representable JSON range", got=value)
        return str(value)
    if not math.isfinite(value):
        raise InvalidRecord("non-finite number in payload", expected="finite", got=value)
    if value == 0:
        return "0"
    if value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    # repr() is the shortest round-trip form; only the exponent spelling differs from ECMAScript.
    text = repr(value)
    if "e" not in text:
        return text
    mantissa, exponent = text.split("e")
    exp = int(exponent)
    if -7 < exp < 21:
        # ECMAScript prints these without an exponent.
        return format(value, "f").rstrip("0").rstrip(".") if exp < 0 else str(int(value))
    return f"{mantissa}e{'+' if exp > 0 else '-'}{abs(exp)}"


# Python's C string encoder (ensure_ascii=False) escapes exactly what RFC 8785 requires: the
# short forms for " \\ \b \f \n \r \t and lowercase \u00xx for other control characters.
_string = json.JSONEncoder(ensure_ascii=False).encode


def _encode(value: Any, parts: list[str]) -> None:
    if value is None:
        parts.append("null")
    elif value is True:
        parts.append("true")
    elif value is False:
        parts.append("false")
    elif isinstance(value, int | float):
        parts.append(_number(value))
    elif isinstance(value, str):
        parts.append(_string(value))
    elif isinstance(value, list | tuple):
        parts.append("[")
        for i, item in enumerate(value):
            if i:
                parts.append(",")
            _encode(item, parts)
        parts.append("]")
    elif isinstance(value, dict):
        parts.append("{")
        for key in value:
            if not isinstance(key, str):
                raise InvalidRecord("payload object keys must be strings", got=type(key).__name__)
        # JCS sorts by UTF-16 code units, which differs from code points above the BMP.
        keys = sorted(value, key=lambda k: k.encode("utf-16-be"))
        for i, key in enumerate(keys):
            if i:
                parts.append(",")
            parts.append(_string(key))
            parts.append(":")
            _encode(value[key], parts)
        parts.append("}")
    else:
        raise InvalidRecord("value cannot be represented in JSON", got=type(value).__name__)


_FAST = json.JSONEncoder(
    ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False, check_circular=False
)


_AS_IS, _INTEGRAL, _EXACT = 0, 1, 2


def _scan(value: Any) -> int:
    """How Python's C encoder can print ``value`` as JCS: as it is, after turning integral
    floats into ints, or not at all (exponent floats, non-BMP keys, out-of-range numbers).

    The C encoder differs from JCS only there; scanning first avoids copying the common case.
    """
    kind = type(value)
    if kind is str or value is None or kind is bool:
        return _AS_IS
    if kind is int:
        return _AS_IS if -(2**53) <= value <= 2**53 else _EXACT
    if kind is float:
        if value.is_integer():  # False for inf and nan
            return _INTEGRAL if abs(value) < 1e21 else _EXACT
        # repr() of a finite non-integral float uses an exponent only below 1e-4 (integral
        # floats from 2**53 up were handled above): the common case needs no repr(). inf and
        # nan fail this comparison.
        if 1e-4 <= abs(value) < 1e16:
            return _AS_IS
        if not math.isfinite(value):
            return _EXACT
        return _EXACT if "e" in repr(value) else _AS_IS
    if kind is list or kind is tuple:
        return max(map(_scan, value), default=_AS_IS)
    if kind is dict:
        worst = _AS_IS
        for key, item in value.items():
            if type(key) is not str or (not key.isascii() and any(ord(c) > 0xFFFF for c in key)):
                return _EXACT
            worst = max(worst, _scan(item))
            if worst == _EXACT:
                return _EXACT
        return worst
    return _EXACT


def _integral_to_int(value: Any) -> Any:
    if type(value) is float:
        return int(value) if value.is_integer() else value
    if isinstance(value, list | tuple):
        return [_integral_to_int(v) for v in value]
    if isinstance(value, dict):
        return {k: _integral_to_int(v) for k, v in value.items()}
    return value


def canonical_json(value: Any) -> bytes:
    """Return the RFC 8785 canonical UTF-8 bytes of ``value``."""
    how = _scan(value)
    if how == _AS_IS:
        return _FAST.encode(value).encode("utf-8")
    if how == _INTEGRAL:
        return _FAST.encode(_integral_to_int(value)).encode("utf-8")
    parts: list[str] = []
    _encode(value, parts)
    return "".join(parts).encode("utf-8")


# -- a faster path to the same bytes (intake, issue #21) ---------------------------------------
#
# orjson (a server dependency; the light install has no orjson and always takes the exact path)
# writes sorted, whitespace-free JSON ~20x faster than the path above. Its output differs from
# RFC 8785 only where the checks below look, and there the exact path is taken:
#   - floats that are integral ("10.0", "-0.0") or printed with an exponent ("1e+16", "1e-7");
#   - integers beyond 2**53 (JCS refuses them; any run of 16 digits is sent to the exact path);
#   - keys outside the BMP (orjson sorts by code point, JCS by UTF-16 code unit): any 4-byte
#     UTF-8 sequence is sent to the exact path;
#   - values JSON has no literal for: orjson writes NaN and infinities as null and serialises
#     UUIDs, enums and its own Fragment natively, where the exact path raises. Parsing the
#     output back must give a value equal to the input, which none of those does.
# Strings are escaped alike (the mandatory escapes, lowercase \u00xx, nothing else), and both
# print the other floats as the shortest round-trip digits in plain notation: tested over the
# whole BMP and a large sample of floats (tests/ledger/test_canonical_fast.py).
try:
    import orjson as _orjson

    _ORJSON_OPTIONS: int | None = (
        _orjson.OPT_SORT_KEYS
        | _orjson.OPT_PASSTHROUGH_DATACLASS
        | _orjson.OPT_PASSTHROUGH_DATETIME
        | _orjson.OPT_PASSTHROUGH_SUBCLASS
    )
except ImportError:  # pragma: no cover - the light install (no server extra)
    _ORJSON_OPTIONS = None

# One translation makes the suspicious number shapes plain substrings: digits become "0",
# "+"/"-" become "+", the bytes that end a JSON value become ",", and every other byte but "."
# and "e" becomes a space (strings may contain the same shapes: then the exact path runs, which
# costs time, never correctness).
_SHAPES = bytes(
    ord("0")
    if chr(i).isdigit() and i < 128
    else ord("+")
    if i in b"+-"
    else ord(",")
    if i in b",]}"
    else i
    if i in b".e"
    else ord(" ")
    for i in range(256)
)
_EXPONENT, _INTEGRAL_FLOAT, _LONG_NUMBER = b"0e+", b"0.0,", b"0" * 16
# Every byte value but the lead bytes of 4-byte UTF-8 sequences (code points above U+FFFF).
_BELOW_ASTRAL = bytes(range(0xF0))


def canonical_json_fast(value: Any) -> bytes:
    """The same bytes as :func:`canonical_json` (and the same errors), faster for the common
    payload: through orjson where its output is provably JCS, else through the exact path."""
    if _ORJSON_OPTIONS is not None:
        try:
            out = _orjson.dumps(value, option=_ORJSON_OPTIONS)
        except TypeError:  # orjson.JSONEncodeError: a type or key the exact path must judge
            return canonical_json(value)
        if out.isascii() or not out.translate(None, _BELOW_ASTRAL):
            shapes = out.translate(_SHAPES)
            if (
                _EXPONENT not in shapes
                and _INTEGRAL_FLOAT not in shapes
                and _LONG_NUMBER not in shapes
                and not shapes.endswith(b"0.0")  # a bare top-level float such as -0.0
                and _orjson.loads(out) == value
            ):
                return out
    return canonical_json(value)


def payload_hash(payload: Any) -> bytes:
    """keccak256 of the canonical JSON of a detail payload (the record's ``payloadHash``)."""
    return keccak(canonical_json(payload))
