"""lean intake: index entries a new record costs go from 5 + 3 to 3 + 2

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 21:10:00

Issue #21: intake inserts a records row and an outbox row per record, and each index entry is
part of what a record costs to store. Every query on these columns was checked (docs/
benchmarks.md, "Intake, second pass"):

- ix_records_signer duplicated the leading column of uq_records_signer_nonce, which answers
  every query by signer: dropped.
- ix_records_batch_id: intake writes batch_id NULL and the anchorer sets it; every query on it
  is "batch_id = ?" or a join on it, which imply "batch_id IS NOT NULL": partial on that, so a
  new record adds no entry.
- ix_outbox_seq: only the claim ("batch_id IS NULL ORDER BY seq") reads it: partial on the
  unclaimed rows. ix_outbox_batch_id: only "batch_id = ?" reads it: partial on the claimed rows.
  A new outbox row adds one entry where it added two.

No data changes; downgrade restores the full indexes.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ANCHORED = sa.text("batch_id IS NOT NULL")
UNCLAIMED = sa.text("batch_id IS NULL")


def upgrade() -> None:
    op.drop_index("ix_records_signer", table_name="records")
    op.drop_index("ix_records_batch_id", table_name="records")
    op.create_index(
        "ix_records_batch_id",
        "records",
        ["batch_id"],
        sqlite_where=ANCHORED,
        postgresql_where=ANCHORED,
    )
    op.drop_index("ix_outbox_seq", table_name="outbox")
    op.drop_index("ix_outbox_batch_id", table_name="outbox")
    op.create_index(
        "ix_outbox_seq", "outbox", ["seq"], sqlite_where=UNCLAIMED, postgresql_where=UNCLAIMED
    )
    op.create_index(
        "ix_outbox_batch_id",
        "outbox",
        ["batch_id"],
        sqlite_where=ANCHORED,
        postgresql_where=ANCHORED,
    )


def downgrade() -> None:
    op.drop_index("ix_outbox_batch_id", table_name="outbox")
    op.drop_index("ix_outbox_seq", table_name="outbox")
    op.create_index("ix_outbox_seq", "outbox", ["seq"])
    op.create_index("ix_outbox_batch_id", "outbox", ["batch_id"])
    op.drop_index("ix_records_batch_id", table_name="records")
    op.create_index("ix_records_batch_id", "records", ["batch_id"])
    op.create_index("ix_records_signer", "records", ["signer"])
