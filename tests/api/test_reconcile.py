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
from api.batch_trees import record_proof
from api.schemas import ReconciliationList
from api.store.models import Batch, Outbox, Reconciliation, Record, SupersededReceipt
from ledger.chain import ChainClient
from ledger.chain.local import dev_private_keys, start_anvil, stop_anvil
from ledger.errors import ChainUnavailable, LedgerContractMissing
from ledger.keys import Signer
from ledger.merkle import verify_proof
from ledger.records import Role
from ledger.trust import BlockAnchor, TrustRoot
from ledger.verify import verify_receipt
from tests.api.conftest import Party, Service
from tests.conftest import _anvil_missing_reason
from tests.helpers import ROOT, assert_documented, error_code


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
        assert batch.status == "confirmed"
        # Its proof, derived from the batch's records, folds to the root the chain holds.
        proof = [bytes.fromhex(p[2:]) for p in record_proof(service.ctx, batch, struct_hash)]
        assert verify_proof(bytes.fromhex(batch.root[2:]), bytes.fromhex(struct_hash[2:]), proof)
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
    first = service.submit_inspections(3)
    anchorer.run_once(force=True)
    snapshot = chain._tester.take_snapshot()
    second = service.submit_inspections(4)
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
    lost = service.submit_inspections(2)
    anchorer.run_once(force=True)
    chain._tester.revert_to_snapshot(snapshot)
    later = service.submit_inspections(3)
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


def test_an_in_flight_batch_whose_transaction_the_chain_lost_frees_its_id(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batch A is sent and mined, and the node dies while A waits for its confirmations; the
    chain comes back without A's transaction. Another worker's batch B is then anchored first
    and gets A's on-chain id. A never had a receipt, so there is nothing to withdraw: A goes
    back to built, B confirms, and A is sent again under a new id."""
    anchorer, chain = Anchorer(service.ctx), service.chain
    snapshot = chain._tester.take_snapshot()
    first = service.submit_inspections(2)
    real_wait = chain.wait_for_confirmations

    def node_dies(tx_hash: str, confirmations: int, timeout: float = 60) -> int:
        raise ChainUnavailable("the node went away while the batch waited")

    monkeypatch.setattr(chain, "wait_for_confirmations", node_dies)
    with pytest.raises(ChainUnavailable):
        anchorer.run_once(force=True)
    monkeypatch.setattr(chain, "wait_for_confirmations", real_wait)
    with service.ctx.sessions() as s:
        (a,) = s.scalars(select(Batch)).all()
        assert (a.status, a.chain_batch_id) == ("anchored", 1)
    chain._tester.revert_to_snapshot(snapshot)  # the chain forgets A's transaction
    chain.register_participant(Signer.generate().address, Role.OEM, "OEM-02")
    second = service.submit_inspections(3)
    b = anchorer._claim(force=True)  # B, in a worker that got ahead of A's
    assert b is not None
    assert anchorer._finish(b).chain_batch_id == 1
    with service.ctx.sessions() as s:
        reset = s.get(Batch, a.id)
        assert reset is not None and (reset.status, reset.chain_batch_id) == ("built", None)
        assert s.scalar(select(func.count()).select_from(Reconciliation)) == 0
    assert [o.batch_id for o in anchorer.run_once(force=True)] == [a.id]  # A sent again
    _assert_consistent(service, first + second)


def test_a_reset_chain_is_a_loud_503_not_a_400(service: Service) -> None:
    """The chain comes back empty (anvil restarted without its state): the ledger contract is
    gone. Intake, the checkpoint and reconciliation all say so with one code."""
    service.submit_inspections(1)
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
        kept = service.submit_inspections(3)
        anchorer.run_once(force=True)
        assert local.dump_state()  # a state write: batch 1 is in the file
        lost = service.submit_inspections(4)
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


@pytest.mark.anvil
@pytest.mark.slow
def test_chain_restart_forgets_confirmed_and_in_flight_batches(tmp_path: Path) -> None:
    """The pipelined anchorer runs (several batches in flight, 1 s blocks, 3 confirmations)
    when the chain dies by SIGKILL and comes back from an older state file: it has forgotten
    confirmed batches (receipts already served) and batches in flight (sent, mined, not yet
    confirmed). Without anyone stepping in, the running anchorer withdraws the confirmed ones
    (their receipts kept as superseded), sends the in-flight ones again, and in the end every
    record has exactly one current receipt, which `qledger verify-receipts` verifies."""
    import threading
    import time

    from api.context import ServiceContext
    from api.main import create_app
    from api.settings import Settings
    from tests.api.receipt_tool import verify_with_cli

    reason = _anvil_missing_reason()
    if reason is not None:
        pytest.skip(reason)
    chain_dir = tmp_path / "chain"
    local = start_anvil(chain_dir, block_time=1, state_interval=3600)
    stop = threading.Event()
    worker: threading.Thread | None = None
    try:
        key = dev_private_keys()[0]
        chain = ChainClient.connect(local.rpc_url, private_key=key)
        deployment = chain.deploy()
        data_dir = tmp_path / "data"
        deployment.save(data_dir / "deployment.json")
        supplier = Party(Signer.generate(), "SUP-01", Role.SUPPLIER)
        chain.register_participant(supplier.address, Role.SUPPLIER, "SUP-01")
        cfg = Settings(
            data_dir=data_dir,
            rpc_url=local.rpc_url,
            anchorer_key=key,
            token_secret=SecretStr("t" * 40),
            batch_max_leaves=4,
            batch_max_seconds=0.2,
            confirmations=3,  # each batch waits ~2 blocks after its own: in flight that long
            reconcile_seconds=1.0,
            retry_max_seconds=1.0,
        )
        ctx = ServiceContext.create(cfg)  # the production path: HTTP to anvil, 10 s timeout
        ctx.follower.sync()
        admin = Party(Signer.from_hex(key), "ADMIN", Role.ADMIN)
        service = Service(ctx=ctx, client=TestClient(create_app(ctx=ctx)), chain=chain, admin=admin)
        service.parties["supplier"] = supplier
        anchorer = Anchorer(ctx)
        assert anchorer.max_in_flight > 1
        worker = threading.Thread(target=anchorer.run_forever, args=(stop,), daemon=True)
        worker.start()
        headers = service.login(admin)

        def batches() -> list[tuple[int, str]]:
            with ctx.sessions() as s:
                return [(b.id, b.status) for b in s.scalars(select(Batch).order_by(Batch.id))]

        def wait_until(what: str, ready: Any, timeout: float = 150) -> None:
            deadline = time.monotonic() + timeout
            while not ready():
                assert time.monotonic() < deadline, f"{what}: {batches()}"
                time.sleep(0.05)

        def all_confirmed() -> bool:
            with ctx.sessions() as s:
                waiting = s.scalar(select(func.count()).select_from(Outbox))
            return not waiting and all(status == "confirmed" for _, status in batches())

        kept = service.submit_inspections(8)
        wait_until("kept confirmed", all_confirmed)
        assert local.dump_state()  # the state file holds these batches
        lost = service.submit_inspections(8)
        wait_until("lost confirmed", all_confirmed)
        old = {h: _receipt(service, h, headers).json() for h in lost}
        assert all("proof" in r for r in old.values())
        flying = service.submit_inspections(12)
        # Kill the chain while batches are sent (their transactions mined) but not confirmed.
        wait_until(
            "a batch in flight",
            lambda: any(status == "anchored" for _, status in batches()),
        )
        os.kill(local.pid, signal.SIGKILL)
        if local.process is not None:
            local.process.wait(10)
        in_flight = [b for b, status in batches() if status != "confirmed"]
        assert in_flight, batches()
        with ctx.sessions() as s:  # receipts issued since the state file: the chain forgets them
            issued = set(
                s.scalars(
                    select(Record.struct_hash)
                    .join(Batch, Batch.id == Record.batch_id)
                    .where(Batch.status == "confirmed", Record.struct_hash.not_in(kept))
                )
            )
        assert set(lost) <= issued
        local = start_anvil(chain_dir, block_time=1, state_interval=3600)  # same port
        # new batches take the on-chain ids the lost ones held
        later = service.submit_inspections(4)
        everything = kept + lost + flying + later
        wait_until("all re-anchored", lambda: all_confirmed() and not Reconciler(ctx).check())
        stop.set()
        worker.join(30)
        _assert_consistent(service, everything)

        with ctx.sessions() as s:
            reasons = {r.batch_id: r.reason for r in s.scalars(select(Reconciliation))}
            superseded = {r.struct_hash for r in s.scalars(select(SupersededReceipt))}
        assert superseded == issued  # only receipts that were issued are superseded
        assert set(reasons.values()) <= {"root_missing", "batch_id_mismatch"}
        current = []
        for h in everything:
            history = service.client.get(f"/v1/records/{h}/receipts", headers=headers).json()
            assert history["current"] is not None, h
            withdrawn = [x["receipt"] for x in history["superseded"]]
            assert len(withdrawn) == (h in issued), h
            if h in old:
                assert withdrawn == [old[h]]
            current.append(history["current"])
        verdicts = verify_with_cli(current, local.rpc_url, deployment, tmp_path)
        assert [v for v in verdicts if not v["ok"]] == []
        assert sorted(v["structHash"] for v in verdicts) == sorted(everything)
        stale = verify_with_cli(list(old.values()), local.rpc_url, deployment, tmp_path)
        assert not any(v["ok"] for v in stale)  # the withdrawn receipts no longer verify
        ctx.engine.dispose()
    finally:
        stop.set()
        if worker is not None:
            worker.join(30)
        stop_anvil(chain_dir)
