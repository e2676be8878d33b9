"""proofs derived on demand: stored per-record Merkle proofs checked, then dropped

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-08 20:40:00

Receipts now derive each record's proof from its batch (the records with that batch_id, in a
StandardMerkleTree: api.batch_trees). Before a stored proof is dropped, the derivation must
reproduce it: for every confirmed batch the records must hash to the batch's stored root and
each stored proof must equal the derived one. If any batch fails, the migration stops (the
transaction rolls back, nothing is dropped) and names the batch: such a store serves receipts
that would change, and an operator must look first. Proofs of records whose batch is not
confirmed (written before a crash, never served) are dropped: the batch writes nothing per
record when it confirms now. The column stays, always NULL.

Downgrade writes the derived proofs back, so revision 0016's code serves the same receipts.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from ledger.merkle import StandardMerkleTree

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The migration's own view of the two tables (the models may change after this revision).
batches = sa.table(
    "batches",
    sa.column("id", sa.Integer),
    sa.column("root", sa.String),
    sa.column("status", sa.String),
)
records = sa.table(
    "records",
    sa.column("struct_hash", sa.String),
    sa.column("batch_id", sa.Integer),
    sa.column("proof", sa.JSON),
)
WRITE_CHUNK = 1000  # proofs written back per statement on downgrade


class StoredProofMismatch(RuntimeError):
    """A confirmed batch whose stored proofs the derivation does not reproduce."""


def _derived(batch_id: int, root: str, hashes: list[str]) -> StandardMerkleTree:
    tree = StandardMerkleTree.of([bytes.fromhex(h[2:]) for h in hashes])
    got = "0x" + tree.root.hex()
    if got != root.lower():
        raise StoredProofMismatch(
            f"batch {batch_id}: its {len(hashes)} records build root {got}, the batch says "
            f"{root}; stored proofs kept, migration 0017 not applied"
        )
    return tree


def _proof(tree: StandardMerkleTree, struct_hash: str) -> list[str]:
    return ["0x" + p.hex() for p in tree.proof(bytes.fromhex(struct_hash[2:]))]


def _confirmed(conn: sa.Connection) -> list[tuple[int, str]]:
    return [
        (int(row.id), str(row.root))
        for row in conn.execute(
            sa.select(batches.c.id, batches.c.root)
            .where(batches.c.status == "confirmed")
            .order_by(batches.c.id)
        )
    ]


def upgrade() -> None:
    conn = op.get_bind()
    for batch_id, root in _confirmed(conn):
        rows = conn.execute(
            sa.select(records.c.struct_hash, records.c.proof).where(records.c.batch_id == batch_id)
        ).all()
        if not rows:
            continue  # no record, no proof to serve or drop
        tree = _derived(batch_id, root, [r.struct_hash for r in rows])
        for r in rows:
            if r.proof is not None and [p.lower() for p in r.proof] != _proof(tree, r.struct_hash):
                raise StoredProofMismatch(
                    f"record {r.struct_hash} of batch {batch_id}: stored proof {r.proof} is not "
                    f"the derived {_proof(tree, r.struct_hash)}; migration 0017 not applied"
                )
    conn.execute(sa.update(records).where(records.c.proof.is_not(None)).values(proof=None))


def downgrade() -> None:
    conn = op.get_bind()
    for batch_id, root in _confirmed(conn):
        hashes = list(
            conn.scalars(sa.select(records.c.struct_hash).where(records.c.batch_id == batch_id))
        )
        if not hashes:
            continue
        tree = _derived(batch_id, root, hashes)
        params = [{"h": h, "p": _proof(tree, h)} for h in hashes]
        statement = (
            sa.update(records)
            .where(records.c.struct_hash == sa.bindparam("h"))
            .values(proof=sa.bindparam("p", type_=sa.JSON))
        )
        for start in range(0, len(params), WRITE_CHUNK):
            conn.execute(statement, params[start : start + WRITE_CHUNK])
