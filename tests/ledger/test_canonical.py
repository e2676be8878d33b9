import pytest

from ledger.canonical import canonical_json, payload_hash
from ledger.errors import InvalidRecord
from tests.helpers import run_node

NUMBERS = [
    0,
    1,
    -1,
    0.5,
    4.5,
    2e-3,
    1e-6,
    1e-7,
    1.5e-9,
    123456789.125,
    333333333.33333329,
    1e20,
    1e21,
    1e30,
    -2.5e-8,
    10.01,
    9.95,
    1.33,
    2**53,
]


def test_numbers_match_ecmascript() -> None:
    expected = run_node("canonical.js", NUMBERS)
    assert [canonical_json(x).decode() for x in NUMBERS] == expected


def test_rfc8785_ordering_and_escapes() -> None:
    value = {"b": [1, True, None], "a": 'x\ny\u0001"', "\u20ac": 1, "A": {"z": 1, "y": 2.0}}
    assert canonical_json(value) == (
        b'{"A":{"y":2,"z":1},"a":"x\\ny\\u0001\\"","b":[1,true,null],"\xe2\x82\xac":1}'
    )


def test_key_order_does_not_change_the_hash() -> None:
    assert payload_hash({"a": 1, "b": 2}) == payload_hash({"b": 2, "a": 1})
    assert payload_hash({"a": 1}) != payload_hash({"a": 2})


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 2**60, {1: "x"}, object()])
def test_unrepresentable_values_are_refused(bad: object) -> None:
    with pytest.raises(InvalidRecord):
        canonical_json({"v": bad} if not isinstance(bad, dict) else bad)


def test_fast_path_equals_exact_path() -> None:
    import random

    from ledger.canonical import _encode

    rng = random.Random(7)
    for _ in range(300):
        value = {
            "s": "".join(
                chr(rng.choice([0x41, 0x0A, 0x22, 0x5C, 0xE9, 0x20AC, 0x1F600, 0x01]))
                for _ in range(6)
            ),
            "f": [rng.uniform(-1e3, 1e3) for _ in range(4)] + [2.0, -0.0, 0.1],
            "n": {"z": None, "a": [True, False, rng.randint(-(10**9), 10**9)]},
        }
        parts: list[str] = []
        _encode(value, parts)
        assert canonical_json(value) == "".join(parts).encode()
