"""The GS1 EPCIS 2.0 JSON schema, vendored (schema/README.md says from where), and the one
validator every EPCIS document qledger reads or writes goes through."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

# jsonschema ships no inline types; its stubs (types-jsonschema) are not worth a dependency for
# the two names used here.
from jsonschema import Draft7Validator, FormatChecker  # type: ignore[import-untyped]

SCHEMA_FILE = "EPCIS-JSON-Schema.json"
# What is shown of the schema errors of one document: enough to fix it, never a flood.
MAX_REPORTED_ERRORS = 20


@cache
def _validator() -> Draft7Validator:
    text = resources.files("traceability.epcis").joinpath("schema", SCHEMA_FILE).read_text()
    schema = json.loads(text)
    Draft7Validator.check_schema(schema)
    checker = FormatChecker()
    # The schema names its identifiers and times by JSON Schema `format` (uri, date-time);
    # jsonschema checks a format only where its checker is installed, so a missing one would
    # let "not a uri" through silently. rfc3986-validator and rfc3339-validator provide them.
    missing = {"uri", "date-time"} - set(checker.checkers)
    if missing:
        raise RuntimeError(f"jsonschema format checkers missing: {sorted(missing)}")
    return Draft7Validator(schema, format_checker=checker)


def is_uri(value: str) -> bool:
    """Whether ``value`` is an absolute URI by RFC 3986, as the schema's ``format: uri``."""
    return bool(_validator().format_checker.conforms(value, "uri"))


def pointer(path: Any) -> str:
    """RFC 6901 JSON pointer of a jsonschema error path."""
    parts = [str(p).replace("~", "~0").replace("/", "~1") for p in path]
    return "/" + "/".join(parts) if parts else ""


def schema_errors(document: Any) -> list[tuple[str, str]]:
    """``(json pointer, message)`` of each place ``document`` fails the EPCIS 2.0 schema,
    in document order, at most MAX_REPORTED_ERRORS; empty when it validates."""
    errors = sorted(_validator().iter_errors(document), key=lambda e: [str(p) for p in e.path])
    return [(pointer(e.absolute_path), _short(e.message)) for e in errors[:MAX_REPORTED_ERRORS]]


def _short(message: str) -> str:
    # A failed anyOf quotes the whole offending value; a message stays one readable line.
    return message if len(message) <= 300 else message[:297] + "..."
