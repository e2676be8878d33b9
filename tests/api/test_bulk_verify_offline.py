"""`qledger verify-receipts` offline (log key, no RPC) on receipts the service served: every
receipt verified, each distinct checkpoint checked once, and a tampered checkpoint or a swapped
root among them caught and named."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from api.anchorer import Anchorer
from cli import app
from tests.api.conftest import Service


def test_offline_bulk_verification_of_served_receipts(service: Service, tmp_path: Path) -> None:
    supplier = service.parties["supplier"]
    hashes: list[str] = []
    for _ in range(2):  # two batches, so the receipts carry different checkpoints
        for _ in range(3):
            response = service.client.post(
                "/v1/records", json=service.inspection(supplier).model_dump(mode="json")
            )
            assert response.status_code == 202, response.text
            hashes.append(response.json()["structHash"])
        Anchorer(service.ctx).run_once(force=True)
    auth = service.login(supplier)
    receipts = [service.client.get(f"/v1/records/{h}/receipt", headers=auth).json() for h in hashes]
    assert all("log" in r for r in receipts)
    vkey = service.client.get("/v1/log/key").json()["vkey"]
    deployment = service.ctx.deployment
    args = [
        "verify-receipts",
        "--log-key",
        vkey,
        "--chain-id",
        str(deployment.chain_id),
        "--ledger",
        deployment.ledger,
    ]
    export = tmp_path / "receipts.jsonl"
    export.write_text("".join(json.dumps(r) + "\n" for r in receipts))
    runner = CliRunner()
    result = runner.invoke(app, [*args, str(export)], env={"QLEDGER_RPC_URL": ""})
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert sum(line.startswith("OK   ") for line in lines) == 6
    assert lines[-1].startswith("6 receipts: 6 valid, 0 invalid (no RPC;")

    # The adversary: one receipt's checkpoint signature altered, another's root swapped for a
    # root of the other batch.
    tampered = json.loads(json.dumps(receipts))
    note = tampered[1]["log"]["checkpoint"]
    sig_line = note.rstrip("\n").split("\n")[-1]
    head, _, b64 = sig_line.rpartition(" ")
    forged_sig = b64[:10] + ("A" if b64[10] != "A" else "B") + b64[11:]
    tampered[1]["log"]["checkpoint"] = note.replace(sig_line, f"{head} {forged_sig}")
    tampered[4]["root"] = receipts[0]["root"]
    export.write_text("".join(json.dumps(r) + "\n" for r in tampered))
    result = runner.invoke(
        app, [*args, "--failures-only", str(export)], env={"QLEDGER_RPC_URL": ""}
    )
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("FAIL receipts.jsonl:2 checkpoint_signature")
    assert lines[1].startswith("FAIL receipts.jsonl:5 ")
    assert lines[-1].startswith("6 receipts: 4 valid, 2 invalid")
