"""The genealogy's :class:`traceability.genealogy.LinkStore` in SQL (SQLite and PostgreSQL).

Each call is one indexed ``IN`` query per chunk of nodes; chunks keep every statement under
SQLite's bound-parameter limit (32,766 since 3.32; 900 is safe on any build) and PostgreSQL's
65,535.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import Any

from sqlalchemy import insert, select, tuple_
from sqlalchemy.orm import Session

from api.store.models import Batch, GenealogyLink, Record
from traceability.genealogy import LinkRow

CHUNK = 900
_COLUMNS = (
    GenealogyLink.child,
    GenealogyLink.parent,
    GenealogyLink.struct_hash,
    GenealogyLink.kind,
    GenealogyLink.event_time,
    GenealogyLink.site,
)


def _chunks(items: Collection[Any]) -> Iterator[list[Any]]:
    seq = list(items)
    for i in range(0, len(seq), CHUNK):
        yield seq[i : i + CHUNK]


class SqlLinks:
    """Links read through one session (a snapshot within its transaction)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def _rows(self, column: Any, keys: Collection[str]) -> list[LinkRow]:
        out: list[LinkRow] = []
        for chunk in _chunks(keys):
            result = self.session.execute(select(*_COLUMNS).where(column.in_(chunk)))
            out.extend(LinkRow(*row) for row in result)
        return out

    def up(self, children: Collection[str]) -> list[LinkRow]:
        return self._rows(GenealogyLink.child, children)

    def down(self, parents: Collection[str]) -> list[LinkRow]:
        return self._rows(GenealogyLink.parent, parents)

    def existing(self, pairs: Collection[tuple[str, str]]) -> set[tuple[str, str]]:
        have: set[tuple[str, str]] = set()
        for chunk in _chunks(pairs):
            have.update(
                (c, p)
                for c, p in self.session.execute(
                    select(GenealogyLink.child, GenealogyLink.parent).where(
                        tuple_(GenealogyLink.child, GenealogyLink.parent).in_(chunk)
                    )
                )
            )
        return have


def insert_links(session: Session, rows: list[LinkRow]) -> None:
    """One bulk insert (Core) of derived links."""
    if rows:
        session.execute(insert(GenealogyLink), [row._asdict() for row in rows])


def anchoring(session: Session, hashes: Collection[str]) -> dict[str, dict[str, Any]]:
    """Each record's anchoring state: ``pending`` until its batch is built, then the batch's
    status (built, sent, anchored, confirmed) with the batch root and on-chain id."""
    out: dict[str, dict[str, Any]] = {}
    for chunk in _chunks(hashes):
        rows = session.execute(
            select(
                Record.struct_hash,
                Record.kind,
                Record.signer,
                Record.subject,
                Record.event_time,
                Batch.status,
                Batch.root,
                Batch.chain_batch_id,
            )
            .outerjoin(Batch, Batch.id == Record.batch_id)
            .where(Record.struct_hash.in_(chunk))
        )
        for h, kind, signer, subject, event_time, status, root, chain_id in rows:
            out[h] = {
                "structHash": h,
                "kind": kind,
                "signer": signer,
                "subject": subject,
                "eventTime": event_time,
                "anchoring": status or "pending",
                "batchRoot": root,
                "chainBatchId": chain_id,
            }
    return out
