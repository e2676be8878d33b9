"""``qledger import``: a CSV or xlsx sheet of quality evidence, signed and submitted in batches
(client.importer does the work; this is its command line)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from cli._common import console, err_console, fail, load_signer
from client.errors import DEFAULT_BATCH, DEFAULT_URL, ServiceError
from client.mapping import MappingError, load_mapping
from ledger.records import Domain


def import_file(
    file: Path = typer.Argument(..., help="a .csv or .xlsx file, one record per row"),
    mapping: Path = typer.Option(..., "--mapping", help="mapping file (TOML): columns to fields"),
    kind: str | None = typer.Option(None, "--kind", help="record kind (default: the mapping's)"),
    key: Path = typer.Option(..., "--key", help="the signer's key file (the supplier's)"),
    url: str = typer.Option(DEFAULT_URL, "--url", envvar="QLEDGER_URL"),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="check every row and report; sign and submit nothing"
    ),
    state: Path | None = typer.Option(
        None, "--state", help="state file (default: FILE.qledger-import.jsonl beside FILE)"
    ),
    batch_size: int = typer.Option(DEFAULT_BATCH, "--batch-size", min=1, max=1000),
) -> None:
    """Import a spreadsheet: map each row to a record (--mapping), check it, sign it with
    --key and submit in batches. A re-run skips rows accepted before (resumable after a
    crash, never a second record for one row). Exit 0 when no row was refused, 1 otherwise
    (each refusal is one line: row, field, column, expected, got), 2 for a bad mapping."""
    # Signing and HTTP (eth-account, httpx) load here, not for --help.
    from client.importer import Importer, StateFile, default_state_path, read_rows
    from client.service import QledgerClient

    try:
        chosen = load_mapping(mapping, kind)
        rows = read_rows(file, chosen)
    except MappingError as exc:
        fail(str(exc), code=2)
    signer = load_signer(key)
    with QledgerClient(url) as client:
        checkpoint = client.checkpoint()
        try:
            domain = Domain(chainId=checkpoint["chainId"], verifyingContract=checkpoint["contract"])
        except (KeyError, TypeError):
            fail(f"{url} answers /v1/checkpoint without a signing domain: not a qledger service?")
        try:
            who = client.login(signer)
        except ServiceError as exc:
            fail(f"{signer.address} cannot sign in, every row would be refused: {exc}")
        importer = Importer(
            client,
            signer,
            domain,
            chosen,
            StateFile(state or default_state_path(file)),
            batch_size=batch_size,
            role=who.get("role"),
            org=who.get("orgId"),
        )
        with Progress(
            TextColumn("importing"),
            BarColumn(),
            MofNCompleteColumn(),
            console=err_console,
            transient=True,
            disable=dry_run or not err_console.is_terminal,
        ) as bar:
            task = bar.add_task("rows", total=len(rows))
            summary = importer.run(rows, dry_run=dry_run, progress=lambda n: bar.advance(task, n))
    for warning in summary.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True)
    for outcome in summary.outcomes:
        for line in outcome.problems:
            console.print(escape(line), soft_wrap=True, highlight=False)
    console.print(summary.line(dry_run), soft_wrap=True, highlight=False)
    raise typer.Exit(0 if summary.ok else 1)
