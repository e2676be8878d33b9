"""FastAPI application factory."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager

from fastapi import FastAPI

from api import ui
from api.anchorer import anchor_when_leader
from api.context import ServiceContext
from api.edges import StrictJsonMiddleware
from api.errors import install_handlers
from api.routes import auth, chain, credit, incidents, models, participants, records
from api.settings import Settings

log = logging.getLogger("qledger.api")

# `qledger serve` starts a dedicated anchorer process; an API process only stands in for it
# after this long, so the dedicated one wins the anchorer lock at start-up.
STANDIN_DELAY_SECONDS = 10.0


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
        stop = threading.Event()
        with ExitStack() as stack:
            if run_anchorer:
                # QLEDGER_SERVE_ANCHORER=inside (benchmark comparisons): no dedicated process.
                inside = os.environ.get("QLEDGER_SERVE_ANCHORER") == "inside"
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
            yield

    app = FastAPI(
        title="qledger",
        version="0.1.0",
        lifespan=lifespan,
        description="Permissioned ledger for supply-chain quality credit. Suppliers, "
        "OEMs and auditors submit EIP-712-signed evidence; the service anchors "
        "Merkle roots on chain and serves receipts, checkpoints and credit scores.",
    )
    if ctx is not None:
        app.state.ctx = ctx
    install_handlers(app)
    # Strict JSON, media type and body bounds on every /v1 body (api/edges.py).
    app.add_middleware(StrictJsonMiddleware)
    for module in (auth, records, chain, participants, credit, incidents, models, ui):
        app.include_router(module.router)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def serve_app() -> FastAPI:
    """Factory for ``uvicorn --factory``: settings from QLEDGER_* (set by ``qledger serve``)."""
    return create_app(Settings(), run_anchorer=True)
