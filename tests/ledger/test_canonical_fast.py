"""canonical_json_fast against canonical_json: the same bytes, or the same refusal, for every
value, including those built to find where orjson and RFC 8785 part ways (number forms, the
whole BMP in strings, key order around the surrogate range, values JSON has no literal for)."""

from __future__ import annotations

import enum
import math
import random
import re
import struct
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from ledger.canonical import canonical_json, canonical_json_fast


def _outcome(fn: Any, value: Any) -> tuple[str, Any]:
    try:
        return "ok", fn(value)
    except Exception as exc:  # the refusal itself is what is compared
        return "error", (type(exc), str(exc))


def _same(value: Any) -> None:
    assert _outcome(canonical_json_fast, value) == _outcome(canonical_json, value), value


def _random_float(rng: random.Random) -> float:
    form = rng.randrange(6)
    if form == 0:  # any bit pattern: subnormals, huge exponents, nan and inf
        return float(struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0])
    if form == 1:  # the integral floats JCS prints as integers (and -0.0)
        return float(rng.choice([0, -0.0, 1, -7, 10, 2**52, 2**53, 2**53 + 2, 10**15, 10**16]))
    if form == 2:  # around the plain/exponent thresholds on both sides
        return rng.choice([1, -1]) * rng.uniform(1, 10) * 10.0 ** rng.randint(-9, 22)
    if form == 3:  # measurements: a few decimals
        return round(rng.uniform(-1e4, 1e4), rng.randint(0, 6))
    if form == 4:  # powers of ten and their neighbours
        base = 10.0 ** rng.randint(-8, 22)
        return rng.choice([base, math.nextafter(base, 0), math.nextafter(base, math.inf)])
    return rng.uniform(-1, 1)


def test_floats_and_integers_agree() -> None:
    rng = random.Random(21)
    values: list[Any] = [_random_float(rng) for _ in range(30_000)]
    values += [rng.choice([1, -1]) * rng.getrandbits(rng.randint(1, 70)) for _ in range(5_000)]
    values += [2**53, 2**53 + 1, -(2**53), -(2**53) - 1, 10**15, 10**16 - 1, 2**63, 2**64]
    for value in values:
        _same(value)  # a bare top-level number
        _same({"v": value})
        _same([value, 1])


def test_every_bmp_character_in_strings_and_keys() -> None:
    # Lone surrogates included: both paths refuse them (they are not UTF-8).
    for start in range(0, 0x10000, 0x400):
        chunk = "".join(chr(c) for c in range(start, start + 0x400))
        _same({"s": chunk})
        _same({chunk[:40]: 1, "k": chunk[-40:]})
    for text in ["\U0001f600", "a\U00010000", "\u2028\u2029", "\x7f\x85\x9f", "\\\"'/"]:
        _same({"s": text, text: text})


def test_key_order_around_the_surrogate_range() -> None:
    # JCS sorts by UTF-16 code units: U+10000 (0xD800 0xDC00) sorts before U+E000..U+FFFF.
    rng = random.Random(8785)
    pool = ["a", "B", "\x00", "\u00e9", "\ud7ff", "\ue000", "\uffff", "\U00010000", "\U0010ffff"]
    for _ in range(2_000):
        keys = {"".join(rng.choice(pool) for _ in range(rng.randint(1, 3))) for _ in range(5)}
        _same({key: i for i, key in enumerate(keys)})


class Colour(enum.Enum):
    RED = "red"


class Size(enum.IntEnum):
    ONE = 1


class Word(enum.StrEnum):
    HELLO = "hello"


class Text(str):
    pass


@pytest.mark.parametrize(
    "value",
    [
        {"v": float("nan")},
        {"v": float("inf")},
        [float("-inf")],
        {"v": uuid.UUID(int=7)},
        {"v": Colour.RED},
        {"v": Size.ONE},
        {"v": Word.HELLO},
        {"v": Text("x")},
        {Text("k"): 1},
        {"v": datetime(2026, 1, 1, tzinfo=UTC)},
        {"v": orjson.Fragment(b"[1]")},
        {"v": b"bytes"},
        {"v": {1, 2}},
        {1: "int key"},
        {None: "none key"},
        {"v": (1, 2.5, "t")},
        {"v": object()},
        {"v": True, "w": False, "x": None},
        {"deep": [[[[[[[[[[{"a": 1.5}]]]]]]]]]]},
    ],
    # repr without memory addresses: parallel workers must collect the same test ids
    ids=lambda value: re.sub(r" at 0x[0-9a-f]+", "", repr(value)),
)
def test_values_json_has_no_literal_for(value: Any) -> None:
    _same(value)


def test_the_payloads_intake_sees() -> None:
    from tests.helpers import inspection_payload

    rng = random.Random(3)
    for _ in range(500):
        payload = inspection_payload(rng.randint(0, 3))
        payload["sensorReport"][0]["values"] = [_random_float(rng) for _ in range(8)]
        payload["description"] = "".join(chr(rng.randint(0x20, 0x2FF)) for _ in range(10))
        _same(payload)
