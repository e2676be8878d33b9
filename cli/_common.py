"""Shared CLI plumbing: settings, console, key loading, JSON I/O, error display."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pydantic
import typer
from rich.console import Console
from rich.markup import escape

from ledger.errors import LedgerError

if TYPE_CHECKING:
    from api.settings import Settings

    # Heavy (web3, eth-account, httpx): imported by the commands that use them, so that
    # `qledger --help` and `qledger --version` start in well under half a second.
    from client.service import QledgerClient
    from ledger.keys import Signer

console = Console()
err_console = Console(stderr=True)

DataDir = typer.Option(
    None,
    "--data-dir",
    envvar="QLEDGER_DATA_DIR",
    help="Where chain state, database and keys live (default ./.qledger).",
)


def settings(data_dir: Path | None = None, **overrides: Any) -> Settings:
    # pydantic-settings loads with the first command that reads a setting, not for --help.
    from api.settings import Settings

    values = {k: v for k, v in overrides.items() if v is not None}
    if data_dir is not None:
        values["data_dir"] = data_dir
    return Settings(**values)


def user_errors() -> tuple[type[BaseException], ...]:
    """What a user's input, files or environment can cause: answered with one line, never a
    traceback (QLEDGER_DEBUG=1 lets them end in one; locals are never shown either way).
    ValueError covers malformed JSON from files and services and bad values in drafts.

    Resolved when an error is being reported, so that the classes' modules (httpx, the service
    client) load only in commands that use them."""
    import httpx

    from client.service import ServiceError

    return (
        ServiceError,
        LedgerError,
        httpx.HTTPError,
        httpx.InvalidURL,
        pydantic.ValidationError,
        ValueError,
        OSError,
    )


def one_line(message: str) -> str:
    """``message`` with its whitespace runs (newlines included) folded into single spaces."""
    return " ".join(message.split())


def describe(exc: BaseException) -> str:
    """A one-line account of ``exc`` for a user: what failed and why, no traceback."""
    if isinstance(exc, pydantic.ValidationError):
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'value'}: {error['msg']}"
            for error in exc.errors(include_input=False, include_url=False)
        )
        return one_line(f"invalid {exc.title}: {problems}")
    import httpx

    if isinstance(exc, httpx.TransportError):
        url = exc.request.url if _has_request(exc) else "the service"
        return one_line(f"service unreachable at {url}: {exc or type(exc).__name__}")
    return one_line(str(exc) or type(exc).__name__)


def _has_request(exc: Any) -> bool:
    try:
        exc.request  # noqa: B018 - httpx raises RuntimeError when the error has no request
    except RuntimeError:
        return False
    return True


def print_error(message: str) -> None:
    """``error: <message>`` on stderr: one line whatever the terminal width (soft_wrap), and no
    rich markup taken from the message."""
    err_console.print(f"[bold red]error:[/] {escape(one_line(message))}", soft_wrap=True)


def fail(message: str, code: int = 1) -> NoReturn:
    print_error(message)
    raise typer.Exit(code)


@contextmanager
def reported_errors() -> Iterator[None]:
    """Turn the errors in :func:`user_errors` into ``error: ...`` and exit status 1."""
    try:
        yield
    except Exception as exc:
        if not isinstance(exc, user_errors()) or settings().debug:
            raise
        print_error(describe(exc))
        # Outside click's context typer.Exit is not handled; leave without the chained traceback.
        raise SystemExit(1) from None


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
    secret = settings().key_passphrase
    return secret.get_secret_value() if secret is not None else None


def load_signer(path: Path) -> Signer:
    """Key files are V3 keystores (passphrase from QLEDGER_KEY_PASSPHRASE, else asked) or
    plain dev keys written by ``qledger keys new --plain``."""
    from ledger.keys import load_key

    passphrase = configured_passphrase()
    if passphrase is None:
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            fail(f"cannot read key file {path}: {type(exc).__name__}")
        if not isinstance(data, dict):
            fail(f"key file {path} is not a keystore or plain key object")
        if "private_key" in data:
            passphrase = ""
        elif not sys.stdin.isatty():
            fail(
                f"{path} is encrypted and there is no terminal to ask for its passphrase: "
                "set QLEDGER_KEY_PASSPHRASE"
            )
        else:
            passphrase = typer.prompt(f"passphrase for {path}", hide_input=True)
    try:
        return load_key(path, passphrase)
    except LedgerError as exc:
        fail(str(exc))


def logged_in(url: str, key: Path) -> QledgerClient:
    """A service client signed in with the key file's participant (or exit with the reason)."""
    from client.service import QledgerClient, ServiceError

    client = QledgerClient(url)
    try:
        client.login(load_signer(key))
    except ServiceError as exc:
        fail(str(exc))
    return client
