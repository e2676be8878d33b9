"""The ``qledger`` command line (typer + rich): one front for chain, keys, records, service,
credit and federated learning."""

from __future__ import annotations

import typer

from api.cli import chain, credit, keys, records, service
from federated.cli import app as fl_app

app = typer.Typer(name="qledger", no_args_is_help=True, add_completion=False,
                  help="Permissioned ledger for supply-chain quality credit.")
app.add_typer(chain.app, name="chain", help="Local anvil chain: up / down / status.")
app.add_typer(keys.app, name="keys", help="Participant keys.")
app.add_typer(service.participants, name="participants",
              help="Register, revoke and list participants (admin, through the service).")
app.add_typer(credit.app, name="credit", help="Credit scores: show (with --plot) and rank.")
app.add_typer(fl_app, name="fl", help="Federated defect model (Flower): simulate, deploy-local.")
chain.register(app)
credit.register(app)
records.register(app)
service.register(app)
service.register_demo(app)


def main() -> None:
    app()
