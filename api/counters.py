"""The counters and histogram this process keeps (Prometheus), in a module of their own that
imports nothing of ours: the role follower and the anchorer count chain errors here without
importing the service (``api.metrics`` reads them, with the store's figures, for ``/metrics``).
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram
from prometheus_client.registry import Collector

# Process-wide, registered into each app's registry (an app per test, one per worker).
INTAKE_RECORDS = Counter(
    "qledger_intake_records",
    "Records taken in, by kind and outcome (accepted, duplicate, rejected)",
    ["kind", "outcome"],
    registry=None,
)
INTAKE_REFUSALS = Counter(
    "qledger_intake_refusals",
    "Records refused at intake, by problem code (docs/api.md)",
    ["code"],
    registry=None,
)
# Buckets from the measured single-record p50/p99 (~5-40 ms, docs/benchmarks.md) up to a
# full 1,000-record batch on a loaded host.
INTAKE_SECONDS = Histogram(
    "qledger_intake_request_seconds",
    "Intake request latency, by endpoint (record, batch)",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=None,
)
CHAIN_ERRORS = Counter(
    "qledger_chain_errors",
    "Chain calls that failed, by component (anchorer, role_follower, readiness)",
    ["component"],
    registry=None,
)
PROCESS_METRICS: tuple[Collector, ...] = (
    INTAKE_RECORDS,
    INTAKE_REFUSALS,
    INTAKE_SECONDS,
    CHAIN_ERRORS,
)
