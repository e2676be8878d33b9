"""reconciliation: unique chain batch ids, anchoring block hashes, lost batches, old receipts

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 14:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A store that met a forgetful chain before this revision may hold two batches with one
    # chain batch id (the chain handed the lost ids out again). Keep the id on the newest such
    # batch, which the chain holds under it if any does; the older ones lose it, and the
    # reconciler, finding them confirmed but unlike the chain, re-anchors them.
    op.execute(
        """
        UPDATE batches SET chain_batch_id = NULL
        WHERE chain_batch_id IS NOT NULL AND id < (
            SELECT MAX(b2.id) FROM batches b2 WHERE b2.chain_batch_id = batches.chain_batch_id
        )
        """
    )
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("block_hash", sa.String(length=66), nullable=True))
        batch_op.create_unique_constraint("uq_batches_chain_batch_id", ["chain_batch_id"])

    op.create_table(
        "reconciliations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("root", sa.String(length=66), nullable=False),
        sa.Column("leaf_count", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("lost_chain_batch_id", sa.BigInteger(), nullable=True),
        sa.Column("lost_tx_hash", sa.String(length=66), nullable=True),
        sa.Column("lost_block_number", sa.BigInteger(), nullable=True),
        sa.Column("lost_block_hash", sa.String(length=66), nullable=True),
        sa.Column("detected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("new_chain_batch_id", sa.BigInteger(), nullable=True),
        sa.Column("new_tx_hash", sa.String(length=66), nullable=True),
        sa.Column("reanchored_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["batch_id"], ["batches.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_reconciliations_batch_id"), "reconciliations", ["batch_id"], unique=False
    )
    op.create_table(
        "superseded_receipts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("struct_hash", sa.String(length=66), nullable=False),
        sa.Column("reconciliation_id", sa.Integer(), nullable=False),
        sa.Column("receipt", sa.JSON(), nullable=False),
        sa.Column("superseded_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["struct_hash"], ["records.struct_hash"]),
        sa.ForeignKeyConstraint(["reconciliation_id"], ["reconciliations.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_superseded_receipts_struct_hash"),
        "superseded_receipts",
        ["struct_hash"],
        unique=False,
    )
    op.create_index(
        op.f("ix_superseded_receipts_reconciliation_id"),
        "superseded_receipts",
        ["reconciliation_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(
        op.f("ix_superseded_receipts_reconciliation_id"), table_name="superseded_receipts"
    )
    op.drop_index(op.f("ix_superseded_receipts_struct_hash"), table_name="superseded_receipts")
    op.drop_table("superseded_receipts")
    op.drop_index(op.f("ix_reconciliations_batch_id"), table_name="reconciliations")
    op.drop_table("reconciliations")
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_constraint("uq_batches_chain_batch_id", type_="unique")
        batch_op.drop_column("block_hash")
