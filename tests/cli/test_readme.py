"""The README's "Using it" block, run verbatim as a new user would (issue #20, item 3).

The block is cut out of README.md and run by bash with ``-e -o pipefail`` in an empty
directory holding only ``.venv`` (a link to this checkout's): every command must succeed as
written, in order, with no hand-made files (admin key, record, receipt). The service's port
comes from ``QLEDGER_PORT``/``QLEDGER_URL`` (read by the block), so the test can pick a free
one; nothing else is changed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.conftest import _anvil_missing_reason
from tests.helpers import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.anvil]


def using_it_block(readme: str) -> str:
    """The first ```bash block after the "## Using it" heading."""
    section = readme.split("\n## Using it\n", 1)[1]
    return section.split("```bash\n", 1)[1].split("\n```", 1)[0] + "\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_block_is_found_and_covers_the_walkthrough() -> None:
    block = using_it_block((ROOT / "README.md").read_text())
    for step in (
        "chain up",
        "deploy",
        "serve",
        "keys new",
        "participants add",
        "submit",
        "receipt",
        "trust init",
        "verify receipt.json",
    ):
        assert f"qledger {step}" in block, step


def test_readme_using_it_runs_verbatim(tmp_path: Path) -> None:
    reason = _anvil_missing_reason()
    if reason is not None:
        pytest.skip(reason)
    block = using_it_block((ROOT / "README.md").read_text())
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("QLEDGER_")},
        "PYTHONPATH": str(ROOT),  # this checkout's code, whatever the venv was installed from
        "QLEDGER_PORT": str(port),
        "QLEDGER_URL": f"http://127.0.0.1:{port}",
    }
    proc = subprocess.Popen(
        ["bash", "-e", "-o", "pipefail", "-c", block],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,  # a user's shell in a pipe: nothing may prompt
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        # Whatever the block left running (serve, anvil) on failure.
        subprocess.run(
            [str(ROOT / ".venv/bin/python"), "-m", "cli", "chain", "down"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            timeout=60,
        )
    transcript = ROOT / "test-artifacts" / "readme-walkthrough.log"
    transcript.parent.mkdir(exist_ok=True)
    transcript.write_text(f"$ bash -e -o pipefail README-block\n{out}\n--- stderr ---\n{err}")
    assert proc.returncode == 0, f"stdout:\n{out[-4000:]}\nstderr:\n{err[-4000:]}"
    assert "VALID" in out
    receipt = json.loads((tmp_path / "receipt.json").read_text())
    signed = json.loads((tmp_path / "signed.json").read_text())
    assert receipt["record"] == signed  # the receipt carries the record that was submitted
    admin = json.loads((tmp_path / ".qledger/keys/admin.json").read_text())
    assert admin["address"].startswith("0x")
    assert (tmp_path / ".qledger/keys/acme.json").stat().st_mode & 0o077 == 0
    assert "Traceback" not in err
    # The forger's turn: the same receipt with its record's defects lowered fails on its own.
    receipt["record"]["record"]["defects"] = 0
    (tmp_path / "forged.json").write_text(json.dumps(receipt))
    cli = [str(ROOT / ".venv/bin/python"), "-m", "cli"]
    rpc = subprocess.run(
        [*cli, "chain", "up"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    ).stdout.strip()
    try:
        forged = subprocess.run(
            [*cli, "verify", "forged.json", "--rpc", rpc, "--trust", "trust.json", "--json"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        subprocess.run([*cli, "chain", "down"], cwd=tmp_path, env=env, capture_output=True)
    assert forged.returncode == 1, forged.stdout + forged.stderr
    assert json.loads(forged.stdout)["ok"] is False
