"""The light install (issue 20 item 2): `pip install qledger` from this tree, into a fresh venv,
with the project's pins, brings the client and signing and none of the service, credit or
federated stacks, and a script in that venv signs, submits one record and a batch, fetches a
receipt and verifies it offline against the log key, against a live service."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.client.conftest import Live
from tests.helpers import ROOT

pytestmark = pytest.mark.slow

# What an MES integration job must not have to install (pyproject.toml's extras).
HEAVY = ("torch", "flwr", "xgboost", "fastapi", "sqlalchemy", "shap", "typer", "uvicorn")
# The working tree minus the installed tools, caches and build leftovers (a stale build/ could
# put removed modules into the wheel): every dot-directory (.git, .venv, .mypy_cache, ...).
SKIP = (".*", "node_modules", "build", "dist", "*.egg-info", "__pycache__")

SCRIPT = r"""
import importlib.util, json, sys, time
from client import Domain, QledgerClient, load_signer, sign_draft, verify_receipt_offline
from ledger.tlog import Verifier

url, key = sys.argv[1], sys.argv[2]
signer = load_signer(key)
now = int(time.time())

def draft(lot):
    return {"subject": "SUP-01", "kind": "inspection", "partNumber": "P-100", "lotId": lot,
            "eventTime": now - 3600, "quantity": 50, "defects": 1,
            "payload": {"disposition": "non_conformant", "inspectionType": "final",
                        "lotSize": 1000, "sampleSize": 50,
                        "defectList": [{"code": "FLASH", "count": 1}],
                        "sensorReport": [{"type": "bore_diameter", "uom": "MMT", "lsl": 9.95,
                                          "usl": 10.05, "key": True, "values": [10.0, 10.01]}]}}

with QledgerClient(url) as service:
    cp = service.checkpoint()
    domain = Domain(chainId=cp["chainId"], verifyingContract=cp["contract"])
    one = sign_draft(signer, domain, draft("LOT-L-1"))
    accepted = service.submit(one.model_dump(mode="json"))
    again = service.submit(one.model_dump(mode="json"))
    batch = service.submit_batch(
        [sign_draft(signer, domain, draft(f"LOT-L-{i}")).model_dump(mode="json") for i in (2, 3)]
    )
    service.login(signer)
    receipt = service.wait_receipt(accepted["structHash"], timeout=120, interval=0.2)
    log_key = Verifier.parse(service.get("/v1/log/key")["vkey"])
    report = verify_receipt_offline(one, receipt, log_key=log_key)
    tampered = one.model_dump(mode="json")
    tampered["payload"]["sensorReport"][0]["values"] = [10.0, 10.0]
    forged = verify_receipt_offline(tampered, receipt, log_key=log_key)
print(json.dumps({
    "accepted": accepted, "duplicate": again["duplicate"], "batch": batch["accepted"],
    "verified": report.ok, "forged": forged.ok,
    "failed": [c.check.value for c in report.checks if not c.ok and not c.skipped],
    "heavy": [m for m in sys.argv[3].split(",") if importlib.util.find_spec(m)],
}))
"""


def test_the_client_alone_signs_submits_and_verifies(live: Live, tmp_path: Path) -> None:
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*SKIP))
    # The project's wheel, built from the copy with this venv's setuptools (no isolated build
    # environment to download), installed with this venv's pip into a venv that has none:
    # the same distribution `pip install .` installs, in a third of the time.
    wheels = tmp_path / "dist"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    # Only what the venv installed is importable: not the source tree, nor a PYTHONPATH to it
    # (pip would take an egg-info found there for an installed qledger).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    built = subprocess.run(
        [*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [*pip, "--python", str(python), "install", "-q", "--no-compile", "-c",
         str(ROOT / "constraints.txt"), *map(str, wheels.glob("qledger-*.whl"))],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )  # fmt: skip
    if install.returncode != 0 and "Could not find a version" in install.stderr:
        pytest.skip(f"no package index reachable: {install.stderr[-300:]}")
    assert install.returncode == 0, install.stderr[-3000:]

    stop = threading.Event()

    def anchor() -> None:
        while not stop.is_set():
            live.anchor()
            time.sleep(0.2)

    before = live.count_all()
    anchorer = threading.Thread(target=anchor, daemon=True)
    anchorer.start()
    key = live.key_file("supplier", tmp_path)
    try:
        run = subprocess.run(
            [str(python), "-c", SCRIPT, live.url, str(key), ",".join(HEAVY)],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
            env=env,
        )
        # The example job docs/integrating-mes.md shows, as it is, in the same light venv.
        job = subprocess.run(
            [str(python), str(ROOT / "docs" / "examples" / "mes_job.py")],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
            env={**env, "QLEDGER_URL": live.url, "QLEDGER_KEY_FILE": str(key)},
        )
    finally:
        stop.set()
        anchorer.join(10)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout)
    assert out["heavy"] == []
    assert out["duplicate"] is True and out["batch"] == 2
    assert out["verified"] is True, out["failed"]
    assert out["forged"] is False
    assert job.returncode == 0 and job.stdout.strip().endswith(" verified"), job.stderr[-3000:]
    assert live.count_all() == before + 4
