"""Receipts whose Merkle proofs are derived from the stored batch (api.batch_trees), and
migration 0017, which drops the per-record proofs the anchorer used to store.

The adversaries: a store from before 0017 (its stored proofs must be exactly what the
derivation now serves, checked against proofs the old anchorer wrote, not recomputed here);
a damaged store (a stored proof, or a batch's membership, that no longer matches its root),
which the migration must refuse and the service must not turn into a wrong receipt; and the
edges of a batch (one leaf, the full cap).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from alembic import command
from alembic.config import Config
from fastapi.testclient import TestClient
from sqlalchemy import Engine, insert, select, text, update

import api.batch_trees as batch_trees
from api.anchorer import Anchorer
from api.batch_trees import BatchLeavesMismatch, batch_tree, record_proof
from api.store.db import MIGRATIONS_DIR
from api.store.models import Batch, Record
from ledger.merkle import StandardMerkleTree, leaf_hash, verify_proof
from ledger.verify import verify_receipt
from tests.api.conftest import Service, _database_urls, make_service
from tests.helpers import error_code

# Written by the pre-0017 anchorer (api/anchorer.py ``_write_receipts`` at c701e0c: one stored
# proof per record) for 7 records anchored with batch_max_leaves=6: a full batch of 6 and one
# of 1. Each batch: its root, and every record's stored proof.
GOLDEN: list[tuple[str, dict[str, list[str]]]] = [
    (
        "0x0e870c1ea173c0044d7af4140a63394969fa9a59cbc34f1851057afa1f6f3e6d",
        {
            "0x2cc915a988b1a1f487ac696709d9c5adb0aeb8f41499da4aac5155fca18cb68b": [
                "0x80d0bc49e0a5376c91b0ca082dfe608203961fc9c388ba9726f88b1537007278",
                "0x8519ff1bfc6932cceb10ed7d2e9508596def55fd3f2757571863dcc5edb92c54",
                "0x213e3c3047c2509513ece2435e4f95b92c1a1f3902e9fffe7cffa09a62056680",
            ],
            "0x64a4d01d251318d7180142f569a2e1cb2be5c00e66cc7cbc426f4ceb610f935c": [
                "0xa1c3093d7d6166132dbbf8e227b5956c1992d93dd503da13f79dbdb604c46da1",
                "0xc88e88317283d3e223156bce4fa8603828cb8c485402b403dd698f35ac4ebd10",
            ],
            "0x660dce5c677a3a14f706d9ff8e55341a7e93fd790c36687b8fa8a3ec92c9a8f4": [
                "0x991d50db20316dc81971150c09d4d4dda210d1ddbbcf277696f27c6d15b53b61",
                "0x8519ff1bfc6932cceb10ed7d2e9508596def55fd3f2757571863dcc5edb92c54",
                "0x213e3c3047c2509513ece2435e4f95b92c1a1f3902e9fffe7cffa09a62056680",
            ],
            "0xd5aa4256e2341a61effc8b9fb95de3c7f49da57e9bb4ffe66b532c7f2afb4248": [
                "0x2cc8efa10c0291c611c5a6802c20d47c76b038d1a54586c8c9148ec1738123b6",
                "0x072ebcbc2956deb49ec85780ab235797e9b322475a8416cec7c9ed94ae401e44",
                "0x213e3c3047c2509513ece2435e4f95b92c1a1f3902e9fffe7cffa09a62056680",
            ],
            "0xe138deff0cd81d517cf548e76061cbf5fa3f56bdcbd5dde3900134df7a94545e": [
                "0x481f46832af9c124136b26876cc4912535d62ec8470d3fca34f2162f5c16ca71",
                "0x072ebcbc2956deb49ec85780ab235797e9b322475a8416cec7c9ed94ae401e44",
                "0x213e3c3047c2509513ece2435e4f95b92c1a1f3902e9fffe7cffa09a62056680",
            ],
            "0xee28f028fe7285000cb6b08052f69e550ed1b47d36d201b3f6faac09c75dc4a9": [
                "0xbf7d3a94ee676086a2e37f30ca1e526f14e212ddd0886450c231baf13303b005",
                "0xc88e88317283d3e223156bce4fa8603828cb8c485402b403dd698f35ac4ebd10",
            ],
        },
    ),
    (
        "0x5c2d69b292da58e91a593bd6e8057b0fe28c065eddc7445b12f5c048735b0f53",
        {
            "0x8a2aa861dccee830839be8fe8e6bee7dc7cb38159b7392f8f0714a987b61289f": [],
        },
    ),
]


@pytest.fixture(params=_database_urls())
def six(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Service]:
    """A service whose batches close at 6 leaves (SQLite, and PostgreSQL where configured)."""
    svc = make_service(tmp_path, request.param, batch_max_leaves=6)
    batch_trees.clear_cache()
    with svc.client:
        yield svc
    svc.ctx.engine.dispose()
    batch_trees.clear_cache()


def _migrate(engine: Engine, revision: str, *, down: bool = False) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)


def _revision(engine: Engine) -> str:
    with engine.connect() as conn:
        return str(conn.execute(text("SELECT version_num FROM alembic_version")).scalar())


def _stored_proofs(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        return {
            h: p for h, p in conn.execute(select(Record.struct_hash, Record.proof)) if p is not None
        }


def _insert_pre_0017(engine: Engine, golden: list[tuple[str, dict[str, list[str]]]]) -> None:
    """Rows as the pre-0017 service left them: confirmed batches, records with stored proofs
    (the record fields other than the hash do not enter the tree)."""
    with engine.begin() as conn:
        for n, (root, proofs) in enumerate(golden, start=1):
            conn.execute(
                insert(Batch).values(
                    id=n,
                    root=root,
                    leaf_count=len(proofs),
                    status="confirmed",
                    chain_batch_id=n,
                    tx_hash="0x" + f"{n:064x}",
                    block_number=10 + n,
                    block_hash="0x" + f"{n + 100:064x}",
                    block_timestamp=1_700_000_000 + n,
                    attempts=0,
                )
            )
            for i, (struct_hash, proof) in enumerate(proofs.items()):
                conn.execute(
                    insert(Record).values(
                        struct_hash=struct_hash,
                        signer="0x" + "11" * 20,
                        signer_role="SUPPLIER",
                        subject="SUP-01",
                        kind="inspection",
                        part_number="P-1",
                        lot_id=f"L-{n}-{i}",
                        event_time=1_700_000_000,
                        signed_at=1_700_000_000,
                        quantity=50,
                        defects=0,
                        nonce=n * 100 + i,
                        salt="0x" + "22" * 32,
                        payload_hash="0x" + "33" * 32,
                        payload={},
                        signature="0x" + "44" * 65,
                        chain_id=31337,
                        contract="0x" + "55" * 20,
                        batch_id=n,
                        proof=proof,
                    )
                )


def _pre_0017_store(tmp_path: Path, golden: list[tuple[str, dict[str, list[str]]]]) -> Service:
    svc = make_service(tmp_path, "sqlite")
    _migrate(svc.ctx.engine, "0016", down=True)
    _insert_pre_0017(svc.ctx.engine, golden)
    batch_trees.clear_cache()
    return svc


def test_the_derived_proofs_are_the_proofs_the_old_anchorer_stored(tmp_path: Path) -> None:
    svc = _pre_0017_store(tmp_path, GOLDEN)
    engine = svc.ctx.engine
    assert len(_stored_proofs(engine)) == 7  # the one-leaf batch's [] is stored too
    _migrate(engine, "head")
    assert _revision(engine) != "0016"
    assert _stored_proofs(engine) == {}  # dropped: nothing per record any more
    with svc.ctx.sessions() as s:
        batches = {b.root: b for b in s.scalars(select(Batch))}
    for root, proofs in GOLDEN:
        for struct_hash, proof in proofs.items():
            assert record_proof(svc.ctx, batches[root], struct_hash) == proof
    # The one-leaf batch: its root is the leaf itself, its proof empty.
    (lone,) = GOLDEN[1][1]
    assert GOLDEN[1][0] == "0x" + leaf_hash(bytes.fromhex(lone[2:])).hex()
    svc.ctx.engine.dispose()


def test_migrated_store_serves_identical_receipts(six: Service) -> None:
    """Receipts served before and after the stored proofs go (downgrade writes them back as
    revision 0016 kept them, upgrade checks and drops them): byte-for-byte the same."""
    svc = six
    supplier = svc.parties["supplier"]
    hashes = []
    for _ in range(7):
        answer = svc.client.post(
            "/v1/records", json=svc.inspection(supplier).model_dump(mode="json")
        )
        assert answer.status_code == 202, answer.text
        hashes.append(answer.json()["structHash"])
    Anchorer(svc.ctx).run_once(force=True)
    auditor = svc.login(svc.parties["auditor"])

    def served() -> dict[str, bytes]:
        out = {}
        for h in hashes:
            answer = svc.client.get(f"/v1/records/{h}/receipt", headers=auditor)
            assert answer.status_code == 200, answer.text
            out[h] = answer.content
        return out

    before = served()
    engine = svc.ctx.engine
    _migrate(engine, "0016", down=True)
    stored = _stored_proofs(engine)
    assert stored == {h: orjson.loads(before[h])["proof"] for h in hashes}
    _migrate(engine, "head")
    assert _stored_proofs(engine) == {}
    batch_trees.clear_cache()  # a restarted service: nothing cached
    assert served() == before


@pytest.mark.parametrize("damage", ["proof", "membership"])
def test_migration_refuses_a_store_whose_proofs_the_batch_does_not_give(
    tmp_path: Path, damage: str
) -> None:
    """A damaged store: one stored proof altered, or one record moved out of its batch. The
    migration stops before dropping anything (one transaction) and names the batch."""
    root, proofs = GOLDEN[0]
    damaged = dict(proofs)
    first = next(iter(damaged))
    if damage == "proof":
        damaged[first] = ["0x" + "ab" * 32, *damaged[first][1:]]
    svc = _pre_0017_store(tmp_path, [(root, damaged), GOLDEN[1]])
    engine = svc.ctx.engine
    if damage == "membership":
        with engine.begin() as conn:
            conn.execute(update(Record).where(Record.struct_hash == first).values(batch_id=2))
    kept = _stored_proofs(engine)
    with pytest.raises(RuntimeError, match=r"batch [12]") as raised:
        _migrate(engine, "head")
    assert type(raised.value).__name__ == "StoredProofMismatch"
    assert _revision(engine) == "0016"
    assert _stored_proofs(engine) == kept  # nothing dropped
    svc.ctx.engine.dispose()


def test_a_batch_of_one_leaf_and_a_full_batch(tmp_path: Path) -> None:
    """batch_max_leaves records and one more: a full batch and a batch of one. Every receipt's
    derived proof folds to its batch root, the single leaf's proof is empty, and both verify
    against the chain. The anchorer builds one tree per batch (at claim), no more."""
    svc = make_service(tmp_path, "sqlite", batch_max_leaves=8)
    batch_trees.clear_cache()
    supplier = svc.parties["supplier"]
    with svc.client:
        signed = {}
        for _ in range(9):
            record = svc.inspection(supplier)
            answer = svc.client.post("/v1/records", json=record.model_dump(mode="json"))
            assert answer.status_code == 202, answer.text
            signed[answer.json()["structHash"]] = record
        built: list[int] = []
        original = StandardMerkleTree.of.__func__  # type: ignore[attr-defined]

        def counting(cls: type[StandardMerkleTree], values: Any) -> StandardMerkleTree:
            built.append(len(values))
            return original(cls, values)  # type: ignore[no-any-return]

        StandardMerkleTree.of = classmethod(counting)  # type: ignore[method-assign,assignment]
        try:
            outcomes = Anchorer(svc.ctx).run_once(force=True)
        finally:
            StandardMerkleTree.of = classmethod(original)  # type: ignore[method-assign,assignment]
        assert [o.leaf_count for o in outcomes] == [8, 1]
        assert built == [8, 1]
        auditor = svc.login(svc.parties["auditor"])
        receipts = {
            h: svc.client.get(f"/v1/records/{h}/receipt", headers=auditor).json() for h in signed
        }
        for h, receipt in receipts.items():
            proof = [bytes.fromhex(p[2:]) for p in receipt["proof"]]
            assert verify_proof(bytes.fromhex(receipt["root"][2:]), bytes.fromhex(h[2:]), proof)
        (lone,) = [r for r in receipts.values() if r["leafCount"] == 1]
        assert (
            lone["proof"] == []
            and lone["root"] == "0x" + leaf_hash(bytes.fromhex(lone["structHash"][2:])).hex()
        )
        full = next(r for r in receipts.values() if r["leafCount"] == 8)
        for receipt in (lone, full):
            report = verify_receipt(signed[receipt["structHash"]], receipt, svc.chain)
            assert report.ok, report.to_json()
    svc.ctx.engine.dispose()


def test_a_batch_whose_records_no_longer_build_its_root_serves_no_receipt(
    six: Service,
) -> None:
    """A damaged store: one record of a confirmed batch loses its batch. The others' proofs
    would no longer reach the anchored root, so none is served (an internal error, logged),
    and no wrong tree is cached for later requests."""
    svc = six
    supplier = svc.parties["supplier"]
    hashes = [
        svc.client.post(
            "/v1/records", json=svc.inspection(supplier).model_dump(mode="json")
        ).json()["structHash"]
        for _ in range(3)
    ]
    Anchorer(svc.ctx).run_once(force=True)
    with svc.ctx.engine.begin() as conn:
        conn.execute(update(Record).where(Record.struct_hash == hashes[0]).values(batch_id=None))
    auditor = svc.login(svc.parties["auditor"])
    raw = TestClient(svc.client.app, raise_server_exceptions=False)  # as a client sees it
    answer = raw.get(f"/v1/records/{hashes[1]}/receipt", headers=auditor)
    assert answer.status_code == 500 and error_code(answer) == "internal_error"
    assert "proof" not in answer.text
    with svc.ctx.sessions() as s:
        batch = s.scalars(select(Batch)).one()
    with pytest.raises(BatchLeavesMismatch):
        batch_tree(svc.ctx, batch)
    assert batch.root not in batch_trees._trees


def test_the_tree_cache_holds_a_bounded_number_of_leaves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four 4-leaf batches through a cache bounded at 10 leaves: it keeps the two most
    recently used trees (8 leaves), and a tree asked for again is built again, the same."""
    svc = make_service(tmp_path, "sqlite", batch_max_leaves=4)
    batch_trees.clear_cache()
    monkeypatch.setattr(batch_trees, "MAX_CACHED_LEAVES", 10)
    supplier = svc.parties["supplier"]
    with svc.client:
        for _ in range(16):
            answer = svc.client.post(
                "/v1/records", json=svc.inspection(supplier).model_dump(mode="json")
            )
            assert answer.status_code == 202
        Anchorer(svc.ctx).run_once(force=True)
        with svc.ctx.sessions() as s:
            batches = list(s.scalars(select(Batch).order_by(Batch.id)))
        assert [b.leaf_count for b in batches] == [4, 4, 4, 4]
        first = batch_tree(svc.ctx, batches[0])
        for b in batches[1:]:
            batch_tree(svc.ctx, b)
        assert list(batch_trees._trees) == [batches[2].root, batches[3].root]
        assert batch_trees._held == 8
        again = batch_tree(svc.ctx, batches[0])
        assert again is not first and again.tree == first.tree
        assert list(batch_trees._trees) == [batches[3].root, batches[0].root]
    svc.ctx.engine.dispose()
