"""one published score per (supplier, policy, day): policy, day and superseded_by on scores

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 19:05:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Issue 16: a later reading of the same UTC day supersedes the earlier one. Rows published
    # before this revision get the day of their as_of (integer division on both dialects) and
    # policy "" (the one default policy of that time); history shows each such day's newest.
    with op.batch_alter_table("scores", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("policy", sa.String(length=80), nullable=False, server_default="")
        )
        batch_op.add_column(sa.Column("day", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("superseded_by", sa.String(length=66), nullable=True))
        batch_op.create_index("ix_scores_supplier_policy_day", ["supplier_id", "policy", "day"])
    op.execute("UPDATE scores SET day = as_of / 86400")


def downgrade() -> None:
    with op.batch_alter_table("scores", schema=None) as batch_op:
        batch_op.drop_index("ix_scores_supplier_policy_day")
        batch_op.drop_column("superseded_by")
        batch_op.drop_column("day")
        batch_op.drop_column("policy")
