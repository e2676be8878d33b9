"""The role mirror: roles changed on chain behind the service's back reach intake through the
follower (and only through it), in chain order, from a persisted cursor, without the chain on
the request path."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, select

from api.context import ServiceContext
from api.main import create_app
from api.roles import RoleMirror
from api.schemas import ServiceStatus
from api.settings import Settings
from api.store.db import make_engine, session_factory
from api.store.models import ChainCursor, RoleEventRow
from ledger.chain import ChainClient
from ledger.keys import Signer
from ledger.records import Role
from tests.api.conftest import Party, Service, make_service
from tests.helpers import assert_documented, error_code


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[Service]:
    service = make_service(tmp_path, "sqlite")
    with service.client:
        yield service
    service.ctx.engine.dispose()


def _submit(svc: Service, party: Party) -> int:
    answer = svc.client.post("/v1/records", json=svc.inspection(party).model_dump(mode="json"))
    if answer.status_code != 202:
        assert answer.status_code == 403 and error_code(answer) == "signer_not_registered"
    return answer.status_code


def test_a_registration_and_a_revocation_made_on_chain_reach_intake_through_the_follower(
    svc: Service,
) -> None:
    # An admin acting on the contract directly, not through the service.
    newcomer = Party(Signer.generate(), "SUP-77", Role.SUPPLIER)
    svc.chain.register_participant(newcomer.address, Role.SUPPLIER, "SUP-77")
    assert svc.ctx.roles.get(newcomer.address) == (None, None)  # not asked of the chain
    assert _submit(svc, newcomer) == 403
    report = svc.ctx.follower.sync()
    assert report.events == 2  # RoleGranted + ParticipantRegistered
    assert svc.ctx.roles.get(newcomer.address) == (Role.SUPPLIER, "SUP-77")
    assert _submit(svc, newcomer) == 202
    svc.chain.revoke_participant(newcomer.address, Role.SUPPLIER)
    svc.ctx.follower.sync()
    assert svc.ctx.roles.get(newcomer.address) == (None, None)
    assert _submit(svc, newcomer) == 403
    # A signed-in session of the revoked key ends as well.
    admin_token = svc.login(svc.admin)
    svc.chain.revoke_role(Role.ADMIN, svc.admin.address)
    svc.ctx.follower.sync()
    answer = svc.client.get("/v1/participants", headers=admin_token)
    assert answer.status_code == 401 and error_code(answer) == "key_revoked"


def test_the_services_own_register_and_revoke_take_effect_at_once(svc: Service) -> None:
    admin = svc.login(svc.admin)
    newcomer = Party(Signer.generate(), "AUD-09", Role.AUDITOR)
    answer = svc.client.post(
        "/v1/participants",
        json={"address": newcomer.address, "role": "AUDITOR", "orgId": "AUD-09"},
        headers=admin,
    )
    assert answer.status_code == 201, answer.text
    # No follower poll in between: the route stored its own transaction's events.
    assert svc.ctx.roles.get(newcomer.address) == (Role.AUDITOR, "AUD-09")
    answer = svc.client.delete(f"/v1/participants/{newcomer.address}", headers=admin)
    assert answer.status_code == 200, answer.text
    assert svc.ctx.roles.get(newcomer.address) == (None, None)
    # Registered again by another admin on chain directly: the service's registry row follows.
    svc.chain.register_participant(newcomer.address, Role.AUDITOR, "AUD-09")
    svc.ctx.follower.sync()
    rows = svc.client.get("/v1/participants", headers=admin).json()["participants"]
    row = next(p for p in rows if p["address"] == newcomer.address)
    assert row["active"] is True and row["revokedAt"] is None
    svc.chain.revoke_participant(newcomer.address, Role.AUDITOR)
    svc.ctx.follower.sync()
    rows = svc.client.get("/v1/participants", headers=admin).json()["participants"]
    row = next(p for p in rows if p["address"] == newcomer.address)
    assert row["active"] is False and row["revokedAt"] is not None
    assert svc.ctx.roles.get(newcomer.address) == (None, None)
    # The follower reading the same events later stores them once.
    svc.ctx.follower.sync()
    with svc.ctx.sessions() as s:
        count = s.scalar(
            select(func.count())
            .select_from(RoleEventRow)
            .where(RoleEventRow.account == newcomer.address)
        )
    assert count == 6  # (granted, registered, revoked) twice


def test_events_stored_out_of_chain_order_fold_in_chain_order(svc: Service) -> None:
    """The service may store a later event (its own revocation) before the follower reaches an
    earlier one (a registration made on chain): the later event must still win."""
    key = Signer.generate()
    svc.chain.register_participant(key.address, Role.OEM, "OEM-05")
    revoke_tx = svc.chain.revoke_participant(key.address, Role.OEM)
    svc.ctx.roles.record(svc.chain.role_events_in(revoke_tx))
    assert svc.ctx.roles.get(key.address) == (None, None)
    svc.ctx.follower.sync()  # now the older grant arrives
    assert svc.ctx.roles.get(key.address) == (None, None)
    # A second process reading the store folds the same way.
    fresh = ServiceContext.create(svc.ctx.settings, chain=svc.chain)
    assert fresh.roles.get(key.address) == (None, None)
    fresh.engine.dispose()


def test_role_history_from_the_mirror_matches_the_contract(svc: Service) -> None:
    key = Signer.generate()
    svc.chain.register_participant(key.address, Role.SUPPLIER, "SUP-31")
    svc.chain.mine(1)
    svc.chain.revoke_participant(key.address, Role.SUPPLIER)
    svc.chain.mine(1)
    svc.chain.register_participant(key.address, Role.SUPPLIER, "SUP-31")
    svc.ctx.follower.sync()
    history = svc.chain.role_history(key.address, Role.SUPPLIER)
    assert svc.ctx.roles.role_history(key.address, Role.SUPPLIER) == history
    assert len(history) == 2 and history[1][1] == 0
    probes = {t + d for interval in history for t in interval if t for d in (-1, 0, 1)}
    for t in sorted(probes):
        assert svc.ctx.roles.had_role_at(Role.SUPPLIER, key.address, t) == svc.chain.had_role_at(
            Role.SUPPLIER, key.address, t
        )
    assert not svc.ctx.roles.had_role_at(Role.OEM, key.address, history[0][0])


def test_a_restart_resumes_from_the_cursor(tmp_path: Path) -> None:
    svc = make_service(tmp_path, "sqlite")
    cursor = svc.ctx.follower.cursor()
    assert cursor is not None and cursor.block_number == svc.chain.block_number()
    svc.chain.mine(5)
    late = Party(Signer.generate(), "SUP-55", Role.SUPPLIER)
    svc.chain.register_participant(late.address, Role.SUPPLIER, "SUP-55")
    svc.ctx.engine.dispose()  # the process goes away

    # A new process on the same store and chain: the mirror is loaded from the store at once
    # (no chain call needed to know the earlier parties) ...
    settings = svc.ctx.settings
    engine = make_engine(settings.db_url)
    stored = RoleMirror(session_factory(engine), settings.roles_refresh_seconds)
    assert stored.get(svc.parties["supplier"].address) == (Role.SUPPLIER, "SUP-01")
    assert stored.get(late.address) == (None, None)
    engine.dispose()
    # ... and its catch-up reads from the block after the cursor, not from the deployment.
    restarted = ServiceContext.create(settings, chain=svc.chain)
    assert restarted.roles.get(late.address) == (Role.SUPPLIER, "SUP-55")
    after = restarted.follower.cursor()
    assert after is not None and after.block_number == svc.chain.block_number()
    svc.chain.mine(1)
    report = restarted.follower.sync()
    assert report.from_block == after.block_number + 1 > svc.ctx.deployment.deployed_block
    assert report.events == 0
    with restarted.sessions() as s:
        total = s.scalar(select(func.count()).select_from(RoleEventRow))
    # deploy's ANCHORER grant, the test ADMIN, 4 parties x 2, the late party x 2, and the
    # deployer's ADMIN grant in the constructor: every event once.
    assert total == 1 + 1 + 1 + 8 + 2
    restarted.engine.dispose()


def test_small_log_ranges_read_everything(tmp_path: Path) -> None:
    svc = make_service(tmp_path, "sqlite", roles_max_block_range=3)
    keys = []
    for i in range(4):
        svc.chain.mine(4)
        key = Signer.generate()
        svc.chain.register_participant(key.address, Role.SUPPLIER, f"SUP-9{i}")
        keys.append(key)
    report = svc.ctx.follower.sync()
    assert report.events == 8 and report.to_block == svc.chain.block_number()
    assert all(svc.ctx.roles.get(k.address)[0] is Role.SUPPLIER for k in keys)
    svc.ctx.engine.dispose()


def test_a_chain_that_forgets_blocks_rebuilds_the_mirror(tmp_path: Path) -> None:
    """A reorganisation deeper than the confirmations (here: the dev chain reverted to a
    snapshot and mined other blocks) drops what the lost blocks said."""
    svc = make_service(tmp_path, "sqlite")
    tester = svc.chain._tester
    snapshot = tester.take_snapshot()
    ghost = Signer.generate()
    svc.chain.register_participant(ghost.address, Role.SUPPLIER, "SUP-66")
    svc.chain.mine(2)
    svc.ctx.follower.sync()
    assert svc.ctx.roles.get(ghost.address)[0] is Role.SUPPLIER
    tester.revert_to_snapshot(snapshot)
    svc.chain.mine(4)  # other blocks at the same heights, and beyond
    real = Signer.generate()
    svc.chain.register_participant(real.address, Role.SUPPLIER, "SUP-67")
    report = svc.ctx.follower.sync()
    assert report.rebuilt
    assert svc.ctx.roles.get(ghost.address) == (None, None)
    assert svc.ctx.roles.get(real.address) == (Role.SUPPLIER, "SUP-67")
    assert svc.ctx.roles.get(svc.parties["oem"].address) == (Role.OEM, "OEM-01")
    svc.ctx.engine.dispose()


def test_status_reports_the_followers_lag(svc: Service) -> None:
    svc.chain.mine(3)
    body = svc.client.get("/v1/status").json()["roles"]
    assert body["lagBlocks"] == 0 and body["cursorBlock"] < svc.chain.block_number()
    svc.ctx.follower.sync()
    answer = svc.client.get("/v1/status").json()
    assert_documented(ServiceStatus, answer)
    body = answer["roles"]
    assert body["cursorBlock"] == svc.chain.block_number() == body["chainTip"]
    assert body["stale"] is False and body["secondsSinceSync"] < 5
    # Before the follower's first read there is no cursor: the published schema says null.
    with svc.ctx.sessions() as s, s.begin():
        s.execute(delete(ChainCursor))
    unread = svc.client.get("/v1/status").json()
    assert_documented(ServiceStatus, unread)
    assert unread["roles"]["cursorBlock"] is None and unread["roles"]["lagBlocks"] is None


# -- a real node, the follower's own thread ----------------------------------------------------


@pytest.mark.anvil
@pytest.mark.slow
def test_on_chain_changes_reach_intake_within_the_stated_bound(
    anvil_chain: ChainClient, tmp_path: Path
) -> None:
    # Many blocks before the follower starts: on anvil --prune-history old state is gone,
    # logs and headers are not, and the follower needs nothing else.
    anvil_chain.mine(300)
    settings = Settings(
        data_dir=tmp_path / "data",
        confirmations=1,
        roles_poll_seconds=0.2,
        roles_refresh_seconds=0.1,
        token_secret="t" * 40,
    )
    ctx = ServiceContext.create(settings, chain=anvil_chain)
    bound = settings.roles_poll_seconds + settings.roles_refresh_seconds
    svc = Service(ctx=ctx, client=TestClient(create_app(ctx=ctx)), chain=anvil_chain, admin=None)  # type: ignore[arg-type]
    halt = threading.Event()
    follower = threading.Thread(target=ctx.follower.run_forever, args=(halt,), daemon=True)
    follower.start()
    try:
        key = Party(Signer.generate(), "SUP-88", Role.SUPPLIER)

        def seen_after(expected: Role | None) -> float:
            start = time.monotonic()
            while ctx.roles.get(key.address)[0] != expected:
                assert time.monotonic() - start < bound + 2.0, "not mirrored within the bound"
                time.sleep(0.02)
            return time.monotonic() - start

        anvil_chain.register_participant(key.address, Role.SUPPLIER, "SUP-88")
        took = seen_after(Role.SUPPLIER)
        with svc.client:
            assert _submit(svc, key) == 202
            anvil_chain.revoke_participant(key.address, Role.SUPPLIER)
            took = max(took, seen_after(None))
            assert _submit(svc, key) == 403
        # One RPC round trip on top of the configured bound, on a 2-core machine.
        print(f"\non-chain role change seen by intake after {took * 1000:.0f} ms (bound {bound} s)")
        assert took < bound + 1.0, took
    finally:
        halt.set()
        follower.join(10)
        ctx.engine.dispose()
