"""FastAPI application factory."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager

from fastapi import FastAPI

from api import ui
from api.anchorer import Anchorer, anchorer_lock
from api.context import ServiceContext
from api.errors import install_handlers
from api.routes import auth, chain, credit, incidents, models, participants, records
from api.settings import Settings

log = logging.getLogger("qledger.api")


def create_app(settings: Settings | None = None, ctx: ServiceContext | None = None,
               *, run_anchorer: bool = False) -> FastAPI:
    """Build the app. ``run_anchorer`` starts the anchorer in this process if it wins the
    data dir's anchorer lock (so with several workers exactly one anchors)."""
    settings = settings or (ctx.settings if ctx else Settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.ctx = ctx or ServiceContext.create(settings)
        stop = threading.Event()
        with ExitStack() as stack:
            if run_anchorer and stack.enter_context(anchorer_lock(settings.data_dir)):
                worker = threading.Thread(target=Anchorer(app.state.ctx).run_forever,
                                          args=(stop,), name="anchorer", daemon=True)
                worker.start()
                stack.callback(worker.join, 10)
                stack.callback(stop.set)
                log.info("anchorer running in this process")
            yield

    app = FastAPI(title="qledger", version="0.1.0", lifespan=lifespan,
                  description="Permissioned ledger for supply-chain quality credit. Suppliers, "
                  "OEMs and auditors submit EIP-712-signed evidence; the service anchors "
                  "Merkle roots on chain and serves receipts, checkpoints and credit scores.")
    if ctx is not None:
        app.state.ctx = ctx
    install_handlers(app)
    for module in (auth, records, chain, participants, credit, incidents, models, ui):
        app.include_router(module.router)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def serve_app() -> FastAPI:
    """Factory for ``uvicorn --factory``: settings from QLEDGER_* (set by ``qledger serve``)."""
    return create_app(Settings(), run_anchorer=True)
