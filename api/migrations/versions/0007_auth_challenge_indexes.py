"""indexes for purging sign-in challenges (expiry) and capping them per account

Revision ID: 0007
Revises: 0003
Create Date: 2026-12-07 14:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        op.f("ix_auth_challenges_expires_at"), "auth_challenges", ["expires_at"], unique=False
    )
    op.create_index(
        op.f("ix_auth_challenges_address"), "auth_challenges", ["address"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_auth_challenges_address"), table_name="auth_challenges")
    op.drop_index(op.f("ix_auth_challenges_expires_at"), table_name="auth_challenges")
