"""The genealogy's :class:`traceability.genealogy.LinkStore` in SQL (SQLite and PostgreSQL).

A walk asks for the links of a whole level of nodes at once. The node list travels as ONE
bound value, ``= ANY(:array)`` on PostgreSQL and ``IN (SELECT value FROM json_each(:json))``
on SQLite, both index probes per value: an expanding ``IN (:p1, ..., :pN)`` is re-rendered and
re-compiled for every N (measured: ~40% of a recall-scope query) and is bounded by SQLite's
bound-parameter limit.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import orjson
from sqlalchemy import ColumnElement, String, any_, bindparam, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from api.store.models import Batch, GenealogyLink, Record
from traceability.genealogy import LinkRow

_COLUMNS = (
    GenealogyLink.child,
    GenealogyLink.parent,
    GenealogyLink.struct_hash,
    GenealogyLink.kind,
    GenealogyLink.event_time,
    GenealogyLink.site,
)


def one_of(
    session: Session, column: Any, keys: Collection[str], name: str = "keys"
) -> ColumnElement[bool]:
    """``column`` is one of ``keys``, as one bound value (see the module docstring)."""
    values = list(keys)
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(name, values, type_=ARRAY(String)))
    listed = func.json_each(bindparam(name, orjson.dumps(values).decode())).table_valued("value")
    return column.in_(select(listed.c.value))


class SqlLinks:
    """Links read through one session (a snapshot within its transaction)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def _rows(self, column: Any, keys: Collection[str]) -> list[LinkRow]:
        if not keys:
            return []
        conn = self.session.connection()
        result = conn.execute(select(*_COLUMNS).where(one_of(self.session, column, keys)))
        return [LinkRow._make(row) for row in result]

    def up(self, children: Collection[str]) -> list[LinkRow]:
        return self._rows(GenealogyLink.child, children)

    def down(self, parents: Collection[str]) -> list[LinkRow]:
        return self._rows(GenealogyLink.parent, parents)

    def existing(self, pairs: Collection[tuple[str, str]]) -> set[tuple[str, str]]:
        # Children AND parents as two bound lists, the exact pairs filtered here: SQLite answers
        # a row-value "(child, parent) IN (...)" with a scan of the whole index (2.6 s per
        # intake batch at 10^6 links), and by child alone a component lot in thousands of
        # modules would bring all of them back.
        wanted = set(pairs)
        if not wanted:
            return set()
        children = one_of(self.session, GenealogyLink.child, {c for c, _ in wanted}, "children")
        parents = one_of(self.session, GenealogyLink.parent, {p for _, p in wanted}, "parents")
        result = self.session.connection().execute(
            select(GenealogyLink.child, GenealogyLink.parent).where(children, parents)
        )
        return {(c, p) for c, p in result} & wanted


def insert_links(session: Session, rows: list[LinkRow]) -> None:
    """One bulk insert of derived links, straight through the driver's ``executemany``: the
    ORM's bulk path and Core's per-row parameter processing cost more than the insert itself
    here (profiled in the intake phase of scripts/bench_trace.py). Same columns and order as
    :class:`LinkRow`, no conversions (strings and ints)."""
    if not rows:
        return
    conn = session.connection()
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    conn.exec_driver_sql(
        f"INSERT INTO {GenealogyLink.__tablename__} ({', '.join(LinkRow._fields)}) "
        f"VALUES ({', '.join([mark] * len(LinkRow._fields))})",
        [tuple(row) for row in rows],
    )


def anchoring(session: Session, hashes: Collection[str]) -> dict[str, dict[str, Any]]:
    """Each record's anchoring state: ``pending`` until its batch is built, then the batch's
    status (built, sent, anchored, confirmed) with the batch root and on-chain id."""
    out: dict[str, dict[str, Any]] = {}
    if not hashes:
        return out
    rows = session.connection().execute(
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
        .where(one_of(session, Record.struct_hash, hashes))
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
