"""The service's transparency log end to end: checkpoints after each batch, proofs, witness
cosignatures, offline receipts and score certificates, and a log operator that lies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update

from api import tlog_service
from api.anchorer import Anchorer
from api.schemas import ConsistencyProof, CosignatureStored, LogKey, ScoreCertificate
from api.store.models import LogCheckpoint, LogCosignature, LogEntry
from cli.witness import witness_once
from ledger.tlog import (
    COSIGNATURE_V1,
    Checkpoint,
    LogProof,
    LogTree,
    Signer,
    Verifier,
    leaf_hash,
    open_checkpoint,
    parse_note,
    sign_checkpoint,
    verify_consistency,
)
from ledger.tlog.verify import check_against, verify_certificate, verify_receipt_offline
from ledger.trust import BlockAnchor, TrustRoot
from ledger.verify import VerificationReport
from tests.api.conftest import Service
from tests.helpers import assert_documented, error_code


def _anchor(service: Service, count: int) -> list[str]:
    supplier = service.parties["supplier"]
    hashes = []
    for _ in range(count):
        response = service.client.post(
            "/v1/records", json=service.inspection(supplier).model_dump(mode="json")
        )
        assert response.status_code == 202, response.text
        hashes.append(response.json()["structHash"])
    Anchorer(service.ctx).run_once(force=True)
    return hashes


def _log_key(service: Service) -> Verifier:
    body = service.client.get("/v1/log/key").json()
    assert_documented(LogKey, body)
    assert body["origin"] == (
        f"qledger.local/{service.ctx.deployment.chain_id}/{service.ctx.deployment.ledger.lower()}"
    )
    return Verifier.parse(body["vkey"])


def _witness(tmp_path: Path, name: str) -> tuple[Signer, Path, Path]:
    return (
        Signer.generate(name, COSIGNATURE_V1),
        tmp_path / f"{name.replace('/', '_')}-state.json",
        tmp_path / f"{name.replace('/', '_')}-report.json",
    )


def test_checkpoints_proofs_witnesses_and_an_offline_receipt(
    service: Service, tmp_path: Path
) -> None:
    log_key = _log_key(service)
    assert error_code(service.client.get("/v1/log/checkpoint")) == "no_checkpoint"
    first = _anchor(service, 3)
    note3 = service.client.get("/v1/log/checkpoint")
    assert note3.status_code == 200 and note3.headers["content-type"].startswith("text/plain")
    cp3 = open_checkpoint(note3.text, log_key).checkpoint
    assert cp3.size == 3
    second = _anchor(service, 2)
    cp5 = open_checkpoint(service.client.get("/v1/log/checkpoint").text, log_key).checkpoint
    assert cp5.size == 5
    assert service.client.get("/v1/log/checkpoint/3").text == note3.text
    assert error_code(service.client.get("/v1/log/checkpoint/4")) == "checkpoint_not_found"

    proof = service.client.get("/v1/log/consistency", params={"from": 3, "to": 5}).json()
    assert_documented(ConsistencyProof, proof)
    inclusion = service.client.get(f"/v1/log/inclusion/{first[0]}")
    assert inclusion.status_code == 200
    assert_documented(LogProof, inclusion.json())
    assert inclusion.json()["treeSize"] == 5
    verify_consistency(3, 5, [bytes.fromhex(h[2:]) for h in proof["proof"]], cp3.root, cp5.root)
    bad = service.client.get("/v1/log/consistency", params={"from": 5, "to": 9})
    assert bad.status_code == 400 and error_code(bad) == "bad_tree_sizes"
    assert error_code(service.client.get(f"/v1/log/inclusion/0x{'00' * 32}")) == "not_logged"
    assert error_code(service.client.get("/v1/log/inclusion/0xzz")) == "invalid_hash"

    # Two witnesses cosign; a third key never does.
    w1, state1, report1 = _witness(tmp_path, "w1.example/oem")
    w2, state2, report2 = _witness(tmp_path, "w2.example/auditor")
    idle = Signer.generate("w3.example/idle", COSIGNATURE_V1)
    for signer, state, report in ((w1, state1, report1), (w2, state2, report2)):
        outcome = witness_once(service.client, signer, log_key, state, report_path=report)
        assert (outcome.status, outcome.size) == ("cosigned", 5)
    cosigned = service.client.get("/v1/log/checkpoint").text
    assert len(parse_note(cosigned).signatures) == 3

    # A receipt of the first batch now carries the cosigned checkpoint of size 5 and verifies
    # with no chain at all; with the idle witness required it does not.
    supplier = service.parties["supplier"]
    auth = service.login(supplier)
    receipt = service.client.get(f"/v1/records/{first[1]}/receipt", headers=auth).json()
    assert receipt["log"]["treeSize"] == 5
    witnesses = [w1.verifier, w2.verifier, idle.verifier]
    report = verify_receipt_offline(None, receipt, log_key=log_key, witnesses=witnesses, quorum=2)
    assert report.ok, report.to_json()
    failed = verify_receipt_offline(None, receipt, log_key=log_key, witnesses=witnesses, quorum=3)
    assert failed.first_failure and failed.first_failure.check.value == "witness_quorum"
    # A receipt whose batch root was swapped no longer matches its log entry.
    forged = {**receipt, "root": "0x" + "11" * 32}
    swapped = verify_receipt_offline(None, forged, log_key=log_key)
    assert not swapped.ok
    # Another log's key (a look-alike service) signs nothing this receipt carries.
    other = Signer.generate(log_key.name).verifier
    alien = verify_receipt_offline(None, receipt, log_key=other)
    assert alien.first_failure and alien.first_failure.check.value == "checkpoint_signature"

    # The receipt pinned to checkpoint 3 is extended by the latest (verify --against).
    pinned = service.client.get(
        f"/v1/records/{first[0]}/receipt", params={"log_size": 3}, headers=auth
    ).json()
    assert pinned["log"]["treeSize"] == 3
    against = VerificationReport()
    assert check_against(
        against,
        verify_receipt_offline(None, pinned, log_key=log_key) and _proof(pinned),
        cosigned,
        [bytes.fromhex(h[2:]) for h in proof["proof"]],
        log_key,
    ), against.to_json()
    assert (
        error_code(
            service.client.get(
                f"/v1/records/{second[0]}/receipt", params={"log_size": 3}, headers=auth
            )
        )
        == "checkpoint_too_old"
    )

    # Anyone may post a cosignature; only valid ones stay.
    line = idle.cosign(parse_note(note3.text).text).line()
    wrong = service.client.post(
        "/v1/log/cosignatures", json={"size": 5, "vkey": idle.verifier.vkey, "cosignature": line}
    )
    assert wrong.status_code == 422 and error_code(wrong) == "cosignature"
    liar = service.client.post(
        "/v1/log/cosignatures", json={"size": 5, "vkey": w1.verifier.vkey, "cosignature": line}
    )
    assert liar.status_code == 422
    garbage = service.client.post(
        "/v1/log/cosignatures", json={"size": 5, "vkey": "x+y+z", "cosignature": "\u2014 a b"}
    )
    assert garbage.status_code == 422
    # The idle witness's honest cosignature of checkpoint 5 is kept, once.
    honest = idle.cosign(parse_note(cosigned).text).line()
    for duplicate in (False, True):
        kept = service.client.post(
            "/v1/log/cosignatures",
            json={"size": 5, "vkey": idle.verifier.vkey, "cosignature": honest},
        )
        assert kept.status_code == 201, kept.text
        assert_documented(CosignatureStored, kept.json())
        assert (kept.json()["stored"], kept.json()["duplicate"]) == (not duplicate, duplicate)


def _proof(receipt: dict):  # type: ignore[no-untyped-def]
    return LogProof.model_validate(receipt["log"])


def _rewrite_history(service: Service, *, keep_size: bool) -> str:
    """Play a malicious log operator who holds the real log key: rewrite entry 0 and sign a
    checkpoint over the rewritten tree (at the same size, or after appending more)."""
    ctx = service.ctx
    signer = tlog_service.log_signer(ctx)
    with ctx.sessions() as s, s.begin():
        forged = leaf_hash(b"\x01" + b"\xee" * 64)
        s.execute(
            update(LogEntry)
            .where(LogEntry.idx == 0)
            .values(data=(b"\x01" + b"\xee" * 64).hex(), leaf_hash="0x" + forged.hex())
        )
        s.execute(delete(LogCosignature))
        s.execute(delete(LogCheckpoint))
        leaves = [
            bytes.fromhex(h[2:])
            for h in s.scalars(select(LogEntry.leaf_hash).order_by(LogEntry.idx))
        ]
        tree = LogTree(leaves)
        note = sign_checkpoint(
            Checkpoint(tlog_service.origin_of(ctx), len(tree), tree.root()), signer
        )
        s.add(LogCheckpoint(size=len(tree), root="0x" + tree.root().hex(), note=note.encode()))
    tlog_service._trees.clear()  # the operator's processes restart on the rewritten table
    if not keep_size:
        _anchor(service, 2)
    return note.encode()


@pytest.mark.parametrize("keep_size", [True, False], ids=["same-size", "extended"])
def test_witness_refuses_a_split_view_and_reports_it(
    service: Service, tmp_path: Path, keep_size: bool
) -> None:
    log_key = _log_key(service)
    _anchor(service, 4)
    witness, state, report_path = _witness(tmp_path, "w1.example/oem")
    honest = service.client.get("/v1/log/checkpoint").text
    assert (
        witness_once(service.client, witness, log_key, state, report_path=report_path).status
        == "cosigned"
    )

    forged_note = _rewrite_history(service, keep_size=keep_size)
    served = service.client.get("/v1/log/checkpoint").text
    # The lie is signed with the real key: only a witness's memory catches it.
    assert open_checkpoint(served, log_key).checkpoint.size == (4 if keep_size else 6)

    outcome = witness_once(service.client, witness, log_key, state, report_path=report_path)
    assert outcome.status == "refused"
    evidence = json.loads(report_path.read_text())
    assert evidence["check"] == ("split_view" if keep_size else "consistency_proof")
    assert evidence["cosignedCheckpoint"] == honest
    assert evidence["newCheckpoint"] == served
    # The evidence stands on its own: both notes verify under the log key and conflict.
    old = open_checkpoint(evidence["cosignedCheckpoint"], log_key).checkpoint
    new = open_checkpoint(evidence["newCheckpoint"], log_key).checkpoint
    if keep_size:
        assert served == forged_note
        assert old.size == new.size and old.root != new.root
    else:
        hashes = [bytes.fromhex(h[2:]) for h in evidence["consistencyProof"]["proof"]]
        with pytest.raises(Exception, match="consistency_proof"):
            verify_consistency(old.size, new.size, hashes, old.root, new.root)
    # Nothing was cosigned, and the state still holds the honest checkpoint.
    assert len(parse_note(service.client.get("/v1/log/checkpoint").text).signatures) == 1
    assert json.loads(state.read_text())["checkpoint"] == honest


def test_chain_backing_bounds_what_a_witness_cosigns(service: Service, tmp_path: Path) -> None:
    from cli.witness import chain_entry_total

    log_key = _log_key(service)
    _anchor(service, 3)
    witness, state, report_path = _witness(tmp_path, "w1.example/oem")
    on_chain = service.chain.checkpoint().leaf_total + service.chain.commitment_count()
    assert on_chain == 3
    outcome = witness_once(
        service.client, witness, log_key, state, report_path=report_path, chain_total=2
    )
    assert outcome.status == "refused" and outcome.detail["check"] == "chain_backing"
    ok = witness_once(
        service.client, witness, log_key, state, report_path=report_path, chain_total=on_chain
    )
    assert ok.status == "cosigned"
    del chain_entry_total


def _certificate(service: Service, tmp_path: Path) -> tuple[bytes, Verifier, list[Signer]]:
    log_key = _log_key(service)
    _anchor(service, 3)
    oem = service.login(service.parties["oem"])
    credit = service.client.get("/v1/suppliers/SUP-01/credit", headers=oem)
    assert credit.status_code == 200, credit.text
    supplier = service.login(service.parties["supplier"])
    early = service.client.get("/v1/suppliers/SUP-01/credit/certificate", headers=supplier)
    assert early.status_code == 404 and error_code(early) == "score_not_committed"
    Anchorer(service.ctx).run_once(force=True)  # commits the published score
    witnesses = []
    for name in ("w1.example/bank", "w2.example/insurer"):
        signer, state, report = _witness(tmp_path, name)
        assert (
            witness_once(service.client, signer, log_key, state, report_path=report).status
            == "cosigned"
        )
        witnesses.append(signer)
    other = service.client.get(
        "/v1/suppliers/SUP-01/credit/certificate",
        headers=service.login(service.parties["supplier2"]),
    )
    assert other.status_code == 403
    response = service.client.get("/v1/suppliers/SUP-01/credit/certificate", headers=supplier)
    assert response.status_code == 200, response.text
    return response.content, log_key, witnesses


def test_score_certificate_verifies_offline(service: Service, tmp_path: Path) -> None:
    raw, log_key, witnesses = _certificate(service, tmp_path)
    keys = [w.verifier for w in witnesses]
    report = verify_certificate(raw, log_key=log_key, witnesses=keys, quorum=2)
    assert report.ok, report.to_json()
    body = json.loads(raw)
    assert_documented(ScoreCertificate, body)
    assert (
        body["responseHash"]
        == service.client.get(
            "/v1/suppliers/SUP-01/credit", headers=service.login(service.parties["oem"])
        ).json()["responseHash"]
    )
    # A better score, same everything else: the hash no longer matches.
    body["score"]["score"] = 99.0
    from ledger.canonical import canonical_json

    tampered = verify_certificate(canonical_json(body), log_key=log_key, witnesses=keys, quorum=2)
    assert tampered.first_failure and tampered.first_failure.check.value == "response_hash"


@pytest.mark.slow
def test_score_certificate_fails_when_any_byte_changes(service: Service, tmp_path: Path) -> None:
    raw, log_key, witnesses = _certificate(service, tmp_path)
    keys = [w.verifier for w in witnesses]
    assert verify_certificate(raw, log_key=log_key, witnesses=keys, quorum=2).ok
    passed = []
    for i in range(len(raw)):
        for replacement in {raw[i] ^ 0x01, ord("0") if raw[i] != ord("0") else ord("1")}:
            changed = raw[:i] + bytes([replacement]) + raw[i + 1 :]
            if verify_certificate(changed, log_key=log_key, witnesses=keys, quorum=2).ok:
                passed.append((i, replacement))
    assert [(i, raw[i - 20 : i + 20], chr(r)) for i, r in passed] == []


def test_cli_verifies_offline_against_and_scores(service: Service, tmp_path: Path) -> None:
    """The auditor's commands, with files only: no --rpc anywhere."""
    from typer.testing import CliRunner

    from cli import app

    runner = CliRunner()
    made = runner.invoke(
        app, ["witness", "init", "--name", "w1.example/oem", "--key", str(tmp_path / "w.key")]
    )
    assert made.exit_code == 0, made.output
    witness = Signer.decode((tmp_path / "w.key").read_text())
    assert json.loads(made.output)["vkey"] == witness.verifier.vkey
    assert (tmp_path / "w.key").stat().st_mode & 0o077 == 0

    log_key = _log_key(service)
    hashes = _anchor(service, 3)
    state, report = tmp_path / "state.json", tmp_path / "report.json"
    assert witness_once(service.client, witness, log_key, state, report_path=report).status == (
        "cosigned"
    )
    auth = service.login(service.parties["supplier"])
    receipt = service.client.get(f"/v1/records/{hashes[0]}/receipt", headers=auth).json()
    receipt_file = tmp_path / "receipt.json"
    receipt_file.write_text(json.dumps(receipt))
    record_file = tmp_path / "record.json"
    record_file.write_text(json.dumps(receipt["record"]))
    # What the auditor keeps: the pinned ledger, a known block, the log key and the witness
    # keys with the quorum it requires. With it, verification needs no RPC and no flags.
    deployment = service.ctx.deployment
    genesis = service.chain.block_hash(0)
    assert genesis is not None
    trust_file = tmp_path / "trust.json"
    TrustRoot(
        chain_id=deployment.chain_id,
        ledger=deployment.ledger,
        anchor=BlockAnchor(number=0, hash=genesis),
        log_key=log_key.vkey,
        witnesses=(witness.verifier.vkey,),
        witness_quorum=1,
    ).save(trust_file)
    result = runner.invoke(
        app,
        ["verify", str(record_file), str(receipt_file), "--trust", str(trust_file), "--json"],
        env={"QLEDGER_RPC_URL": ""},
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["ok"] is True
    assert {"trust_root", "witness_quorum"} <= {c["check"] for c in report["checks"]}
    pin = ["--chain-id", str(deployment.chain_id), "--ledger", deployment.ledger]
    offline = ["verify", str(record_file), str(receipt_file), *pin, "--log-key", log_key.vkey]
    stranger = Signer.generate("w9.example/x", COSIGNATURE_V1).verifier.vkey
    result = runner.invoke(
        app,
        [*offline, "--witness", stranger, "--quorum", "1", "--json"],
        env={"QLEDGER_RPC_URL": ""},
    )
    assert result.exit_code == 1 and json.loads(result.output)["failedCheck"] == "witness_quorum"

    # --against: the honest newer checkpoint extends the receipt's; a forked one does not.
    _anchor(service, 2)
    newer = tmp_path / "newer.txt"
    newer.write_text(service.client.get("/v1/log/checkpoint").text)
    proof_file = tmp_path / "proof.json"
    proof_file.write_text(
        json.dumps(service.client.get("/v1/log/consistency", params={"from": 3, "to": 5}).json())
    )
    against = [*offline, "--against", str(newer), "--consistency-proof", str(proof_file), "--json"]
    result = runner.invoke(app, against, env={"QLEDGER_RPC_URL": ""})
    assert result.exit_code == 0, result.output
    checks = {c["check"]: c["ok"] for c in json.loads(result.output)["checks"]}
    assert checks["consistency_proof"] is True
    fork = _rewrite_history(service, keep_size=False)
    del fork
    newer.write_text(service.client.get("/v1/log/checkpoint").text)
    size = open_checkpoint(newer.read_text(), log_key).checkpoint.size
    proof_file.write_text(
        json.dumps(service.client.get("/v1/log/consistency", params={"from": 3, "to": size}).json())
    )
    result = runner.invoke(app, against, env={"QLEDGER_RPC_URL": ""})
    assert result.exit_code == 1
    assert json.loads(result.output)["failedCheck"] == "consistency_proof"


def test_cli_verify_score(service: Service, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cli import app

    raw, log_key, witnesses = _certificate(service, tmp_path)
    cert = tmp_path / "score.qcert.json"
    cert.write_bytes(raw)
    args = ["verify-score", str(cert), "--log-key", log_key.vkey, "--json"]
    for w in witnesses:
        args += ["--witness", w.verifier.vkey]
    result = CliRunner().invoke(app, [*args, "--quorum", "2"])
    assert result.exit_code == 0, result.output
    # The same with only the trust file a bank keeps (its log key, witnesses and quorum).
    deployment = service.ctx.deployment
    genesis = service.chain.block_hash(0)
    assert genesis is not None
    trust_file = tmp_path / "trust.json"
    TrustRoot(
        chain_id=deployment.chain_id,
        ledger=deployment.ledger,
        anchor=BlockAnchor(number=0, hash=genesis),
        log_key=log_key.vkey,
        witnesses=tuple(w.verifier.vkey for w in witnesses),
        witness_quorum=2,
    ).save(trust_file)
    trusted = ["verify-score", str(cert), "--trust", str(trust_file), "--json"]
    result = CliRunner().invoke(app, trusted)
    assert result.exit_code == 0, result.output
    # A trust file pinning another ledger refuses this log's key.
    other = tmp_path / "other.json"
    TrustRoot(
        chain_id=deployment.chain_id,
        ledger="0x" + "11" * 20,
        anchor=BlockAnchor(number=0, hash=genesis),
        log_key=log_key.vkey,
    ).save(other)
    result = CliRunner().invoke(app, ["verify-score", str(cert), "--trust", str(other)])
    assert result.exit_code == 1 and "not the pinned ledger" in result.output
    cert.write_bytes(raw.replace(b'"score":', b'"score" :', 1))  # same JSON, other bytes
    result = CliRunner().invoke(app, [*args, "--quorum", "2"])
    assert result.exit_code == 1
    assert json.loads(result.output)["failedCheck"] == "certificate_format"


def test_a_store_from_before_the_log_is_backfilled(service: Service) -> None:
    """Records confirmed before migration 0005 enter the log at the anchorer's next start."""
    log_key = _log_key(service)
    hashes = _anchor(service, 3)
    with service.ctx.sessions() as s, s.begin():  # the store as it was before the log
        s.execute(delete(LogCosignature))
        s.execute(delete(LogCheckpoint))
        s.execute(delete(LogEntry))
    tlog_service._trees.clear()
    assert error_code(service.client.get("/v1/log/checkpoint")) == "no_checkpoint"
    Anchorer(service.ctx).run_once()
    checkpoint = open_checkpoint(service.client.get("/v1/log/checkpoint").text, log_key)
    assert checkpoint.checkpoint.size == 3
    auth = service.login(service.parties["supplier"])
    receipt = service.client.get(f"/v1/records/{hashes[2]}/receipt", headers=auth).json()
    assert verify_receipt_offline(None, receipt, log_key=log_key).ok
    Anchorer(service.ctx).run_once()  # nothing twice
    assert (
        open_checkpoint(service.client.get("/v1/log/checkpoint").text, log_key).checkpoint.size == 3
    )


def test_hostile_inputs_to_the_log_routes_get_4xx(service: Service) -> None:
    _anchor(service, 1)
    witness = Signer.generate("w.example/x", COSIGNATURE_V1)
    note = parse_note(service.client.get("/v1/log/checkpoint").text)
    line = witness.cosign(note.text).line()
    cases = [
        service.client.get("/v1/log/checkpoint/" + "9" * 40),
        service.client.get("/v1/log/checkpoint/-3"),
        service.client.get("/v1/log/consistency", params={"from": -1, "to": 1}),
        service.client.get("/v1/log/consistency", params={"from": "x", "to": 1}),
        service.client.get("/v1/log/inclusion/" + "0x" + "g" * 64),
        service.client.get("/v1/log/inclusion/1", params={"size": 0}),
        service.client.post(
            "/v1/log/cosignatures",
            content=b"{not json",
            headers={"content-type": "application/json"},
        ),
        service.client.post("/v1/log/cosignatures", content=b"{}"),  # no JSON content type
        service.client.post("/v1/log/cosignatures", json={"size": 1, "vkey": 5}),
        service.client.post(
            "/v1/log/cosignatures",
            json={"size": 7, "vkey": witness.verifier.vkey, "cosignature": line},
        ),
        service.client.post(
            "/v1/log/cosignatures",
            json={"size": 1, "vkey": witness.verifier.vkey, "cosignature": line + "\n\n" + line},
        ),
        service.client.post(
            "/v1/log/cosignatures",
            json={"size": 1, "vkey": witness.verifier.vkey, "cosignature": "\u2014 w\x00 AAAA\n"},
        ),
        service.client.post(
            "/v1/log/cosignatures",
            json={
                "size": 1,
                "vkey": Signer.generate("l.example").verifier.vkey,
                "cosignature": line,
            },
        ),
    ]
    assert [r.status_code for r in cases] == [
        404,
        404,
        422,
        422,
        422,
        422,
        400,
        415,
        422,
        404,
        422,
        422,
        422,
    ]
    ok = service.client.post(
        "/v1/log/cosignatures", json={"size": 1, "vkey": witness.verifier.vkey, "cosignature": line}
    )
    assert ok.status_code == 201 and ok.json()["stored"] is True
    again = service.client.post(
        "/v1/log/cosignatures", json={"size": 1, "vkey": witness.verifier.vkey, "cosignature": line}
    )
    assert again.status_code == 201 and again.json()["duplicate"] is True
