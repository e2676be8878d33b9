"""Operations: Prometheus ``/metrics`` and the ``/readyz`` readiness checks.

Two kinds of figures:

* counted in this process as things happen (prometheus-client counters and a histogram):
  records taken in by kind and outcome, refusals by problem code, intake request latency,
  chain errors by component;
* read from the store at scrape time (a custom collector), so that every API process answers
  alike whichever process anchors: records waiting for anchoring, the anchoring lag (age of
  the oldest of them), batches by status, reconciliations.

The anchorer normally runs in its own process (``qledger serve``): its chain errors are counted
there and exported on ``QLEDGER_ANCHORER_METRICS_PORT`` when that is set (a second scrape
target); its progress is visible here through the store either way. With several API workers,
each answers for its own counters (scrape each, or rely on the store figures).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError

from api.counters import (
    CHAIN_ERRORS,
    INTAKE_RECORDS,
    INTAKE_REFUSALS,
    INTAKE_SECONDS,
    PROCESS_METRICS,
)
from api.store.models import Batch, Outbox, Reconciliation, utcnow
from ledger.errors import ChainError
from ledger.records import RecordKind

if TYPE_CHECKING:
    from api.context import ServiceContext
    from api.intake import Outcome

log = logging.getLogger("qledger.api")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

KNOWN_KINDS = frozenset(k.value for k in RecordKind)


def record_intake(
    records: list[Any], outcomes: Iterable[Outcome], endpoint: str, started: float
) -> None:
    """Count one intake request's outcomes and time it. A kind label is one of the record
    kinds or ``unknown`` (a label never carries what a client typed)."""
    INTAKE_SECONDS.labels(endpoint).observe(time.perf_counter() - started)
    # Counted per label first: a labelled counter costs a lock and a lookup per call, and a
    # batch has 1,000 outcomes but a few distinct labels.
    taken: Counter[tuple[str, str]] = Counter()
    refused: Counter[str] = Counter()
    for outcome in outcomes:
        data = records[outcome.index] if outcome.index < len(records) else None
        struct = data.get("record") if isinstance(data, dict) else None
        kind = struct.get("kind") if isinstance(struct, dict) else None
        taken[(kind if kind in KNOWN_KINDS else "unknown", outcome.status)] += 1
        if outcome.error is not None:
            refused[outcome.error.code] += 1
    for (kind, status), count in taken.items():
        INTAKE_RECORDS.labels(kind, status).inc(count)
    for code, count in refused.items():
        INTAKE_REFUSALS.labels(code).inc(count)


def _age_seconds(moment: datetime | None) -> float:
    if moment is None:
        return 0.0
    if moment.tzinfo is None:  # SQLite hands back naive UTC
        moment = moment.replace(tzinfo=utcnow().tzinfo)
    return max(0.0, (utcnow() - moment).total_seconds())


@dataclass(frozen=True)
class AnchoringState:
    waiting: int  # records in the outbox: not yet in a confirmed batch
    lag_seconds: float  # age of the oldest of them (0 when none waits)
    batches: dict[str, int]
    reconciliations: int


def anchoring_state(ctx: ServiceContext) -> AnchoringState:
    """Read from the store: what waits for anchoring and for how long."""
    with ctx.sessions() as s:
        waiting, oldest = s.execute(select(func.count(), func.min(Outbox.created_at))).one()
        batches = dict(s.execute(select(Batch.status, func.count()).group_by(Batch.status)).all())
        reconciliations = s.scalar(select(func.count()).select_from(Reconciliation)) or 0
    return AnchoringState(
        waiting=int(waiting or 0),
        lag_seconds=_age_seconds(oldest),
        batches={str(k): int(v) for k, v in batches.items()},
        reconciliations=int(reconciliations),
    )


class StoreCollector(Collector):
    """Gauges read from the store at each scrape."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("qledger_store_up", "1 if the store answered this scrape")
        try:
            state = anchoring_state(self.ctx)
        except SQLAlchemyError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield GaugeMetricFamily(
            "qledger_anchoring_waiting_records",
            "Records accepted but not yet in a confirmed batch",
            value=state.waiting,
        )
        yield GaugeMetricFamily(
            "qledger_anchoring_lag_seconds",
            "Age of the oldest record not yet in a confirmed batch (0 when none waits)",
            value=state.lag_seconds,
        )
        batches = GaugeMetricFamily("qledger_batches", "Batches by status", labels=["status"])
        for status in ("built", "sent", "anchored", "confirmed"):
            batches.add_metric([status], state.batches.pop(status, 0))
        for status, count in sorted(state.batches.items()):
            batches.add_metric([status], count)
        yield batches
        yield GaugeMetricFamily(
            "qledger_reconciliations",
            "Batches the chain lost and the anchorer reconciled (re-anchored or withdrawn)",
            value=state.reconciliations,
        )


def registry_for(ctx: ServiceContext) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    for metric in PROCESS_METRICS:
        registry.register(metric)
    registry.register(StoreCollector(ctx))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


# -- readiness ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReadinessCheck:
    name: str
    ok: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"check": self.name, "ok": self.ok, "detail": self.detail}


def readiness(ctx: ServiceContext) -> list[ReadinessCheck]:
    """The database answers, the chain answers, and the anchorer keeps up (the oldest record
    waiting for anchoring is younger than ``ready_max_anchoring_lag_seconds``)."""
    checks: list[ReadinessCheck] = []
    try:
        with ctx.sessions() as s:
            s.execute(text("SELECT 1"))
        checks.append(ReadinessCheck("database", True, "answers"))
    except SQLAlchemyError as exc:
        checks.append(ReadinessCheck("database", False, type(exc).__name__))
    try:
        tip = ctx.chain.block_number()
        checks.append(ReadinessCheck("chain", True, f"block {tip}"))
    except ChainError as exc:
        CHAIN_ERRORS.labels("readiness").inc()
        # The public answer names the failure's code only: the message can carry the RPC URL,
        # which may hold a provider's API key.
        log.warning("readiness: chain check failed: %s", exc)
        checks.append(ReadinessCheck("chain", False, exc.code))
    bound = ctx.settings.ready_max_anchoring_lag_seconds
    if checks[0].ok:
        try:
            state = anchoring_state(ctx)
        except SQLAlchemyError as exc:
            checks.append(ReadinessCheck("anchoring_lag", False, type(exc).__name__))
        else:
            checks.append(
                ReadinessCheck(
                    "anchoring_lag",
                    state.lag_seconds <= bound,
                    f"{state.waiting} records waiting, oldest {state.lag_seconds:.1f} s "
                    f"(bound {bound:g} s)",
                )
            )
    else:
        checks.append(ReadinessCheck("anchoring_lag", False, "database unavailable"))
    return checks
