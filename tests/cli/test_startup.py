"""`qledger --help` and `--version` load none of the heavy libraries (issue #20, item 4).

Asserted on what is imported, not on a time (timings live in scripts/bench_cli_startup.py and
docs/benchmarks.md): each of these modules costs 0.1-0.8 s to import, and a command's --help
must not pay for them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT

HEAVY = ("web3", "eth_account", "sqlalchemy", "fastapi", "httpx", "torch", "flwr", "xgboost")

# Runs the real app the way the entry point does, then reports what was imported.
PROBE = """
import json, sys
from cli import main
sys.argv = ["qledger", *json.loads(sys.argv[1])]
try:
    main()
except SystemExit:
    pass
print(json.dumps(sorted(m for m in json.loads(HEAVY) if m in sys.modules)))
"""


def _heavy_loaded(*args: str) -> tuple[list[str], str]:
    code = PROBE.replace("HEAVY", repr(json.dumps(HEAVY)))
    result = subprocess.run(
        [sys.executable, "-c", code, json.dumps(list(args))],
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    *shown, loaded = result.stdout.rstrip("\n").split("\n")
    return json.loads(loaded), "\n".join(shown)


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["--version"],
        ["verify", "--help"],
        ["submit", "--help"],
        ["serve", "--help"],
        ["participants", "--help"],
        ["participants", "list", "--help"],
        ["receipt", "--help"],
        ["chain", "--help"],
        ["fl", "simulate", "--help"],
    ],
)
def test_help_imports_no_heavy_library(args: list[str]) -> None:
    loaded, shown = _heavy_loaded(*args)
    assert loaded == [], f"qledger {' '.join(args)} imported {loaded}"
    assert shown.strip(), "printed nothing"


def test_version_prints_the_package_version() -> None:
    from importlib.metadata import version

    _, shown = _heavy_loaded("--version")
    assert shown.strip() == f"qledger {version('qledger')}"


def test_a_command_that_signs_does_load_its_libraries(tmp_path: object) -> None:
    """The probe is not blind: a command that signs loads eth-account."""
    loaded, _ = _heavy_loaded("keys", "new", str(tmp_path) + "/k.json", "--plain")
    assert "eth_account" in loaded
