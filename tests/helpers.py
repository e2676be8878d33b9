"""Test helpers shared across packages (not fixtures: those live in conftest.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parent.parent


def run_node(script: str, data: Any) -> Any:
    """Run tests/js/<script> with JSON on stdin and return its JSON output."""
    node = shutil.which("node")
    if node is None or not (ROOT / "node_modules").exists():
        pytest.skip("node and node_modules are needed (make install)")
    result = subprocess.run(
        [node, str(ROOT / "tests" / "js" / script)],
        input=json.dumps(data),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout)


def inspection_payload(defects: int = 1, sample: int = 50) -> dict[str, Any]:
    return {
        "disposition": "conformant" if defects == 0 else "non_conformant",
        "inspectionType": "incoming",
        "lotSize": 1000,
        "sampleSize": sample,
        "defectList": [{"code": "FLASH", "count": defects, "severity": "minor"}] if defects else [],
        "sensorReport": [
            {
                "type": "bore_diameter",
                "uom": "MMT",
                "lsl": 9.95,
                "usl": 10.05,
                "key": True,
                "values": [10.0, 10.01, 9.99, 10.02],
            }
        ],
    }


def error_code(response: Any) -> str:
    """The machine-readable error code of an API error response.

    Reads both the problem+json body (RFC 9457, ``code`` as an extension member) and the older
    ``{"error": {"code": ...}}`` body, so tests assert on the code, not on the envelope.
    """
    body = response.json()
    if isinstance(body.get("error"), dict):
        return str(body["error"]["code"])
    return str(body["code"])


def assert_documented(model: type[BaseModel], body: Any, *, extensions: str | None = None) -> None:
    """``body`` (an answer, or a list of them) is what ``model`` (the route's published
    200/201 schema) says: it validates and carries no top-level member the schema does not
    name (by its JSON name: a field's alias where it has one). ``extensions``: a prefix of
    members the schema allows beyond its named ones (EPCIS events' ``qledger:`` extensions)."""
    names = {field.alias or name for name, field in model.model_fields.items()}
    items = body if isinstance(body, list) else [body]
    assert items, f"nothing to check against {model.__name__}"
    for item in items:
        model.model_validate(item)
        undocumented = {
            key for key in set(item) - names if not (extensions and key.startswith(extensions))
        }
        assert not undocumented, (model.__name__, sorted(undocumented))
