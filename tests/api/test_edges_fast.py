"""The strict-JSON edge's fast check (api.edges._parse_fast) against its exact parse
(parse_strict_json): whatever the fast check passes, the exact parse accepts, and the value
handed to the routes is orjson's, as before. Bodies built to slip past a byte-level check:
duplicate keys beside colons in strings and escaped colons, brackets, quotes and backslashes
inside strings around the nesting bound, escaped and raw control characters, C1 and DEL,
lone surrogates, huge numbers, BOMs and invalid UTF-8."""

from __future__ import annotations

import json
import random
from typing import Any

import orjson
import pytest

from api.edges import (
    _UNSURE,
    MAX_JSON_DEPTH,
    _parse_fast,
    _valid_json_depth,
    json_depth,
    parse_strict_json,
)
from api.errors import ApiError

D = MAX_JSON_DEPTH

BODIES: list[bytes] = [
    b'{"a": 1, "a": 1}',
    b'{"x": {"b": 1, "c": 2, "b": 3}}',
    b'[{"k": 1}, {"k": 1, "k": 2}]',
    b'{"a:b": 1, "a:b": 2}',
    b'{"a": "x:y", "a": "x:y"}',
    b'{"a": "\\u003a", "a": 1}',  # an escaped colon in place of the lost member's
    b'{"a\\u003a": 1, "a:": 1}',
    b'{"a": 1, "b": {"a": 1}}',
    b'{"s": "[[[[{{{{", "t": "]]]]}}}}"}',
    b'{"s": "\\"[[[", "t": "\\\\", "u": [1]}',
    b'{"s": "\\\\\\"]]]"}',
    b"[" * D + b"]" * D,
    b"[" * (D + 1) + b"]" * (D + 1),
    b"[" * (D - 1) + b'"]]]]"' + b"]" * (D - 1),
    b"[" * (D - 1) + b'"[[[[\\"[["' + b"]" * (D - 1),
    b'{"a": "' + b"[" * 100 + b'"}',
    b"[" * 2000 + b"]" * 2000,
    b'{"a": NaN}',
    b'{"a": Infinity}',
    b'{"a": 1e400}',
    b'{"a": -1e400}',
    b'{"a": 1e-400}',
    b'{"a": ' + b"9" * 30 + b"}",
    b'{"a": ' + b"9" * 400 + b"}",
    b'{"a": ' + b"9" * 5000 + b"}",
    b'\xef\xbb\xbf{"a": 1}',
    b'{"a": "\xff"}',
    b'{"a": "\xed\xa0\x80"}',
    b'{"a": "x\\ud800"}',
    b'{"a": "\\udc00"}',
    b'{"a": "\\ud83d\\ude00"}',
    b'{"\\ud800": 1}',
    b'{"a": "nul\\u0000"}',
    b'{"a": "bell\\b"}',
    b'{"a": "form\\f"}',
    b'{"a": "not bell \\\\b"}',
    b'{"a": "del\x7f"}',
    b'{"a": "c1\xc2\x85"}',
    b'{"a": "nbsp\xc2\xa0"}',
    b'{"a": "raw \x01"}',
    b'{"a": "tab\\t nl\\n cr\\r slash\\/"}',
    b'{"a": 1',
    b'{"a": 1}}',
    b'{"a": 1,}',
    b"",
    b"1",
    b'"text"',
    b"[]",
    b"{}",
    b' \n\t\r{"a" : [ 1 , 2 ] }\n',
    '{"e": "Grüße, 東京, \U0001f600"}'.encode(),
]


def _exact(body: bytes) -> tuple[str, Any]:
    try:
        return "ok", parse_strict_json(body)
    except ApiError as exc:
        return "refused", exc.code


def _check(body: bytes) -> bool:
    fast = _parse_fast(body)
    if fast is _UNSURE:
        return False
    verdict, _ = _exact(body)
    assert verdict == "ok", body[:200]
    assert fast == orjson.loads(body)
    return True


@pytest.mark.parametrize("body", BODIES, ids=lambda b: repr(b[:40]))
def test_the_fast_check_passes_only_what_the_exact_parse_accepts(body: bytes) -> None:
    _check(body)
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        return
    if b"\\u" not in body:
        assert _valid_json_depth(body) == json_depth(body)


def _random_text(rng: random.Random) -> str:
    alphabet = 'ab:,[]{}"\\/ \t\n\x01\x7f\x85\xa0é€\U0001f600'
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))


def _random_value(rng: random.Random, depth: int) -> Any:
    pick = rng.randrange(8 if depth < 70 else 4)
    if pick == 0:
        return rng.choice([None, True, False])
    if pick == 1:
        return rng.choice([0, -1, 2**53, 2**64, 10**25, 1.5, -0.0, 1e-7, 1e300])
    if pick in (2, 3):
        return _random_text(rng)
    if pick in (4, 5):
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {_random_text(rng): _random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def _with_duplicate(text: str, rng: random.Random) -> str:
    """The same JSON text with one member of one object written twice (when it has one)."""
    starts = [i for i, c in enumerate(text) if c == "{" and text[i + 1 : i + 2] == '"']
    if not starts:
        return text
    i = rng.choice(starts)
    try:
        _key, end = json.JSONDecoder().raw_decode(text, i + 1)
        start = text.index(":", end) + 1
        start += len(text[start:]) - len(text[start:].lstrip())
        _value, after = json.JSONDecoder().raw_decode(text, start)
    except ValueError:
        return text  # the brace was inside a string
    member = text[i + 1 : after]
    return text[: i + 1] + member + "," + text[i + 1 :]


def test_random_bodies_and_their_duplicated_twins() -> None:
    rng = random.Random(21)
    taken = duplicates_caught = 0
    for _ in range(4000):
        value = {"records": [_random_value(rng, 1) for _ in range(rng.randint(1, 4))]}
        for ensure_ascii in (False, True):
            try:
                text = json.dumps(value, ensure_ascii=ensure_ascii)
            except ValueError:
                continue
            body = text.encode("utf-8", "surrogatepass")
            taken += _check(body)
            twin = _with_duplicate(text, rng).encode("utf-8", "surrogatepass")
            if twin != body:
                fast = _parse_fast(twin)
                if _exact(twin) == ("refused", "duplicate_key"):
                    assert fast is _UNSURE, twin[:200]
                    duplicates_caught += 1
                else:
                    _check(twin)
    assert taken > 1000 and duplicates_caught > 500


def test_an_intake_batch_takes_the_fast_check() -> None:
    record = {
        "domain": {
            "name": "QualityLedger",
            "version": "1",
            "chainId": 1,
            "verifyingContract": "0x" + "ab" * 20,
        },
        "record": {"signer": "0x" + "cd" * 20, "subject": "SUP-01", "lotId": "L:1/2#3"},
        "payload": {"values": [10.0, 9.95], "description": "line\nbreak, Grüße"},
        "signature": "0x" + "ef" * 65,
    }
    body = orjson.dumps({"records": [record] * 1000})
    assert _check(body)
