"""FastAPI application factory."""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from api import metrics, ui
from api.anchorer import anchor_when_leader
from api.context import ServiceContext
from api.docs import install_docs
from api.edges import StrictJsonMiddleware
from api.errors import ApiError, install_handlers, install_openapi, problems
from api.intake import GroupCommitter
from api.routes import (
    auth,
    chain,
    credit,
    epcis,
    incidents,
    models,
    notifications,
    participants,
    records,
    status,
    trace,
    webhooks,
)
from api.routes import log as tlog
from api.settings import Settings
from api.tlog_service import log_signer
from api.webhooks import dispatch_until

log = logging.getLogger("qledger.api")

# `qledger serve` starts a dedicated anchorer process; an API process only stands in for it
# after this long, so the dedicated one wins the anchorer lock at start-up.
STANDIN_DELAY_SECONDS = 10.0
# The collector's first-generation threshold while the service runs (Python's default: 700).
# Parsing a 1,000-record intake batch alone creates ~8,000 containers (8 a record), checking
# and storing it more: at 700 the collector ran ~10 passes per parse, and its older passes
# walked every batch in flight. In a process with the service's heap (frozen), parsing one
# batch took 13-19 ms at the default against 10-11 ms at 50,000 (a third of it collection;
# issue #21, docs/benchmarks.md). Cycles are still collected, only less often; what one
# generation-0 pass holds at 50,000 is a few MiB.
GC_GEN0_THRESHOLD = 50_000


class Health(BaseModel):
    status: Literal["ok"]


class ReadinessCheck(BaseModel):
    check: Literal["database", "chain", "anchoring_lag"]
    ok: bool
    detail: str


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    failed: list[str]
    checks: list[ReadinessCheck]


def create_app(
    settings: Settings | None = None,
    ctx: ServiceContext | None = None,
    *,
    run_anchorer: bool = False,
) -> FastAPI:
    """Build the app. ``run_anchorer`` makes this process a stand-in anchorer: it anchors
    whenever it holds the data dir's anchorer lock (exactly one process does)."""
    settings = settings or (ctx.settings if ctx else Settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.ctx = ctx or ServiceContext.create(settings)
        log_signer(app.state.ctx)  # the log's key exists from start-up (GET /v1/log/key)
        stop = threading.Event()
        with ExitStack() as stack:
            # The intake writer belongs to the app: started here, drained and stopped at
            # shutdown (after the server stopped taking requests).
            committer = GroupCommitter(app.state.ctx)
            committer.start()
            app.state.committer = committer
            stack.callback(committer.stop)
            # Webhook deliveries: every API process runs a dispatcher; each attempt is
            # claimed by exactly one of them (api/webhooks.py), so more workers only share out.
            dispatcher = threading.Thread(
                target=dispatch_until, args=(app.state.ctx, stop), name="webhooks", daemon=True
            )
            dispatcher.start()
            stack.callback(dispatcher.join, 15)
            stack.callback(stop.set)
            if run_anchorer:
                # serve_anchorer=inside (benchmark comparisons): no dedicated process.
                inside = settings.serve_anchorer == "inside"
                worker = threading.Thread(
                    target=anchor_when_leader,
                    args=(app.state.ctx, stop),
                    kwargs={"first_wait": 0.0 if inside else STANDIN_DELAY_SECONDS},
                    name="anchorer",
                    daemon=True,
                )
                worker.start()
                stack.callback(worker.join, 10)
                stack.callback(stop.set)
            # The start-up heap (imported modules, the app, the models: ~170k objects) never
            # becomes garbage: frozen, a full collection no longer walks it on every request's
            # watch. Without it a gen-2 pass stalled recall-scope queries 60-80 ms at random
            # (p99 ~100 ms against p50 ~9; scripts/bench_trace.py, docs/benchmarks.md).
            gc.collect()
            gc.freeze()
            thresholds = gc.get_threshold()
            gc.set_threshold(GC_GEN0_THRESHOLD, *thresholds[1:])
            try:
                yield
            finally:
                gc.set_threshold(*thresholds)
                gc.unfreeze()  # what the app held may be collected after it stops (tests, reloads)

    app = FastAPI(
        title="qledger",
        version="0.1.0",
        lifespan=lifespan,
        # Served from local files (api/docs.py): FastAPI's defaults load them from a CDN.
        docs_url=None,
        redoc_url=None,
        description="Permissioned ledger for supply-chain quality credit. Suppliers, "
        "OEMs and auditors submit EIP-712-signed evidence; the service anchors "
        "Merkle roots on chain and serves receipts, checkpoints and credit scores.",
    )
    if ctx is not None:
        app.state.ctx = ctx
    install_handlers(app)
    install_openapi(app)
    install_docs(app)
    # Security headers and the same-origin (CSRF) check on every /ui response and POST.
    app.add_middleware(ui.UiGuard, public_url=settings.public_url)
    # Strict JSON, media type and body bounds on every /v1 body (api/edges.py).
    app.add_middleware(StrictJsonMiddleware)
    for module in (
        auth,
        records,
        epcis,
        chain,
        tlog,
        participants,
        credit,
        incidents,
        trace,
        models,
        status,
        webhooks,
        notifications,
        ui,
    ):
        app.include_router(module.router)
    app.include_router(tlog.certificates)

    @app.get("/healthz", tags=["health"], responses=problems(503))
    def healthz() -> Health:
        """Liveness of this process's parts: 503 ``intake_unavailable`` while the intake
        writer is down (the next submit restarts it)."""
        committer: GroupCommitter | None = getattr(app.state, "committer", None)
        if committer is not None and not committer.alive:
            raise ApiError(
                503, "intake_unavailable", "the intake writer is not running", retry_after=1
            )
        return Health(status="ok")

    @app.get(
        "/readyz", tags=["health"], response_model=Readiness, responses={503: {"model": Readiness}}
    )
    def readyz(request: Request) -> JSONResponse:
        """Readiness: 200 only when the database answers, the chain answers and the oldest
        record waiting for anchoring is younger than ``QLEDGER_READY_MAX_ANCHORING_LAG_SECONDS``;
        otherwise 503 naming the checks that failed. Public: no record data."""
        checks = metrics.readiness(request.app.state.ctx)
        failed = [c.name for c in checks if not c.ok]
        return JSONResponse(
            {
                "status": "ready" if not failed else "not_ready",
                "failed": failed,
                "checks": [c.to_json() for c in checks],
            },
            status_code=503 if failed else 200,
        )

    @app.get(
        "/metrics",
        tags=["health"],
        response_class=Response,
        responses={
            200: {
                "description": "Prometheus text exposition format (version 0.0.4)",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    )
    def prometheus_metrics(request: Request) -> Response:
        """Prometheus text exposition: intake counts and latency, anchoring lag, batches by
        status, chain errors (api/metrics.py). Public, like /healthz: counts and ages only."""
        registry = getattr(request.app.state, "metrics_registry", None)
        if registry is None:
            registry = request.app.state.metrics_registry = metrics.registry_for(
                request.app.state.ctx
            )
        return Response(metrics.exposition(registry), media_type=metrics.CONTENT_TYPE)

    return app


def serve_app() -> FastAPI:
    """Factory for ``uvicorn --factory api.main:serve_app``: settings from ``QLEDGER_*``.

    ``qledger serve`` does not use it: it hands its resolved Settings to the workers."""
    return create_app(Settings(), run_anchorer=True)
