from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from cli._common import DataDir, configured_passphrase, err_console, fail, settings

app = typer.Typer(no_args_is_help=True, pretty_exceptions_show_locals=False)


@app.command("new")
def new(
    name: str = typer.Argument(..., help="file name under <data-dir>/keys/ (or a path)"),
    plain: bool = typer.Option(False, help="write an UNENCRYPTED dev key (demos, tests)"),
    data_dir: Path | None = DataDir,
) -> None:
    """Create a secp256k1 key: a V3 keystore (scrypt) protected by QLEDGER_KEY_PASSPHRASE or
    a prompted passphrase. Prints the address to register (alone on stdout, so that
    `ADDR=$(qledger keys new NAME)` works) and the file on stderr."""
    path = (
        Path(name)
        if "/" in name or name.endswith(".json")
        else (settings(data_dir).data_dir / "keys" / f"{name}.json")
    )
    from ledger.keys import Signer, save_key

    if path.exists():
        fail(f"{path} exists; refusing to overwrite a key")
    signer = Signer.generate()
    if plain:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps({"address": signer.address, "private_key": "0x" + signer.private_key.hex()})
        )
        path.chmod(0o600)
    else:
        passphrase = configured_passphrase()
        if passphrase is None:
            if not sys.stdin.isatty():
                fail(
                    "no terminal to ask for the new key's passphrase: set "
                    "QLEDGER_KEY_PASSPHRASE (or --plain for an unencrypted dev key)"
                )
            passphrase = typer.prompt("passphrase", hide_input=True, confirmation_prompt=True)
        save_key(signer, path, passphrase)
    typer.echo(signer.address)
    err_console.print(f"key written to {path}", style="dim", highlight=False)
