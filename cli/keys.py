from __future__ import annotations

import json
from pathlib import Path

import typer

from cli._common import DataDir, configured_passphrase, console, fail, settings

app = typer.Typer(no_args_is_help=True, pretty_exceptions_show_locals=False)


@app.command("new")
def new(
    name: str = typer.Argument(..., help="file name under <data-dir>/keys/ (or a path)"),
    plain: bool = typer.Option(False, help="write an UNENCRYPTED dev key (demos, tests)"),
    data_dir: Path | None = DataDir,
) -> None:
    """Create a secp256k1 key: a V3 keystore (scrypt) protected by QLEDGER_KEY_PASSPHRASE or
    a prompted passphrase; prints the address to register."""
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
        passphrase = configured_passphrase() or typer.prompt(
            "passphrase", hide_input=True, confirmation_prompt=True
        )
        save_key(signer, path, passphrase)
    console.print(f"[green]{signer.address}[/]  ->  {path}")
