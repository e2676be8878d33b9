"""Mapping files: how the columns of a CSV or xlsx sheet become the fields of a record draft.

A mapping is TOML (docs/integrating-mes.md, docs/examples/*.toml). ``[record]`` and
``[payload]`` are templates of the draft: a plain value is a constant, and a table
``{ column = "Lot" }`` (or ``{ columns = ["Bore 1", "Bore 2"] }`` for a list of measured
values) takes the value from the row, converted by ``type``. Every problem with a row is
reported with the draft field, the column, what was expected and what the cell held.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from ledger.records import RecordKind

# A column reference's keys; any other key makes the table an ordinary (constant) object.
REF_KEYS = frozenset({"column", "columns", "type", "optional", "default", "map"})
TYPES = ("str", "int", "float", "time", "bool")
TRUE = frozenset({"true", "yes", "y", "1", "x", "ja", "oui"})
FALSE = frozenset({"false", "no", "n", "0", "nein", "non"})
TOP_KEYS = frozenset({"kind", "sheet", "timezone", "delimiter", "decimal", "record", "payload"})
RECORD_KEYS = frozenset(
    {"subject", "partNumber", "lotId", "eventTime", "quantity", "defects"}
)  # nonce and salt are the importer's (derived from the row, see client.importer)
# ASCII only: int() and float() also read other scripts' digits ("５０") and "1_000", which a
# reviewer of the sheet would not read as the same number.
INT_RE = re.compile(r"[+-]?[0-9]+")
FLOAT_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
OFFSET_RE = re.compile(r"([+-])(\d{2}):(\d{2})")


class MappingError(Exception):
    """The mapping file itself is wrong (not one row): nothing is imported."""


@dataclass(frozen=True)
class Problem:
    """One reason a row cannot become a record: ``field`` of the draft, its ``column``."""

    field: str
    message: str
    column: str | None = None
    expected: object = None
    got: object = None

    def line(self, row: int) -> str:
        where = self.field + (f' (column "{self.column}")' if self.column else "")
        text = f"row {row}: {where}: {self.message}"
        if self.expected is not None or self.got is not None:
            text += f"; expected {self.expected}, got {self.got!r}"
        return text


class RowError(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(p.message for p in problems))


@dataclass(frozen=True)
class Mapping:
    kind: RecordKind
    record: dict[str, Any]
    payload: dict[str, Any]
    sheet: str | None = None
    tz: timezone = UTC
    delimiter: str = ","
    decimal: str = "."
    columns: frozenset[str] = field(default_factory=frozenset)


def load_mapping(path: Path, kind: str | None = None) -> Mapping:
    """Read and check a mapping file (raises MappingError with the reason)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MappingError(f"cannot read mapping {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise MappingError(f"mapping {path} is not valid TOML: {exc}") from None
    unknown = set(data) - TOP_KEYS
    if unknown:
        raise MappingError(f"mapping: unknown keys {sorted(unknown)}; known: {sorted(TOP_KEYS)}")
    named = data.get("kind")
    if kind is not None and named is not None and kind != named:
        raise MappingError(f"--kind {kind} but the mapping is for {named}")
    chosen = kind or named
    if chosen is None:
        raise MappingError("no record kind: give --kind or kind = ... in the mapping")
    try:
        record_kind = RecordKind(chosen)
    except ValueError:
        kinds = [k.value for k in RecordKind]
        raise MappingError(f"unknown kind {chosen!r}; one of {kinds}") from None
    record, payload = data.get("record", {}), data.get("payload", {})
    if not isinstance(record, dict) or not isinstance(payload, dict):
        raise MappingError("mapping: [record] and [payload] must be tables")
    extra = set(record) - RECORD_KEYS
    if extra:
        raise MappingError(
            f"[record]: unknown fields {sorted(extra)}; known: {sorted(RECORD_KEYS)}"
        )
    columns: set[str] = set()
    _check_template(record, "record", columns)
    _check_template(payload, "payload", columns)
    delimiter, decimal = data.get("delimiter", ","), data.get("decimal", ".")
    if delimiter not in (",", ";", "\t", "|") or decimal not in (".", ","):
        raise MappingError('delimiter is one of , ; \\t | and decimal is "." or ","')
    sheet = data.get("sheet")
    if sheet is not None and not isinstance(sheet, str):
        raise MappingError("sheet must be a sheet name")
    return Mapping(
        kind=record_kind,
        record=record,
        payload=payload,
        sheet=sheet,
        tz=_timezone(data.get("timezone", "UTC")),
        delimiter=delimiter,
        decimal=decimal,
        columns=frozenset(columns),
    )


def _timezone(value: object) -> timezone:
    if value in ("UTC", "Z"):
        return UTC
    match = OFFSET_RE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise MappingError(f'timezone is "UTC" or an offset such as "+01:00", got {value!r}')
    sign = -1 if match.group(1) == "-" else 1
    return timezone(sign * timedelta(hours=int(match.group(2)), minutes=int(match.group(3))))


def is_ref(value: object) -> bool:
    return (
        isinstance(value, dict) and bool(value) and set(value) <= REF_KEYS
        and ("column" in value or "columns" in value)
    )  # fmt: skip


def _check_template(value: Any, where: str, columns: set[str]) -> None:
    if is_ref(value):
        ref_type = value.get("type", "str")
        if ref_type not in TYPES:
            raise MappingError(f"{where}: type {ref_type!r} is not one of {TYPES}")
        if "column" in value and "columns" in value:
            raise MappingError(f"{where}: give column or columns, not both")
        names = value["columns"] if "columns" in value else [value["column"]]
        if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
            raise MappingError(f"{where}: column names must be strings")
        if "map" in value and not isinstance(value["map"], dict):
            raise MappingError(f"{where}: map must be a table of cell value = field value")
        columns.update(names)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_template(item, f"{where}.{key}", columns)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_template(item, f"{where}[{i}]", columns)


_MISSING = object()


def fill(template: Any, cells: dict[str, Any], mapping: Mapping, where: str) -> Any:
    """The template with every column reference replaced by its converted cell (raises
    RowError with every problem of the row at once)."""
    problems: list[Problem] = []
    value = _fill(template, cells, mapping, where, problems)
    if problems:
        raise RowError(problems)
    return value


def _fill(template: Any, cells: dict[str, Any], m: Mapping, where: str, out: list[Problem]) -> Any:
    if is_ref(template):
        return _resolve(template, cells, m, where, out)
    if isinstance(template, dict):
        filled = {}
        for key, item in template.items():
            value = _fill(item, cells, m, f"{where}.{key}", out)
            if value is not _MISSING:
                filled[key] = value
        return filled
    if isinstance(template, list):
        items = [_fill(item, cells, m, f"{where}[{i}]", out) for i, item in enumerate(template)]
        return [item for item in items if item is not _MISSING]
    return template


def _blank(cell: Any) -> bool:
    return cell is None or (isinstance(cell, str) and not cell.strip())


def _resolve(ref: dict[str, Any], cells: dict[str, Any], m: Mapping, where: str,
             out: list[Problem]) -> Any:  # fmt: skip
    kind = ref.get("type", "str")
    optional = bool(ref.get("optional", False))
    if "columns" in ref:
        values = []
        for name in ref["columns"]:
            cell = cells.get(name)
            if _blank(cell):
                continue  # a list of measurements may be shorter than its columns
            try:
                values.append(convert(cell, kind, m, ref.get("map")))
            except ValueError as exc:
                out.append(Problem(where, str(exc), name, expected=_expected(kind), got=cell))
        if not values and not optional:
            out.append(Problem(where, "every column is empty", ", ".join(ref["columns"])))
        return values if values or not optional else _MISSING
    name = ref["column"]
    cell = cells.get(name)
    if _blank(cell):
        if "default" in ref:
            return ref["default"]
        if optional:
            return _MISSING
        out.append(Problem(where, "empty cell", name, expected=_expected(kind), got=cell))
        return None
    try:
        return convert(cell, kind, m, ref.get("map"))
    except ValueError as exc:
        expected = " or ".join(sorted(ref["map"])) if "map" in ref else _expected(kind)
        out.append(Problem(where, str(exc), name, expected=expected, got=cell))
        return None


def _expected(kind: str) -> str:
    return {
        "str": "text",
        "int": "a whole number",
        "float": "a number",
        "time": "an ISO 8601 date-time or Unix seconds",
        "bool": "yes/no",
    }[kind]


def convert(cell: Any, kind: str, m: Mapping, table: dict[str, Any] | None = None) -> Any:
    """One cell (a CSV string, or an xlsx int/float/datetime/bool) as ``kind``; ValueError
    says what is wrong. ``table`` maps cell text to field values first (OK -> conformant)."""
    if table is not None:
        text = _text(cell)
        if text not in table:
            raise ValueError("not a value the mapping knows")
        return table[text]
    if kind == "str":
        return _text(cell)
    if kind == "bool":
        if isinstance(cell, bool):
            return cell
        text = _text(cell).lower()
        if text in TRUE or text in FALSE:
            return text in TRUE
        raise ValueError("not yes/no")
    if kind == "int":
        return _int(cell)
    if kind == "float":
        return _float(cell, m.decimal)
    return _time(cell, m.tz)


def _text(cell: Any) -> str:
    if isinstance(cell, float) and cell.is_integer():
        return str(int(cell))  # a lot number typed into Excel reads back as 1234.0
    return str(cell).strip()


def _int(cell: Any) -> int:
    if isinstance(cell, bool):
        raise ValueError("not a whole number")
    if isinstance(cell, int):
        return cell
    if isinstance(cell, float):
        if cell.is_integer():
            return int(cell)
        raise ValueError("not a whole number")
    text = str(cell).strip()
    if not INT_RE.fullmatch(text):
        raise ValueError("not a whole number")
    return int(text)


def _float(cell: Any, decimal: str) -> float:
    if isinstance(cell, bool):
        raise ValueError("not a number")
    if isinstance(cell, int | float):
        value = float(cell)
    else:
        text = str(cell).strip()
        if decimal == ",":
            if "." in text:  # 1.234,5 or 1.234: a thousands separator or a mistake, not ours
                raise ValueError('not a number with "," as its decimal mark')
            text = text.replace(",", ".")
        if not FLOAT_RE.fullmatch(text):
            raise ValueError("not a number")
        value = float(text)
    if not math.isfinite(value):
        raise ValueError("not a finite number")
    return value


def _time(cell: Any, tz: timezone) -> int:
    if isinstance(cell, datetime):
        moment = cell
    elif isinstance(cell, date):
        moment = datetime(cell.year, cell.month, cell.day)
    elif isinstance(cell, int) and not isinstance(cell, bool):
        return cell
    else:
        text = _text(cell)
        if INT_RE.fullmatch(text):
            return int(text)
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError("not a date-time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)  # the sheet's local time, as the mapping says
    return int(moment.timestamp())
