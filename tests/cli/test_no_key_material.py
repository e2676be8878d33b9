"""No private key in any output, log, traceback or repr (issue 18 item 6).

The adversary here is the user's own terminal and logs: a command that fails (service down,
invalid draft, wrong passphrase) must end in one ``error:`` line, and nothing it prints, nor
anything the service or anchorer logs, may contain the key, in any spelling.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from eth_account import Account
from pydantic import SecretStr

from api.settings import Settings
from cli import main
from ledger.errors import ChainError
from ledger.keys import Signer, load_key
from tests.helpers import ROOT, inspection_payload

# A key whose hex has letters, so that upper and lower case spellings differ.
SECRET_HEX = "c0ffee" + "ab" * 27 + "0123"
PASSPHRASE = "correct horse"
DEAD_URL = "http://127.0.0.1:9"  # the discard port: nothing listens, connections are refused
# qledger import of the sample export (it fails before reading any row: no service).
IMPORT_ARGS = [
    str(ROOT / "docs" / "examples" / "inspection-lots.csv"),
    "--mapping",
    str(ROOT / "docs" / "examples" / "inspection-mapping.toml"),
]
DOMAIN_ARGS = ["--chain-id", "31337", "--contract", "0x5FbDB2315678afecb367f642d1B4fB8Fe56d7c15"]


def spellings(hex_key: str) -> list[str]:
    """Every way the key could appear: with and without 0x, lower and upper case, and the
    bytes repr Python would print."""
    raw = bytes.fromhex(hex_key)
    forms = [hex_key.lower(), hex_key.upper(), "0x" + hex_key.lower(), "0x" + hex_key.upper()]
    return [*forms, repr(raw)[2:-1][:40]]


def assert_no_key(text: str) -> None:
    for form in spellings(SECRET_HEX):
        assert form not in text, f"key material ({form[:10]}...) in output:\n{text}"


def write_plain_key(path: Path) -> Path:
    path.write_text(json.dumps({"private_key": "0x" + SECRET_HEX}))
    return path


def write_keystore(path: Path) -> Path:
    # pbkdf2 with few iterations: a real V3 keystore that decrypts fast enough for a test.
    path.write_text(
        json.dumps(
            Account.encrypt(bytes.fromhex(SECRET_HEX), PASSPHRASE, kdf="pbkdf2", iterations=2)
        )
    )
    return path


def draft(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "subject": "SUP-01",
        "kind": "inspection",
        "partNumber": "P-100",
        "lotId": "LOT-1",
        "eventTime": 1_700_000_000,
        "quantity": 50,
        "defects": 1,
        "payload": inspection_payload(1),
    }
    return base | overrides


# (name, key kind, extra env, argv builder given (key path, draft path))
SCENARIOS = {
    "rank, service down": (
        "plain",
        {},
        lambda k, d: ["credit", "rank", "--key", k, "--url", DEAD_URL],
    ),
    "rank, keystore key, service down": (
        "keystore",
        {"QLEDGER_KEY_PASSPHRASE": PASSPHRASE},
        lambda k, d: ["credit", "rank", "--key", k, "--url", DEAD_URL],
    ),
    "show, service down": (
        "plain",
        {},
        lambda k, d: ["credit", "show", "SUP-01", "--key", k, "--url", DEAD_URL],
    ),
    "import, service down": (
        "plain",
        {},
        lambda k, d: ["import", *IMPORT_ARGS, "--key", k, "--url", DEAD_URL],
    ),
    "import, keystore key, service down": (
        "keystore",
        {"QLEDGER_KEY_PASSPHRASE": PASSPHRASE},
        lambda k, d: ["import", *IMPORT_ARGS, "--key", k, "--url", DEAD_URL],
    ),
    "import, wrong passphrase": (
        "keystore",
        {"QLEDGER_KEY_PASSPHRASE": "wrong"},
        lambda k, d: ["import", *IMPORT_ARGS, "--key", k, "--url", DEAD_URL],
    ),
    "submit draft, service down": (
        "plain",
        {},
        lambda k, d: ["submit", d, "--key", k, "--url", DEAD_URL],
    ),
    "sign, unknown kind": (
        "plain",
        {"draft": draft(kind="bribe")},
        lambda k, d: ["sign", d, "--key", k, *DOMAIN_ARGS],
    ),
    "sign, defects > quantity": (
        "plain",
        {"draft": draft(quantity=5, defects=50)},
        lambda k, d: ["sign", d, "--key", k, *DOMAIN_ARGS],
    ),
    "sign, ISO date as eventTime": (
        "plain",
        {"draft": draft(eventTime="2024-05-01T10:00:00Z")},
        lambda k, d: ["sign", d, "--key", k, *DOMAIN_ARGS],
    ),
    "sign, draft missing fields": (
        "plain",
        {"draft": {"kind": "inspection"}},
        lambda k, d: ["sign", d, "--key", k, *DOMAIN_ARGS],
    ),
    "sign, wrong passphrase": (
        "keystore",
        {"QLEDGER_KEY_PASSPHRASE": "wrong"},
        lambda k, d: ["sign", d, "--key", k, *DOMAIN_ARGS],
    ),
    "sign, encrypted key and no terminal": (
        "keystore",
        {},
        lambda k, d: ["sign", d, "--key", k, *DOMAIN_ARGS],
    ),
    "notify inbox, service down": (
        "plain",
        {},
        lambda k, d: ["notify", "inbox", "--key", k, "--url", DEAD_URL],
    ),
    "notify ack, keystore key, service down": (
        "keystore",
        {"QLEDGER_KEY_PASSPHRASE": PASSPHRASE},
        lambda k, d: ["notify", "ack", "QN-1", "--key", k, "--url", DEAD_URL],
    ),
    "notify create, parts file not JSON": (
        "plain",
        {},
        lambda k, d: [
            "notify",
            "create",
            "QN-1",
            "--type",
            "investigation",
            "--to",
            "SUP-01",
            "--parts",
            k + ".missing",
            "--key",
            k,
            "--url",
            DEAD_URL,
        ],
    ),
    "participants add, service down": (
        "plain",
        {},
        lambda k, d: [
            "participants",
            "add",
            "0x" + "11" * 20,
            "--role",
            "supplier",
            "--org",
            "SUP-09",
            "--key",
            k,
            "--url",
            DEAD_URL,
        ],
    ),
}


def prepare(tmp_path: Path, name: str) -> tuple[list[str], dict[str, str]]:
    key_kind, extra, argv = SCENARIOS[name]
    extra = dict(extra)
    key = (write_plain_key if key_kind == "plain" else write_keystore)(tmp_path / "key.json")
    draft_path = tmp_path / "draft.json"
    draft_path.write_text(json.dumps(extra.pop("draft", draft())))
    env = {
        k: v for k, v in os.environ.items() if k not in ("QLEDGER_KEY_PASSPHRASE", "QLEDGER_DEBUG")
    }
    env |= {"QLEDGER_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(ROOT), "COLUMNS": "60"}
    env |= {k: str(v) for k, v in extra.items()}
    return argv(str(key), str(draft_path)), env


def assert_one_line_error(stdout: str, stderr: str) -> None:
    assert_no_key(stdout + stderr)
    assert "Traceback" not in stderr and "locals" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert stdout.strip() == "", stdout


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_failing_command_prints_one_line_and_no_key(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """In-process through the same entry point as the ``qledger`` script."""
    argv, env = prepare(tmp_path, name)
    for variable in ("QLEDGER_KEY_PASSPHRASE", "QLEDGER_DEBUG"):
        monkeypatch.delenv(variable, raising=False)
    for variable, value in env.items():
        if variable.startswith("QLEDGER_") or variable == "COLUMNS":
            monkeypatch.setenv(variable, value)
    monkeypatch.setattr(sys, "argv", ["qledger", *argv])
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False, raising=False)
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code not in (0, None)
    out, err = capsys.readouterr()
    assert_one_line_error(out, err)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_failing_command_as_a_user_runs_it(name: str, tmp_path: Path) -> None:
    """The real ``qledger`` process, no terminal on stdin, as a user or a CI job runs it."""
    argv, env = prepare(tmp_path, name)
    result = subprocess.run(
        [sys.executable, "-m", "cli", *argv],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert_one_line_error(result.stdout, result.stderr)


def test_signer_and_settings_reprs_mask_the_key(tmp_path: Path) -> None:
    signer = load_key(write_keystore(tmp_path / "k.json"), PASSPHRASE)
    assert signer.private_key == bytes.fromhex(SECRET_HEX)
    for text in (repr(signer), str(signer), f"{signer}", repr([signer]), repr({"s": signer})):
        assert_no_key(text)
        assert signer.address in text
    assert Signer.from_hex(SECRET_HEX) == signer  # masking the repr does not change equality

    settings = Settings(data_dir=tmp_path, anchorer_key="0x" + SECRET_HEX, token_secret=SECRET_HEX)
    assert isinstance(settings.anchorer_key, SecretStr)
    for text in (
        repr(settings),
        str(settings),
        str(settings.model_dump()),
        settings.model_dump_json(),
    ):
        assert_no_key(text)
    assert settings.anchorer_private_key() == "0x" + SECRET_HEX
    assert settings.token_secret_value == SECRET_HEX


def test_settings_from_environment_mask_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QLEDGER_ANCHORER_KEY", SECRET_HEX.upper())
    settings = Settings(data_dir=tmp_path)
    assert_no_key(repr(settings))
    assert settings.anchorer_private_key() == SECRET_HEX.upper()


def test_anchorer_startup_logs_no_key(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The service (and its anchorer) starting with QLEDGER_ANCHORER_KEY against a node that
    is not there: every log record and the error it stops with are free of the key."""
    from api.context import ServiceContext
    from ledger.chain import Deployment

    deployment = tmp_path / "deployment.json"
    Deployment(
        chain_id=31337,
        ledger="0x" + "aa" * 20,
        model_registry="0x" + "bb" * 20,
        commitment_log="0x" + "cc" * 20,
        deployed_block=0,
    ).save(deployment)
    settings = Settings(
        data_dir=tmp_path,
        rpc_url=DEAD_URL,
        deployment_file=deployment,
        anchorer_key="0x" + SECRET_HEX,
    )
    caplog.set_level(logging.DEBUG)
    logging.getLogger("qledger").info("starting with %s", settings)
    with pytest.raises(ChainError) as failure:
        ServiceContext.create(settings)
    assert_no_key(f"{failure.value!r} {failure.value} {failure.getrepr()}")
    assert_no_key(caplog.text)
    assert_no_key(" ".join(repr(record.__dict__) for record in caplog.records))


@pytest.mark.slow
def test_failing_submit_logs_no_key(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A refused record at the service: the request, the refusal and the logs hold no key of
    the signer (the signer's key never leaves the client; the logs must not pretend it does)."""
    from tests.api.conftest import make_service

    service = make_service(tmp_path, "sqlite", anchorer_key="0x" + SECRET_HEX)
    supplier = service.parties["supplier"]
    bad = service.inspection(supplier, defects=3).model_dump(mode="json")
    bad["record"]["defects"] = 4  # signature no longer matches
    caplog.set_level(logging.DEBUG)
    with service.client:
        response = service.client.post("/v1/records", json=bad)
        unknown = Signer.from_hex(SECRET_HEX)
        forged = service.inspection(supplier, defects=1).model_dump(mode="json")
        forged["signer"] = unknown.address
        response_forged = service.client.post("/v1/records", json=forged)
    service.ctx.engine.dispose()
    assert response.status_code == 400 or response.status_code == 422, response.text
    assert 400 <= response_forged.status_code < 500, response_forged.text
    supplier_hex = supplier.signer.private_key.hex()
    for text in (caplog.text, response.text, response_forged.text):
        assert_no_key(text)
        assert supplier_hex not in text.lower()
