"""The ``qledger`` command line (typer + rich): one front for chain, keys, records, service,
credit and federated learning.

Every command is a plain module-level function (importable and testable on its own); this
module only mounts them. The command modules import web3, eth-account, SQLAlchemy, FastAPI,
torch and Flower inside the commands that need them, so `qledger --help` and `--version` load
none of them (tests/cli/test_startup.py; figures in docs/benchmarks.md).
"""

from __future__ import annotations

import typer

from cli import (
    chain,
    credit,
    epcis,
    fl,
    importer,
    keys,
    notify,
    records,
    service,
    trace,
    trust,
    verify_bulk,
    webhooks,
    witness,
)
from cli._common import reported_errors

app = typer.Typer(
    name="qledger",
    no_args_is_help=True,
    add_completion=False,
    help="Permissioned ledger for supply-chain quality credit.",
    # Tracebacks must never show local variables: signers and decrypted keys live in them.
    pretty_exceptions_show_locals=False,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"qledger {version('qledger')}")
        except PackageNotFoundError:  # run from a checkout that was never pip-installed
            typer.echo("qledger (not installed)")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Permissioned ledger for supply-chain quality credit."""


app.add_typer(chain.app, name="chain", help="Local anvil chain: up / down / status.")
app.add_typer(keys.app, name="keys", help="Participant keys.")
app.add_typer(
    service.participants,
    name="participants",
    help="Register, revoke and list participants (admin, through the service).",
)
app.add_typer(trust.app, name="trust", help="The auditor's pinned trust root: init / show.")
app.add_typer(credit.app, name="credit", help="Credit scores: show (with --plot) and rank.")
app.add_typer(
    trace.app,
    name="trace",
    help="Genealogy: sign aggregation/transformation; where-used, where-from, recall scope.",
)
app.add_typer(
    notify.app,
    name="notify",
    help="Quality notifications: create / send / receive / ack / accept / decline / close / "
    "forward / inbox / show.",
)
app.add_typer(fl.app, name="fl", help="Federated defect model (Flower): simulate, deploy-local.")
app.add_typer(
    epcis.app,
    name="epcis",
    help="GS1 EPCIS 2.0: import a document as signed records, export records as events.",
)
app.add_typer(
    webhooks.app,
    name="webhooks",
    help="Tell purchasing about supplier gate changes: add / list / rm / deliveries.",
)
app.command("deploy")(chain.deploy)
app.command("simulate")(credit.simulate)
app.command("sign")(records.sign)
app.command("verify")(records.verify)
app.command("verify-score")(records.verify_score)
app.command("verify-receipts")(verify_bulk.verify_receipts)
app.command("log-key")(witness.log_key)
app.add_typer(
    witness.app,
    name="witness",
    help="Witness the transparency log: init a key, cosign checkpoints that extend.",
)
app.command("submit")(records.submit)
app.command("import")(importer.import_file)
app.command("receipt")(records.receipt)
app.command("serve")(service.serve)
app.command("anchorer")(service.anchorer)
app.command("reconcile")(service.reconcile)
app.command("demo")(service.demo)


def main() -> None:
    """The ``qledger`` entry point: the errors a user can cause end in one ``error:`` line."""
    with reported_errors():
        app()
