"""quality notifications: each notification's state and its transitions (issue 19)

Revision ID: 0015
Revises: 0011
Create Date: 2026-12-07 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "notifications",
        sa.Column("notification_id", sa.String(length=64), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("sender", sa.String(length=64), nullable=False),
        sa.Column("recipient", sa.String(length=64), nullable=False),
        sa.Column("origin_id", sa.String(length=64), nullable=True),
        sa.Column("depth", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=True),
        sa.Column("deadline", sa.BigInteger(), nullable=True),
        sa.Column("created_hash", sa.String(length=66), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("notification_id"),
    )
    for column in ("sender", "recipient", "origin_id"):
        op.create_index(op.f(f"ix_notifications_{column}"), "notifications", [column])
    op.create_table(
        "notification_events",
        sa.Column("struct_hash", sa.String(length=66), nullable=False),
        sa.Column("notification_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("transition", sa.String(length=16), nullable=False),
        sa.Column("signer_org", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["struct_hash"], ["records.struct_hash"]),
        sa.PrimaryKeyConstraint("struct_hash"),
        sa.UniqueConstraint("notification_id", "seq", name="uq_notification_events_seq"),
    )
    op.create_index(
        op.f("ix_notification_events_notification_id"), "notification_events", ["notification_id"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_notification_events_notification_id"), "notification_events")
    op.drop_table("notification_events")
    for column in ("origin_id", "recipient", "sender"):
        op.drop_index(op.f(f"ix_notifications_{column}"), "notifications")
    op.drop_table("notifications")
