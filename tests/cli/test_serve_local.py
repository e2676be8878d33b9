"""`qledger serve` in local mode (issue #20, items 3 and 4): on a data dir with no chain it
starts one on ``--chain-port``, deploys, writes the dev admin key, and stops that chain when it
is stopped; ``participants list --json`` gives full addresses; ``/readyz`` and ``/metrics``
answer on the real server, and its anchorer process exports its own metrics when asked.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from ledger.chain.local import running_chain, stop_anvil
from tests.conftest import _anvil_missing_reason
from tests.helpers import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.anvil]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_starts_and_stops_its_own_chain_on_the_given_port(tmp_path: Path) -> None:
    reason = _anvil_missing_reason()
    if reason is not None:
        pytest.skip(reason)
    chain_port, port, anchorer_metrics = _free_port(), _free_port(), _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("QLEDGER_")},
        "PYTHONPATH": str(ROOT),
        "QLEDGER_DATA_DIR": str(tmp_path),
        "QLEDGER_ANCHORER_METRICS_PORT": str(anchorer_metrics),
    }
    cli = [sys.executable, "-m", "cli"]
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [*cli, "serve", "--port", str(port), "--chain-port", str(chain_port)],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "serve did not become ready"
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        local = running_chain(tmp_path / "chain")
        assert local is not None and local.port == chain_port
        admin = tmp_path / "keys" / "admin.json"
        assert json.loads(admin.read_text())["address"].startswith("0x")
        assert admin.stat().st_mode & 0o077 == 0
        supplier = "0x" + "5a" * 20

        def admin_cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*cli, "participants", *args, "--key", str(admin), "--url", url],
                env=env,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=120,
            )

        added = admin_cli("add", supplier, "--role", "supplier", "--org", "SUP-09")
        assert added.returncode == 0, added.stderr
        listed = admin_cli("list", "--json")
        assert listed.returncode == 0, listed.stderr
        [row] = json.loads(listed.stdout)
        assert row["address"].lower() == supplier and row["orgId"] == "SUP-09"
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
        assert "qledger_anchoring_lag_seconds" in metrics and "qledger_batches" in metrics
        # serve's anchorer process exports its own (its chain errors) on 127.0.0.1.
        for _ in range(60):
            try:
                own = httpx.get(f"http://127.0.0.1:{anchorer_metrics}/metrics", timeout=2).text
                break
            except httpx.HTTPError:
                time.sleep(0.5)
        assert "qledger_chain_errors" in own and "qledger_anchoring_lag_seconds" in own
        # Stopping serve (SIGTERM, as systemd or `kill` does) stops the chain it started.
        server.send_signal(signal.SIGTERM)
        server.wait(60)
        assert running_chain(tmp_path / "chain") is None, "serve left its chain running"
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
        stop_anvil(tmp_path / "chain")
        log.close()
