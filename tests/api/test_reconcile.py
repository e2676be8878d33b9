"""Reconciliation: a chain that forgets confirmed batches (rolled back, reset), and the store
that must end with every acknowledged record in exactly one batch the chain holds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import func, select

from api.anchorer import Anchorer, Reconciler
from api.schemas import ReconciliationList
from api.store.models import Batch, Outbox, Reconciliation, Record, SupersededReceipt
from ledger.chain import ChainClient
from ledger.chain.local import dev_private_keys, start_anvil, stop_anvil
from ledger.errors import LedgerContractMissing
from ledger.keys import Signer
from ledger.records import Role
from ledger.trust import BlockAnchor, TrustRoot
from ledger.verify import verify_receipt
from tests.api.conftest import Party, Service
from tests.conftest import _anvil_missing_reason
from tests.helpers import ROOT, assert_documented, error_code


def _submit(service: Service, n: int) -> list[str]:
    supplier = service.parties["supplier"]
    hashes = []
    for _ in range(n):
        answer = service.client.post(
            "/v1/records", json=service.inspection(supplier).model_dump(mode="json")
        )
        assert answer.status_code == 202, answer.text
        hashes.append(answer.json()["structHash"])
    return hashes


def _trust(service: Service) -> TrustRoot:
    genesis = service.chain.block_hash(0)
    assert genesis is not None
    return TrustRoot(
        chain_id=service.ctx.deployment.chain_id,
        ledger=service.ctx.deployment.ledger,
        anchor=BlockAnchor(0, genesis),
    )


def _assert_consistent(service: Service, acknowledged: list[str]) -> None:
    """Every acknowledged record in exactly one confirmed batch that the chain holds as
    recorded; batch ids unique; the chain counts every record once."""
    chain = service.chain
    with service.ctx.sessions() as s:
        records = {r.struct_hash: r for r in s.scalars(select(Record))}
        batches = {b.id: b for b in s.scalars(select(Batch))}
        outbox = s.scalar(select(func.count()).select_from(Outbox))
    assert set(records) == set(acknowledged)
    assert outbox == 0
    for struct_hash in acknowledged:
        batch = batches[records[struct_hash].batch_id]
        assert batch.status == "confirmed" and records[struct_hash].proof is not None
    for batch in batches.values():
        info = chain.anchored_at(bytes.fromhex(batch.root[2:]))
        assert info is not None and info.batch_id == batch.chain_batch_id
        assert chain.block_hash(batch.block_number) == batch.block_hash
    chain_ids = [b.chain_batch_id for b in batches.values()]
    assert len(chain_ids) == len(set(chain_ids))
    assert sum(b.leaf_count for b in batches.values()) == len(acknowledged)
    assert chain.checkpoint().leaf_total == len(acknowledged)  # counted once on chain too
    assert chain.checkpoint().batch_count == len(batches)


def _receipt(service: Service, struct_hash: str, headers: dict[str, str]) -> Any:
    return service.client.get(f"/v1/records/{struct_hash}/receipt", headers=headers)


def test_rollback_past_a_confirmed_batch_is_reconciled(service: Service) -> None:
    """The chain rolls back past a confirmed batch: reconcile re-anchors it, issues new
    receipts, and keeps the old ones as superseded."""
    anchorer, chain, trust = Anchorer(service.ctx), service.chain, _trust(service)
    auditor = service.login(service.parties["auditor"])
    first = _submit(service, 3)
    anchorer.run_once(force=True)
    snapshot = chain._tester.take_snapshot()
    second = _submit(service, 4)
    anchorer.run_once(force=True)
    old = {h: _receipt(service, h, auditor).json() for h in second}
    assert Reconciler(service.ctx).check() == []

    chain._tester.revert_to_snapshot(snapshot)  # the chain forgets batch 2
    # ... and goes on with other history (an in-process chain would otherwise mine the very
    # same transaction into the very same block again).
    chain.register_participant(Signer.generate().address, Role.OEM, "OEM-02")
    lost = Reconciler(service.ctx).check()
    assert [(b.reason, b.leaf_count) for b in lost] == [("root_missing", 4)]
    # Until reconciled, the service still calls them anchored: that is the hole.
    assert _receipt(service, second[0], auditor).status_code == 200

    reconciled = anchorer.reconcile(reanchor=True)
    assert [b.reconciliation_id for b in reconciled] == [1]
    _assert_consistent(service, first + second)

    for n, struct_hash in enumerate(second):
        new = _receipt(service, struct_hash, auditor).json()
        assert new["transactionHash"] != old[struct_hash]["transactionHash"]
        history = service.client.get(f"/v1/records/{struct_hash}/receipts", headers=auditor)
        assert history.status_code == 200
        body = history.json()
        assert body["current"] == new
        assert [s["receipt"] for s in body["superseded"]] == [old[struct_hash]]
        assert body["superseded"][0]["reason"] == "root_missing"
        if n == 0:  # (verifying is ~0.3 s on the in-process chain: one of each suffices)
            assert verify_receipt(None, new, chain, trust).ok
            # The old receipt is kept, and says why it no longer verifies.
            report = verify_receipt(None, old[struct_hash], chain, trust)
            assert report.first_failure.check.value == "block_canonical"
    for struct_hash in first:  # untouched batch, untouched receipts
        body = service.client.get(f"/v1/records/{struct_hash}/receipts", headers=auditor).json()
        assert body["superseded"] == [] and body["current"] is not None

    # The dashboard's record page says so too.
    token = auditor["Authorization"].removeprefix("Bearer ")
    session = service.client.post(
        "/ui/session", json={"accessToken": token}, headers={"Origin": "http://testserver"}
    )
    assert session.status_code == 200
    page = service.client.get(f"/ui/records/{second[0]}")
    assert page.status_code == 200 and 'data-test="reconciliation"' in page.text
    assert "root missing" in page.text
    listed = service.client.get("/v1/reconciliations", headers=auditor).json()
    assert_documented(ReconciliationList, listed)
    events = listed["reconciliations"]
    assert len(events) == 1 and events[0]["leafCount"] == 4
    assert events[0]["lost"]["batchId"] == 2 and events[0]["reanchored"]["batchId"] == 2
    service_view = service.client.get("/v1/checkpoint").json()["service"]
    assert service_view["reconciliations"] == 1 and service_view["reanchoring"] == 0
    assert Reconciler(service.ctx).check() == []  # idempotent: nothing more to do
    assert anchorer.reconcile() == []


def test_new_batches_after_a_rollback_never_share_a_chain_batch_id(service: Service) -> None:
    """After the rollback the anchorer anchors new records first: the chain hands out the lost
    batch's id again. The store must not hold two batches with one id, nor lose either."""
    anchorer, chain = Anchorer(service.ctx), service.chain
    snapshot = chain._tester.take_snapshot()
    lost = _submit(service, 2)
    anchorer.run_once(force=True)
    chain._tester.revert_to_snapshot(snapshot)
    later = _submit(service, 3)
    auditor = service.login(service.parties["auditor"])
    pending = _receipt(service, lost[0], auditor)
    anchorer.run_once(force=True)  # takes chain id 1; withdraws the batch that claimed it
    assert (
        _receipt(service, lost[0], auditor).status_code == 202
    )  # withdrawn: pending, not "anchored"
    assert pending.status_code == 200
    # Withdrawn, not yet anchored again: the published schema says reanchored may be null.
    waiting = service.client.get("/v1/reconciliations", headers=auditor).json()
    assert_documented(ReconciliationList, waiting)
    assert [r["reanchored"] for r in waiting["reconciliations"]] == [None]
    anchorer.run_once(force=True)  # re-anchors the withdrawn batch
    _assert_consistent(service, lost + later)
    again = service.client.get("/v1/reconciliations", headers=auditor).json()
    assert_documented(ReconciliationList, again)
    assert again["reconciliations"][0]["reanchored"]["batchId"] is not None
    with service.ctx.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Reconciliation)) == 1
        assert s.scalar(select(func.count()).select_from(SupersededReceipt)) == 2


def test_a_reset_chain_is_a_loud_503_not_a_400(service: Service) -> None:
    """The chain comes back empty (anvil restarted without its state): the ledger contract is
    gone. Intake, the checkpoint and reconciliation all say so with one code."""
    _submit(service, 1)
    Anchorer(service.ctx).run_once(force=True)
    service.chain._tester.reset_to_genesis()
    # The role follower notices first (its next poll): it keeps the role mirror instead of
    # emptying it, which would refuse every key with a final-looking 403, and flags the state.
    with pytest.raises(LedgerContractMissing):
        service.ctx.follower.sync()
    record = service.inspection(service.parties["supplier2"])
    answer = service.client.post("/v1/records", json=record.model_dump(mode="json"))
    assert answer.status_code == 503, answer.text
    assert error_code(answer) == "ledger_contract_missing"
    assert "Restore the chain" in answer.text
    checkpoint = service.client.get("/v1/checkpoint")
    assert checkpoint.status_code == 503 and error_code(checkpoint) == "ledger_contract_missing"
    try:
        Reconciler(service.ctx).check()
    except LedgerContractMissing as exc:
        assert exc.code == "ledger_contract_missing"
    else:  # pragma: no cover - the assertion is the point
        raise AssertionError("reconciling against a chain without the ledger must raise")
    with service.ctx.sessions() as s:  # and nothing was withdrawn on the strength of it
        assert s.scalar(select(func.count()).select_from(Reconciliation)) == 0


@pytest.mark.anvil
@pytest.mark.slow
def test_anvil_killed_between_state_writes_then_reconciled(tmp_path: Path) -> None:
    """The embedded chain dies by SIGKILL after a confirmed batch but before its next state
    write, restarts from its state file without that batch, and `qledger reconcile` (run as
    an operator runs it) re-anchors it."""
    from api.context import ServiceContext
    from api.main import create_app
    from api.settings import Settings

    reason = _anvil_missing_reason()
    if reason is not None:
        pytest.skip(reason)
    chain_dir = tmp_path / "chain"
    # Only explicit state writes in this test, so the kill falls between two of them for sure.
    local = start_anvil(chain_dir, state_interval=3600)
    try:
        key = dev_private_keys()[0]
        chain = ChainClient.connect(local.rpc_url, private_key=key)
        deployment = chain.deploy()
        data_dir = tmp_path / "data"
        deployment.save(data_dir / "deployment.json")
        cfg = Settings(data_dir=data_dir, rpc_url=local.rpc_url, anchorer_key=key)
        cfg = cfg.model_copy(
            update={"token_secret": SecretStr("t" * 40), "batch_max_seconds": 0.01}
        )
        ctx = ServiceContext.create(cfg, chain=chain)
        supplier = Party(Signer.generate(), "SUP-01", Role.SUPPLIER)
        chain.register_participant(supplier.address, Role.SUPPLIER, "SUP-01")
        ctx.follower.sync()  # intake reads roles from the mirror of the chain's events
        admin = Party(Signer.from_hex(key), "ADMIN", Role.ADMIN)
        service = Service(ctx=ctx, client=TestClient(create_app(ctx=ctx)), chain=chain, admin=admin)
        service.parties["supplier"] = supplier
        anchorer = Anchorer(ctx)
        kept = _submit(service, 3)
        anchorer.run_once(force=True)
        assert local.dump_state()  # a state write: batch 1 is in the file
        lost = _submit(service, 4)
        anchorer.run_once(force=True)  # batch 2 confirmed, receipts served ...
        headers = service.login(admin)
        old = _receipt(service, lost[0], headers).json()
        os.kill(local.pid, signal.SIGKILL)  # ... and the chain dies before writing it
        if local.process is not None:
            local.process.wait(10)
        ctx.engine.dispose()

        local = start_anvil(chain_dir)  # restarts from the state file, at batch 1
        env = {
            **os.environ,
            "QLEDGER_DATA_DIR": str(data_dir),
            "QLEDGER_RPC_URL": local.rpc_url,
            "QLEDGER_ANCHORER_KEY": key,
        }

        def reconcile(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "cli", "reconcile", "--json", *args],
                env=env,
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=120,
            )

        checked = reconcile("--check-only")
        assert checked.returncode == 1, checked.stdout + checked.stderr
        found = json.loads(checked.stdout)["lost"]
        assert [(b["batch"], b["records"], b["reason"]) for b in found] == [(2, 4, "root_missing")]
        done = reconcile()
        assert done.returncode == 0, done.stdout + done.stderr
        assert json.loads(done.stdout)["lost"][0]["reconciliation"] == 1
        assert reconcile("--check-only").returncode == 0  # consistent now

        chain = ChainClient.connect(local.rpc_url, private_key=key, deployment=deployment)
        ctx = ServiceContext.create(cfg, chain=chain)
        service = Service(ctx=ctx, client=TestClient(create_app(ctx=ctx)), chain=chain, admin=admin)
        _assert_consistent(service, kept + lost)
        genesis = chain.block_hash(0)
        assert genesis is not None
        trust = TrustRoot(deployment.chain_id, deployment.ledger, BlockAnchor(0, genesis))
        headers = service.login(admin)
        new = _receipt(service, lost[0], headers).json()
        assert verify_receipt(None, new, chain, trust).ok
        assert not verify_receipt(None, old, chain, trust).ok
        history = service.client.get(f"/v1/records/{lost[0]}/receipts", headers=headers).json()
        assert [s["receipt"] for s in history["superseded"]] == [old]
        ctx.engine.dispose()
    finally:
        stop_anvil(chain_dir)


def test_migration_0004_frees_duplicate_chain_batch_ids(tmp_path: Path) -> None:
    """A store that met a forgetful chain before 0004 holds two batches with one chain batch
    id. The migration keeps it on the newest and clears it on the older, which then fails
    reconciliation (confirmed, unlike the chain) and is re-anchored."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError

    from api.store.db import MIGRATIONS_DIR, make_engine, migrate

    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0003")
    with engine.begin() as conn:
        for n, chain_id in enumerate([1, 2, 2, 3, 2], start=1):
            conn.execute(
                text(
                    "INSERT INTO batches (id, root, leaf_count, status, chain_batch_id, "
                    "attempts, created_at) VALUES (:id, :root, 1, 'confirmed', :chain, 0, "
                    "'2026-01-01')"
                ),
                {"id": n, "root": f"0x{n:064x}", "chain": chain_id},
            )
    migrate(engine)
    with engine.begin() as conn:
        rows = dict(conn.execute(text("SELECT id, chain_batch_id FROM batches")).all())
        assert rows == {1: 1, 2: None, 3: None, 4: 3, 5: 2}
        with pytest.raises(IntegrityError, match="UNIQUE"):
            conn.execute(text("UPDATE batches SET chain_batch_id = 1 WHERE id = 2"))
    engine.dispose()
