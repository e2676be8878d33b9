"""The CLI as a user runs it: keys, chain up/down, deploy, sign, submit, verify."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from client.service import QledgerClient
from ledger.chain.local import dev_private_keys
from ledger.keys import load_key
from tests.helpers import ROOT, inspection_payload

runner = CliRunner()


def _holders(path: Path) -> list[str]:
    """Command lines of the processes with ``path`` open (to say who kept a lock)."""
    found = []
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            if any(os.path.realpath(fd) == str(path.resolve()) for fd in fd_dir.iterdir()):
                cmdline = (fd_dir.parent / "cmdline").read_bytes().replace(b"\0", b" ")
                found.append(f"{fd_dir.parent.name}: {cmdline.decode(errors='replace')}")
        except OSError:
            continue
    return found


def test_keys_new_writes_a_keystore(tmp_path: Path) -> None:
    env = {"QLEDGER_DATA_DIR": str(tmp_path), "QLEDGER_KEY_PASSPHRASE": "s3cret"}
    result = runner.invoke(app, ["keys", "new", "alice"], env=env)
    assert result.exit_code == 0, result.output
    path = tmp_path / "keys" / "alice.json"
    signer = load_key(path, "s3cret")
    assert signer.address in result.output
    assert runner.invoke(app, ["keys", "new", "alice"], env=env).exit_code == 1  # no overwrite


def test_simulate_writes_signed_evidence_and_keys(tmp_path: Path) -> None:
    from ledger.records import load_signed_record
    from ledger.signing import check_signature

    out = tmp_path / "ev.jsonl"
    result = runner.invoke(
        app,
        [
            "simulate",
            "--suppliers",
            "2",
            "--months",
            "2",
            "--out",
            str(out),
            "--keys-dir",
            str(tmp_path / "keys"),
        ],
    )
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert len(lines) > 20
    for line in lines[:20]:
        check_signature(load_signed_record(json.loads(line)))
    assert (tmp_path / "keys" / "SUP-00001.json").exists()


def test_sign_prints_typed_data_signature_and_hash(tmp_path: Path) -> None:
    runner.invoke(app, ["keys", "new", "k", "--plain"], env={"QLEDGER_DATA_DIR": str(tmp_path)})
    draft = tmp_path / "draft.json"
    draft.write_text(
        json.dumps(
            {
                "subject": "SUP-01",
                "kind": "inspection",
                "partNumber": "P-1",
                "lotId": "L-1",
                "eventTime": int(time.time()) - 3600,  # within the eventTime bound
                "quantity": 50,
                "defects": 1,
                "payload": inspection_payload(),
            }
        )
    )
    result = runner.invoke(
        app,
        [
            "sign",
            str(draft),
            "--key",
            str(tmp_path / "keys/k.json"),
            "--chain-id",
            "31337",
            "--contract",
            "0x" + "ab" * 20,
        ],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert set(out) == {"typedData", "signature", "structHash", "signed"}
    assert out["typedData"]["primaryType"] == "QualityRecord"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"subject": "SUP-01"}))
    result = runner.invoke(
        app,
        [
            "sign",
            str(bad),
            "--key",
            str(tmp_path / "keys/k.json"),
            "--chain-id",
            "1",
            "--contract",
            "0x" + "ab" * 20,
        ],
    )
    assert result.exit_code == 1 and "draft lacks" in result.output


@pytest.mark.anvil
@pytest.mark.slow
def test_user_journey_chain_serve_submit_verify(tmp_path: Path) -> None:
    """chain up -> deploy -> serve -> participants add -> submit -> receipt -> verify -> down."""
    env = {**os.environ, "QLEDGER_DATA_DIR": str(tmp_path), "QLEDGER_TOKEN_SECRET": "x" * 40}
    cli = [sys.executable, "-m", "cli"]

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*cli, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        if check:
            assert result.returncode == 0, result.stdout + result.stderr
        return result

    rpc = run("chain", "up").stdout.strip()
    assert rpc.startswith("http://127.0.0.1:")
    server = None
    try:
        run("deploy")
        admin = tmp_path / "admin.json"
        admin.write_text(json.dumps({"private_key": dev_private_keys()[0]}))
        run("keys", "new", "supplier", "--plain")
        supplier = json.loads((tmp_path / "keys/supplier.json").read_text())["address"]
        port = 8761
        serve_log = tmp_path / "serve.log"  # serve's and its anchorer's logs, for failures
        with open(serve_log, "wb") as log:
            server = subprocess.Popen(
                [*cli, "serve", "--port", str(port)],
                env=env,
                cwd=ROOT,
                start_new_session=True,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        url = f"http://127.0.0.1:{port}"
        for _ in range(150):
            try:
                QledgerClient(url, timeout=1).checkpoint()
                break
            except Exception:
                time.sleep(0.2)
        run(
            "participants",
            "add",
            supplier,
            "--role",
            "supplier",
            "--org",
            "SUP-01",
            "--key",
            str(admin),
            "--url",
            url,
        )
        listed = run("participants", "list", "--key", str(admin), "--url", url).stdout
        assert "SUP-01" in listed
        draft = tmp_path / "draft.json"
        draft.write_text(
            json.dumps(
                {
                    "subject": "SUP-01",
                    "kind": "inspection",
                    "partNumber": "P-1",
                    "lotId": "L-1",
                    "eventTime": int(time.time()) - 3600,  # within the eventTime bound
                    "quantity": 50,
                    "defects": 1,
                    "payload": inspection_payload(),
                }
            )
        )
        submitted = json.loads(
            run(
                "submit", str(draft), "--key", str(tmp_path / "keys/supplier.json"), "--url", url
            ).stdout
        )
        struct_hash = submitted["structHash"]
        client = QledgerClient(url)
        from ledger.keys import load_key as _load

        client.login(_load(tmp_path / "keys/supplier.json", ""))
        receipt = None
        for _ in range(100):
            receipt = client.receipt(struct_hash)
            if receipt:
                break
            time.sleep(0.2)
        assert receipt is not None
        # OEM purchasing: ranking and one supplier's explained score with its waterfall PNG.
        run("keys", "new", "oem", "--plain")
        oem = json.loads((tmp_path / "keys/oem.json").read_text())["address"]
        run(
            "participants",
            "add",
            oem,
            "--role",
            "oem",
            "--org",
            "OEM-01",
            "--key",
            str(admin),
            "--url",
            url,
        )
        oem_key = str(tmp_path / "keys/oem.json")
        assert "SUP-01" in run("credit", "rank", "--key", oem_key, "--url", url).stdout
        shown = run(
            "credit",
            "show",
            "SUP-01",
            "--key",
            oem_key,
            "--url",
            url,
            "--plot",
            str(tmp_path / "w.png"),
        )
        # The journey's supplier has only its own inspections and no OEM goods receipt: a thin
        # file, shown as such with the gate's reason, never a number.
        assert "insufficient evidence" in shown.stdout
        assert "INSUFFICIENT_OEM_EVIDENCE" in shown.stdout
        assert "no waterfall" in shown.stdout and not (tmp_path / "w.png").exists()
        # Purchasing subscribes a receiver: the secret is printed once, never listed.
        added = run(
            "webhooks",
            "add",
            "--target",
            "https://purchasing.example/qledger",
            "--threshold",
            "3",
            "--key",
            oem_key,
            "--url",
            url,
            "--json",
        )
        hook = json.loads(added.stdout)
        assert hook["secret"].startswith("whsec_") and hook["scoreThreshold"] == 3
        listed = run("webhooks", "list", "--key", oem_key, "--url", url, "--json").stdout
        assert hook["id"] in listed and hook["secret"] not in listed
        assert run("webhooks", "deliveries", hook["id"], "--key", oem_key, "--url", url)
        refused = run(
            "webhooks",
            "add",
            "--target",
            "https://elsewhere.example/",
            "--key",
            str(tmp_path / "keys/supplier.json"),
            "--url",
            url,
            check=False,
        )
        assert refused.returncode != 0 and "forbidden_role" in refused.stderr + refused.stdout
        gone = run("webhooks", "rm", hook["id"], "--key", oem_key, "--url", url).stdout
        assert "deleted" in gone
        assert hook["id"] not in run("webhooks", "list", "--key", oem_key, "--url", url).stdout
        (tmp_path / "receipt.json").write_text(json.dumps(receipt))
        (tmp_path / "record.json").write_text(json.dumps(receipt["record"]))
        # The auditor's check: the chain alone, no service. Stopping serve (only its own
        # pid) also stops its anchorer process: the data dir's anchorer lock comes free.
        server.send_signal(signal.SIGTERM)
        server.wait(20)
        server = None
        from api.anchorer import anchorer_lock

        # The anchorer finishes the step it is in before it stops; give a loaded machine time.
        for _ in range(150):
            with anchorer_lock(tmp_path) as free:
                if free:
                    break
            time.sleep(0.2)
        assert free, (
            f"serve's anchorer process outlived it; lock held by "
            f"{_holders(tmp_path / 'anchorer.lock')}; serve's log ends:\n"
            f"{serve_log.read_text(errors='replace')[-3000:]}"
        )
        # Without a trust root verify refuses, and says how to make one.
        refused = run(
            "verify",
            str(tmp_path / "record.json"),
            str(tmp_path / "receipt.json"),
            "--rpc",
            rpc,
            check=False,
        )
        assert refused.returncode == 1 and "trust init" in " ".join(refused.stderr.split())
        trust = tmp_path / "trust.json"
        run(
            "trust",
            "init",
            "--deployment",
            str(tmp_path / "deployment.json"),
            "--rpc",
            rpc,
            "--out",
            str(trust),
        )
        ok = run(
            "verify",
            str(tmp_path / "record.json"),
            str(tmp_path / "receipt.json"),
            "--rpc",
            rpc,
            "--trust",
            str(trust),
        )
        assert "VALID" in ok.stdout
        receipt["proof"] = [p[:-1] + ("0" if p[-1] != "0" else "1") for p in receipt["proof"]]
        receipt["leafCount"] += 1
        (tmp_path / "bad.json").write_text(json.dumps(receipt))
        bad = run(
            "verify",
            str(tmp_path / "record.json"),
            str(tmp_path / "bad.json"),
            "--rpc",
            rpc,
            "--trust",
            str(trust),
            "--json",
            check=False,
        )
        assert bad.returncode == 1
        assert json.loads(bad.stdout)["failedCheck"] == "anchor_matches_receipt"
        # The chain survives a restart (its state lives in the data dir).
        assert "stopped" in run("chain", "down").stdout
        assert run("chain", "up").stdout.strip() == rpc
        again = run(
            "verify",
            str(tmp_path / "record.json"),
            str(tmp_path / "receipt.json"),
            "--rpc",
            rpc,
            "--trust",
            str(trust),
            check=False,
        )
        assert again.returncode == 0, again.stdout
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGKILL)
        run("chain", "down", check=False)
