"""The strict-JSON edge (api/edges.py) on its own: what it refuses, with which code, and that
ordinary text passes unchanged."""

from __future__ import annotations

import pytest

from api.edges import MAX_JSON_DEPTH, parse_strict_json
from api.errors import ApiError
from ledger.records import ID_PATTERN, is_identifier


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"a": 1, "a": 1}', "duplicate_key"),
        (b'{"x": {"b": 1, "c": 2, "b": 3}}', "duplicate_key"),
        (b'[{"k": 1}, {"k": 1, "k": 2}]', "duplicate_key"),
        (b'{"a": NaN}', "malformed_json"),
        (b'{"a": Infinity}', "malformed_json"),
        (b'{"a": -Infinity}', "malformed_json"),
        (b'{"a": 1e400}', "malformed_json"),
        (b'{"a": ' + b"9" * 5000 + b"}", "malformed_json"),
        (b"[" * (MAX_JSON_DEPTH + 2) + b"]" * (MAX_JSON_DEPTH + 2), "malformed_json"),
        (b"[" * 100_000 + b"]" * 100_000, "malformed_json"),
        (b'\xef\xbb\xbf{"a": 1}', "malformed_json"),  # a BOM is not JSON
        (b'{"a": "\xff"}', "malformed_json"),  # not UTF-8
        (b'{"a": "x\\ud800"}', "invalid_text"),
        (b'{"a": "\\udc00"}', "invalid_text"),
        (b'{"\\ud800": 1}', "invalid_text"),
        (b'{"a": "nul\\u0000"}', "invalid_text"),
        (b'{"a": ["bell\\u0007"]}', "invalid_text"),
        (b'{"a": "c1\\u0085"}', "invalid_text"),
        (b'{"a": "del\\u007f"}', "invalid_text"),
        (b'{"a": "raw \x01"}', "malformed_json"),  # a raw control character is not JSON
        (b'{"a": 1', "malformed_json"),
    ],
)
def test_refused(body: bytes, code: str) -> None:
    with pytest.raises(ApiError) as refused:
        parse_strict_json(body)
    assert refused.value.code == code and 400 <= refused.value.status < 500


def test_ordinary_text_passes_unchanged() -> None:
    text = (
        '{"d": "line one\\nline two\\ttab \\r\\n", "e": "Grüße, 東京, \\ud83d\\ude00", "n": -0.5}'
    )
    assert parse_strict_json(text.encode()) == {
        "d": "line one\nline two\ttab \r\n",
        "e": "Grüße, 東京, \U0001f600",  # a surrogate *pair* is one character
        "n": -0.5,
    }


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("SUP-01", True),
        ("LOT-2024:07#3/a.b", True),
        ("x" * 64, True),
        ("x" * 65, False),
        ("../etc", False),
        ("a/../b", False),
        ("a..b", False),
        (".hidden", False),
        ("a\x00b", False),
        ("a\nb", False),
        ("é", False),
        ("", False),
        (5, False),
    ],
)
def test_one_id_pattern(value: object, ok: bool) -> None:
    assert is_identifier(value) is ok
    assert ID_PATTERN.startswith("^") and ID_PATTERN.endswith("$")
