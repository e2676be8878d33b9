"""genealogy: as-built links (child lot -> parent lot) derived from signed genealogy records

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Issue 19: one row per (child, parent) link, written with the record that states it.
    op.create_table(
        "genealogy_links",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("child", sa.String(length=194), nullable=False),
        sa.Column("parent", sa.String(length=194), nullable=False),
        sa.Column("struct_hash", sa.String(length=66), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("event_time", sa.BigInteger(), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(["struct_hash"], ["records.struct_hash"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("child", "parent", name="uq_genealogy_links_child_parent"),
    )
    # Covering indexes, one per direction: a walk step never reads the table row.
    columns = ["struct_hash", "kind", "event_time", "site"]
    op.create_index(
        "ix_genealogy_links_child_cover", "genealogy_links", ["child", "parent", *columns]
    )
    op.create_index(
        "ix_genealogy_links_parent_cover", "genealogy_links", ["parent", "child", *columns]
    )
    op.create_index(
        op.f("ix_genealogy_links_struct_hash"), "genealogy_links", ["struct_hash"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_genealogy_links_struct_hash"), table_name="genealogy_links")
    op.drop_index("ix_genealogy_links_parent_cover", table_name="genealogy_links")
    op.drop_index("ix_genealogy_links_child_cover", table_name="genealogy_links")
    op.drop_table("genealogy_links")
