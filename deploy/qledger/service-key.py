#!/usr/bin/env python3
"""Turn the service account's keystore into the key file the systemd units load.

`qledger serve`, `qledger anchorer` and `qledger deploy` take the ADMIN/ANCHORER key as hex
(QLEDGER_ANCHORER_KEY); people keep it as a V3 keystore (`qledger keys new`). This writes the
hex key to a file readable by its owner only, without it passing through the command line, the
shell history or the terminal. The units read that file as a systemd credential
(LoadCredential=anchorer-key:...) and export it to the process only.

    sudo -u qledger /opt/qledger/.venv/bin/python deploy/qledger/service-key.py \
        /etc/qledger/keys/service.json /etc/qledger/credentials/anchorer-key

The passphrase comes from QLEDGER_KEY_PASSPHRASE or is asked for. Prints the address (check it
is the one in the accounts allowlist and the one that deployed the contracts).
"""

from __future__ import annotations

import getpass
import json
import os
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] in ("-h", "--help"):
        print(__doc__)
        return 2
    keystore, target = Path(argv[1]), Path(argv[2])
    if target.exists():
        print(
            f"error: {target} exists; remove it first if you mean to replace the key",
            file=sys.stderr,
        )
        return 1
    from eth_account import Account

    data = json.loads(keystore.read_text())
    if "crypto" not in data:
        print("error: not a V3 keystore (plain dev keys are not for production)", file=sys.stderr)
        return 1
    passphrase = os.environ.get("QLEDGER_KEY_PASSPHRASE")
    if passphrase is None:
        passphrase = getpass.getpass(f"passphrase for {keystore}: ")
    try:
        private = bytes(Account.decrypt(data, passphrase))
    except ValueError:
        print("error: wrong passphrase or corrupt keystore", file=sys.stderr)
        return 1
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("0x" + private.hex() + "\n")
    print(Account.from_key(private).address)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
