"""thin files: a published credit answer may carry no number (insufficient evidence)

Revision ID: 0009
Revises: 0003
Create Date: 2026-12-07 14:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Issue 16: below the policy's minimum of OEM-side evidence the answer is "insufficient
    # evidence": no score, band "insufficient_evidence" (21 characters).
    with op.batch_alter_table("scores", schema=None) as batch_op:
        batch_op.alter_column("score", existing_type=sa.Double(), nullable=True)
        batch_op.alter_column("band", existing_type=sa.String(length=8), type_=sa.String(length=32))


def downgrade() -> None:
    with op.batch_alter_table("scores", schema=None) as batch_op:
        batch_op.alter_column("band", existing_type=sa.String(length=32), type_=sa.String(length=8))
        batch_op.alter_column("score", existing_type=sa.Double(), nullable=False)
