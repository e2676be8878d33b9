"""Read-only sessions (api.store.db.read_session_factory) and the anchorer's claim, which now
reads outside its write transaction (issue 21).

On SQLite a read-only session must neither take nor wait for the one write lock, must see only
committed rows, and must refuse to write; the connection it used must write again in an
ordinary session. A claim whose leaves are taken by someone else between its read and its
write must claim nothing: a leaf stays in exactly one batch."""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

import api.anchorer
from api.anchorer import Anchorer
from api.store.models import Batch, Outbox, RevokedToken
from tests.api.conftest import Service

# Long enough for a read to finish on a loaded 2-core machine, far below SQLite's 30 s busy
# timeout, which a read queued behind the lock would wait out.
READ_DEADLINE_SECONDS = 10.0


def test_a_read_does_not_wait_for_a_held_write_lock(service: Service) -> None:
    if service.ctx.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's single write lock")
    with service.ctx.sessions() as s, s.begin():
        s.add(RevokedToken(jti="committed", expires_at=2**40))
    holder = sqlite3.connect(service.ctx.settings.data_dir / "qledger.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock, mid-transaction
    holder.execute("INSERT INTO revoked_tokens (jti, expires_at) VALUES ('uncommitted', 1)")
    seen: list[Any] = []

    def read() -> None:
        with service.ctx.read_sessions() as s:
            seen.append(sorted(s.scalars(select(RevokedToken.jti))))

    try:
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(READ_DEADLINE_SECONDS)
        assert not reader.is_alive(), "a read-only session queued behind the write lock"
        assert seen == [["committed"]]  # its snapshot: the other writer's row is not there
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a_read_only_session_refuses_to_write_and_its_connection_writes_again(
    service: Service,
) -> None:
    if service.ctx.engine.dialect.name != "sqlite":
        pytest.skip("query_only is SQLite's")
    with (
        pytest.raises(OperationalError, match="readonly"),
        service.ctx.read_sessions() as s,
        s.begin(),
    ):
        s.add(RevokedToken(jti="sneaked", expires_at=2**40))
    with service.ctx.sessions() as s, s.begin():  # the same pooled connection, writing again
        s.add(RevokedToken(jti="allowed", expires_at=2**40))
    with service.ctx.read_sessions() as s:
        assert list(s.scalars(select(RevokedToken.jti))) == ["allowed"]


def test_reads_answer_on_either_store(service: Service) -> None:
    stored = service.submit_inspections(2)
    with service.ctx.read_sessions() as s:
        assert s.scalar(select(func.count()).select_from(Outbox)) == len(stored)
    # The role mirror refreshes through them, and sign-in (its token check) reads through them.
    service.ctx.roles.refresh()
    supplier = service.parties["supplier"]
    assert service.ctx.roles.get(supplier.address)[1] == supplier.org
    headers = service.login(supplier)
    assert service.client.get(f"/v1/records/{stored[0]}", headers=headers).status_code == 200


def test_a_claim_whose_leaves_are_taken_meanwhile_claims_nothing(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two claimers read the same unclaimed leaves; the second one writes first. The first
    must then claim nothing (no batch row, no leaf moved), and every leaf is in one batch."""
    stored = service.submit_inspections(5)
    first, rival = Anchorer(service.ctx), Anchorer(service.ctx)
    real_tree_of = api.anchorer.tree_of
    raced: list[int | None] = []

    def tree_of_with_a_rival(hashes: list[str]) -> Any:
        if not raced:  # between the first claimer's read and its write
            raced.append(None)
            raced[0] = rival._claim(force=True)
        return real_tree_of(hashes)

    monkeypatch.setattr(api.anchorer, "tree_of", tree_of_with_a_rival)
    assert first._claim(force=True) is None
    assert raced[0] is not None
    with service.ctx.read_sessions() as s:
        batches = list(s.scalars(select(Batch)))
        assert [(b.id, b.leaf_count) for b in batches] == [(raced[0], len(stored))]
        claimed = {h: b for h, b in s.execute(select(Outbox.struct_hash, Outbox.batch_id))}
    assert claimed == dict.fromkeys(stored, raced[0])
    # Nothing is left behind: the rival's batch is anchored and confirmed as usual.
    monkeypatch.setattr(api.anchorer, "tree_of", real_tree_of)
    outcomes = Anchorer(service.ctx).run_once(force=True)
    assert [(o.batch_id, o.leaf_count) for o in outcomes] == [(raced[0], len(stored))]
