"""``qledger notify`` as a user runs it, against a live service (uvicorn on a free port): an
OEM's investigation, the tier-1's forward to tier 2 and the answers, the refusals a wrong party
gets, the inbox, and ``show --out`` writing records and receipts that ``qledger verify``
accepts offline."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from typer.testing import CliRunner

from api.anchorer import Anchorer
from api.main import create_app
from cli import app
from tests.api.conftest import Service, make_service

runner = CliRunner()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[Service, str]]:
    svc = make_service(tmp_path, "sqlite")
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(ctx=svc.ctx), host="127.0.0.1", port=port, log_level="warning", ws="none"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield svc, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
    svc.ctx.engine.dispose()


@pytest.mark.slow
def test_notify_journey(live: tuple[Service, str], tmp_path: Path) -> None:
    svc, url = live
    keys = {}
    for name in ("oem", "supplier", "supplier2"):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"private_key": svc.parties[name].signer.private_key.hex()}))
        keys[name] = str(path)
    parts = tmp_path / "parts.json"
    parts.write_text(json.dumps([{"maker": "SUP-01", "partNumber": "ECU-7", "lotId": "L-1"}]))
    sub_parts = tmp_path / "sub.json"
    sub_parts.write_text(json.dumps([{"maker": "SUP-02", "partNumber": "PCB-3", "lotId": "R-8"}]))

    def notify(*args: str, key: str, ok: bool = True) -> str:
        result = runner.invoke(app, ["notify", *args, "--key", keys[key], "--url", url])
        assert (result.exit_code == 0) is ok, result.output
        return result.output

    notify(
        "create", "QN-7", "--type", "investigation", "--to", "SUP-01", "--parts", str(parts),
        "--due-days", "5", "--incident", "INC-7", "--no-send", key="oem",
    )  # fmt: skip
    # A supplier signing the OEM's step, a third party answering: one-line refusals.
    assert "notification_wrong_party" in notify("send", "QN-7", key="supplier", ok=False)
    notify("send", "QN-7", key="oem")
    assert "notification_not_found" in notify("receive", "QN-7", key="supplier2", ok=False)
    notify("receive", "QN-7", key="supplier")
    notify("ack", "QN-7", key="supplier")
    notify("forward", "QN-7", "QN-7-F", "--to", "SUP-02", "--parts", str(sub_parts), key="supplier")
    notify("receive", "QN-7-F", key="supplier2")
    notify("ack", "QN-7-F", key="supplier2")
    assert "gives its reason" in notify(
        "decline", "QN-7-F", "--reason", " ", key="supplier2", ok=False
    )
    notify("accept", "QN-7-F", "--reason", "solder void", "--8d", "0x" + "8d" * 32, key="supplier2")
    notify("close", "QN-7-F", key="supplier")
    notify("decline", "QN-7", "--reason", "tier-2 board, see QN-7-F", key="supplier")
    notify("close", "QN-7", key="oem")
    assert "notification_wrong_state" in notify("accept", "QN-7", key="supplier", ok=False)
    Anchorer(svc.ctx).run_once(force=True)

    inbox = json.loads(notify("inbox", "--json", key="supplier"))
    assert sorted(
        (n["notificationId"], n["direction"], n["state"]) for n in inbox["notifications"]
    ) == [
        ("QN-7", "received", "closed"),
        ("QN-7-F", "sent", "closed"),
    ]
    out = tmp_path / "evidence"
    shown = notify("show", "QN-7", "--out", str(out), key="oem")
    assert "QN-7-F" in shown and "solder void" in shown
    records = sorted(out.glob("*.record.json"))
    assert len(records) == 12 and len(list(out.glob("*.receipt.json"))) == 12
    log_key = svc.client.get("/v1/log/key").json()["vkey"]
    deployment = svc.ctx.deployment
    for record in records:
        receipt = record.with_name(record.name.replace(".record.", ".receipt."))
        verified = runner.invoke(
            app,
            [
                "verify", str(record), str(receipt), "--log-key", log_key,
                "--chain-id", str(deployment.chain_id), "--ledger", deployment.ledger,
            ],
        )  # fmt: skip
        assert verified.exit_code == 0, verified.output
