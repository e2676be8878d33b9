"""The app factory ``qledger serve`` hands to uvicorn: ``create_app`` bound to resolved Settings.

A module of its own, importing nothing heavy at the top, because uvicorn's worker supervisor
unpickles the factory in each spawned worker *before* that worker starts answering the
supervisor's 5-second liveness pings: importing the service (web3, SQLAlchemy, the dashboard)
at that point can take longer on a busy host, and the worker would be killed and respawned in a
loop. The service is imported when the factory is called, after the pings are being answered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from api.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI


@dataclass(frozen=True)
class ServeAppFactory:
    settings: Settings

    def __call__(self) -> FastAPI:
        from api.logs import configure_logging
        from api.main import create_app

        configure_logging(self.settings)  # in each worker process (spawned workers start bare)
        return create_app(self.settings, run_anchorer=True)
