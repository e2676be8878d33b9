"""transparency log: entries, signed checkpoints, witness cosignatures

Revision ID: 0005
Revises: 0003
Create Date: 2026-12-07 14:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "log_entries",
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("ref", sa.String(length=66), nullable=False),
        sa.Column("data", sa.String(length=140), nullable=False),
        sa.Column("leaf_hash", sa.String(length=66), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("idx"),
        sa.UniqueConstraint("data", name="uq_log_entries_data"),
    )
    op.create_index("ix_log_entries_ref", "log_entries", ["ref"], unique=False)
    op.create_table(
        "log_checkpoints",
        sa.Column("size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("root", sa.String(length=66), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("size"),
    )
    op.create_table(
        "log_cosignatures",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("vkey", sa.String(length=300), nullable=False),
        sa.Column("line", sa.Text(), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["size"], ["log_checkpoints.size"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("size", "vkey", name="uq_log_cosignatures_size_vkey"),
    )
    op.create_index(op.f("ix_log_cosignatures_size"), "log_cosignatures", ["size"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_log_cosignatures_size"), table_name="log_cosignatures")
    op.drop_table("log_cosignatures")
    op.drop_table("log_checkpoints")
    op.drop_index("ix_log_entries_ref", table_name="log_entries")
    op.drop_table("log_entries")
