"""What a user gets wrong ends in one ``error:`` line, exit status 1, never a traceback and
never key material (issue #20: "40-450 line tracebacks instead of one-line errors").

Each case runs the real ``qledger`` in a subprocess with no terminal (stdin is /dev/null, as in
a pipe, cron or an MES job), the way a new user or a script meets these mistakes.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ledger.keys import Signer, save_key
from tests.helpers import ROOT, inspection_payload

pytestmark = pytest.mark.slow

DOMAIN = ["--chain-id", "31337", "--contract", "0x5FbDB2315678afecb367f032d93F642f64180aa3"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends: nothing listens


def _draft(**changes: object) -> dict[str, object]:
    draft: dict[str, object] = {
        "subject": "SUP-01",
        "kind": "inspection",
        "partNumber": "P-1",
        "lotId": "L-1",
        "eventTime": int(time.time()) - 3600,
        "quantity": 50,
        "defects": 1,
        "payload": inspection_payload(1),
    }
    draft.update(changes)
    return draft


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("errors")
    signer = Signer.generate()
    (root / "plain.json").write_text(
        json.dumps({"address": signer.address, "private_key": "0x" + signer.private_key.hex()})
    )
    save_key(Signer.generate(), root / "encrypted.json", "right passphrase")
    drafts = {
        "unknown-kind": _draft(kind="inspectoin"),
        "too-many-defects": _draft(defects=80),
        "iso-date": _draft(eventTime="2026-12-01T10:00:00Z"),
        "not-an-object": [1, 2, 3],
        "ok": _draft(),
    }
    for name, body in drafts.items():
        (root / f"{name}.json").write_text(json.dumps(body))
    (root / "broken.json").write_text('{"subject": ')
    return root


def _run(workdir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("QLEDGER_")}
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        cwd=workdir,
        env={**clean, "PYTHONPATH": str(ROOT), "QLEDGER_DATA_DIR": str(workdir / "data"), **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _one_error_line(result: subprocess.CompletedProcess[str], *words: str) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


UNREACHABLE = "service unreachable"
REGISTER = ("--role", "supplier", "--org", "S-1")


@pytest.mark.parametrize(
    ("draft", "words"),
    [
        ("unknown-kind", ("unknown kind", "inspectoin", "goods_receipt")),
        ("too-many-defects", ("defects (80) exceed quantity (50)",)),
        # The mistake is named with the number to write instead.
        ("iso-date", ("eventTime is Unix seconds", "1796119200")),
        ("not-an-object", ("a draft is a JSON object",)),
        ("broken", ("not valid JSON",)),
        ("missing", ("cannot read",)),
    ],
)
def test_a_bad_draft_is_one_line(workdir: Path, draft: str, words: tuple[str, ...]) -> None:
    result = _run(workdir, "sign", f"{draft}.json", "--key", "plain.json", *DOMAIN)
    _one_error_line(result, *words)
    key = json.loads((workdir / "plain.json").read_text())["private_key"]
    assert key[2:] not in result.stdout + result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["submit", "ok.json", "--key", "plain.json"],
        ["participants", "list", "--key", "plain.json"],
        ["participants", "add", "0x" + "11" * 20, *REGISTER, "--key", "plain.json"],
        ["receipt", "0x" + "ab" * 32, "--key", "plain.json"],
        ["credit", "rank", "--key", "plain.json"],
    ],
)
def test_an_unreachable_service_is_one_line(workdir: Path, args: list[str]) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    _one_error_line(_run(workdir, *args, "--url", url), UNREACHABLE, url)


def test_receipt_and_verify_refuse_what_they_cannot_use(workdir: Path) -> None:
    """Neither a struct hash nor a file; a "receipt" that carries no record (here, a draft)."""
    url = f"http://127.0.0.1:{_closed_port()}"
    result = _run(workdir, "receipt", "0x12", "--key", "plain.json", "--url", url)
    _one_error_line(result, "neither a struct hash", "nor a file")
    result = _run(workdir, "verify", "ok.json", "--chain-id", "31337", "--ledger", "0x" + "11" * 20)
    _one_error_line(result, "not a receipt that carries its record")


def test_an_encrypted_key_without_a_terminal_asks_for_the_variable(workdir: Path) -> None:
    result = _run(workdir, "sign", "ok.json", "--key", "encrypted.json", *DOMAIN)
    _one_error_line(result, "no terminal", "QLEDGER_KEY_PASSPHRASE")
    result = _run(workdir, "keys", "new", "fresh")
    _one_error_line(result, "no terminal", "QLEDGER_KEY_PASSPHRASE")
    assert not (workdir / "data" / "keys" / "fresh.json").exists()


def test_a_wrong_passphrase_is_one_line_and_never_echoed(workdir: Path) -> None:
    result = _run(
        workdir,
        "sign",
        "ok.json",
        "--key",
        "encrypted.json",
        *DOMAIN,
        QLEDGER_KEY_PASSPHRASE="wrong guess 1234",
    )
    _one_error_line(result, "wrong passphrase")
    assert "wrong guess 1234" not in result.stdout + result.stderr


def test_the_right_passphrase_signs(workdir: Path) -> None:
    result = _run(
        workdir,
        "sign",
        "ok.json",
        "--key",
        "encrypted.json",
        *DOMAIN,
        QLEDGER_KEY_PASSPHRASE="right passphrase",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["structHash"].startswith("0x")
