"""The ape toolchain works on this project: `ape compile` and `ape test tests/ape`.

ape lives in its own venv (.ape-venv: eth-ape, ape-solidity, ape-foundry cannot share one with
flwr), so this runs it as a subprocess.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from ledger import artifacts
from ledger.chain import local as localchain

APE = artifacts.REPO_ROOT / ".ape-venv" / "bin" / "ape"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not APE.is_file(),
        reason=".ape-venv is missing (make install-ape creates it); ape tests need it",
    ),
    pytest.mark.skipif(
        not (artifacts.NODE_MODULES / "solc" / "package.json").is_file(),
        reason="node_modules/solc missing: run make install (npm ci)",
    ),
]


def _ape(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = os.environ.copy()
    # ape-foundry looks anvil up on PATH: use the npm package's binary
    env["PATH"] = f"{localchain.REPO_ROOT / localchain.ANVIL_RELATIVE.parent}:{env['PATH']}"
    # the solc-js wrapper, installed if missing; ape must never download a compiler
    env["SOLCX_BINARY_PATH"] = str(artifacts.solc_binary().parent)
    env.pop("VIRTUAL_ENV", None)
    # ape's venv sees its own packages only: Flower's Ray backend exports this interpreter's
    # sys.path as PYTHONPATH for its workers and leaves it set (an in-process `fl simulate` run
    # earlier in the session), which made ape load our venv's pytest.
    env.pop("PYTHONPATH", None)
    return subprocess.run(
        [str(APE), *args],
        cwd=artifacts.REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_ape_compiles_and_tests_the_contracts() -> None:
    compiled = _ape("compile", "--force", timeout=300)
    output = compiled.stdout + compiled.stderr
    assert compiled.returncode == 0, output
    assert "compiled" in output.lower()
    # no compiler download (there is no network for it): only our wrapper is used
    assert "soliditylang.org" not in output and "installing solc" not in output.lower()

    tested = _ape("test", "tests/ape", "-q", "-p", "no:cacheprovider", timeout=300)
    output = tested.stdout + tested.stderr
    assert tested.returncode == 0, output
    assert " passed" in output and "failed" not in output


@pytest.mark.anvil
def test_ape_tests_pass_on_anvil_through_ape_foundry() -> None:
    if not (localchain.REPO_ROOT / localchain.ANVIL_RELATIVE).is_file():
        pytest.skip("anvil binary missing (make install)")
    tested = _ape(
        "test",
        "tests/ape",
        "--network",
        "ethereum:local:foundry",
        "-q",
        "-p",
        "no:cacheprovider",
        timeout=300,
    )
    output = tested.stdout + tested.stderr
    assert tested.returncode == 0, output
    assert " passed" in output and "failed" not in output
