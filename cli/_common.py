"""Shared CLI plumbing: settings, console, key loading, JSON I/O, error display."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console

from api.client import QledgerClient, ServiceError
from api.settings import Settings
from ledger.errors import LedgerError
from ledger.keys import Signer, load_key

console = Console()
err_console = Console(stderr=True)

DataDir = typer.Option(
    None,
    "--data-dir",
    envvar="QLEDGER_DATA_DIR",
    help="Where chain state, database and keys live (default ./.qledger).",
)


def settings(data_dir: Path | None = None, **overrides: Any) -> Settings:
    values = {k: v for k, v in overrides.items() if v is not None}
    if data_dir is not None:
        values["data_dir"] = data_dir
    return Settings(**values)


def fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")
    except json.JSONDecodeError as exc:
        fail(f"{path} is not valid JSON: {exc}")


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def configured_passphrase() -> str | None:
    """QLEDGER_KEY_PASSPHRASE (through Settings, like every other setting), if set."""
    secret = Settings().key_passphrase
    return secret.get_secret_value() if secret is not None else None


def load_signer(path: Path) -> Signer:
    """Key files are V3 keystores (passphrase from QLEDGER_KEY_PASSPHRASE, else asked) or
    plain dev keys written by ``qledger keys new --plain``."""
    passphrase = configured_passphrase()
    if passphrase is None:
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            fail(f"cannot read key file {path}: {exc}")
        passphrase = (
            ""
            if "private_key" in data or not sys.stdin.isatty()
            else typer.prompt(f"passphrase for {path}", hide_input=True)
        )
    try:
        return load_key(path, passphrase)
    except LedgerError as exc:
        fail(str(exc))


def logged_in(url: str, key: Path) -> QledgerClient:
    """A service client signed in with the key file's participant (or exit with the reason)."""
    client = QledgerClient(url)
    try:
        client.login(load_signer(key))
    except ServiceError as exc:
        fail(str(exc))
    return client
