"""Committed artifacts are fresh, and the solc-js wrapper behaves like solc for our tools."""

from __future__ import annotations

import json
import subprocess

import pytest

from ledger import artifacts

pytestmark = pytest.mark.skipif(
    not (artifacts.NODE_MODULES / "solc" / "package.json").is_file(),
    reason="node_modules/solc missing: run make install (npm ci) to compile",
)


def test_committed_artifacts_are_fresh() -> None:
    """Recompiling gives exactly the committed bytecode, ABI and source hash."""
    compiled = artifacts.compile_contracts(write=False)
    assert set(artifacts.CONTRACT_NAMES) <= set(compiled)
    for name in artifacts.CONTRACT_NAMES:
        committed = json.loads((artifacts.BUILD_DIR / f"{name}.json").read_text())
        fresh = compiled[name]
        assert committed["sourceHash"] == artifacts.source_hash(), (
            f"{name}.json is stale: run python -m ledger.artifacts"
        )
        for key in ("abi", "bytecode", "deployedBytecode", "compiler", "sourceHash"):
            assert committed[key] == fresh[key], f"{name}.json differs in {key}"


def test_artifact_shape() -> None:
    for name in artifacts.CONTRACT_NAMES:
        artifact = artifacts.load_artifact(name)
        assert artifact["contractName"] == name
        assert artifact["bytecode"].startswith("0x60") and len(artifact["bytecode"]) > 1000
        assert artifact["compiler"]["version"].startswith("0.8.28+commit.")
        assert artifact["compiler"]["evmVersion"] == "cancun"
        assert artifact["compiler"]["optimizer"] == {"enabled": True, "runs": 200}
        assert artifacts.is_fresh(name)
        # EIP-170: deployable
        assert (len(artifact["deployedBytecode"]) - 2) // 2 <= 24_576


def test_wrapper_answers_like_solc() -> None:
    binary = artifacts.solc_binary()
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    assert "Version: 0.8.28+commit.7893614a" in version.stdout
    unknown = subprocess.run([binary, "--bin"], capture_output=True, text=True)
    assert unknown.returncode == 1 and unknown.stderr.startswith("unrecognised option '--bin'")
    helped = subprocess.run([binary, "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "--standard-json" in helped.stdout


def test_wrapper_writes_large_output_completely() -> None:
    """> 64 KiB of JSON on a pipe arrives whole (no process.exit() truncation)."""
    data = artifacts.standard_json_input()
    data["settings"]["outputSelection"] = {"*": {"*": ["*"], "": ["ast"]}}
    result = subprocess.run(
        [artifacts.solc_binary(), "--standard-json", "--base-path", str(artifacts.REPO_ROOT)],
        input=json.dumps(data),
        capture_output=True,
        text=True,
        check=True,
    )
    assert len(result.stdout) > 256 * 1024
    output = json.loads(result.stdout)
    assert not [e for e in output.get("errors", []) if e["severity"] == "error"]
    assert "@openzeppelin/contracts/access/AccessControl.sol" in output["sources"]


def test_wrapper_reports_missing_imports_as_json_errors() -> None:
    data = {
        "language": "Solidity",
        "sources": {"x.sol": {"content": 'import "@nowhere/missing.sol"; contract X {}'}},
        "settings": {"outputSelection": {"*": {"*": ["abi"]}}},
    }
    result = subprocess.run(
        [artifacts.solc_binary(), "--standard-json"],
        input=json.dumps(data),
        capture_output=True,
        text=True,
        check=True,
    )
    errors = json.loads(result.stdout)["errors"]
    assert any("@nowhere/missing.sol" in e["formattedMessage"] for e in errors)
