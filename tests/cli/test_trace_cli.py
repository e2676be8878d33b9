"""``qledger trace`` as a user runs it, against the live service app (in-process HTTP): sign
and submit genealogy, ask where-used / where-from / scope, and the one-line refusals."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

import cli.trace
from cli import app
from client.service import QledgerClient
from ledger.keys import Signer
from tests.api.conftest import Service, make_service

runner = CliRunner()


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Service]:
    svc = make_service(tmp_path, "sqlite")
    with svc.client:

        def in_process(url: str, key: Path) -> QledgerClient:
            # The real client and the real app; only the socket is replaced by the ASGI one.
            client = QledgerClient(url)
            client.http = svc.client
            client.login(_signer(key))
            return client

        monkeypatch.setattr(cli.trace, "_client", in_process)
        yield svc
    svc.ctx.engine.dispose()


def _signer(path: Path) -> Signer:
    return Signer(bytes.fromhex(json.loads(path.read_text())["private_key"][2:]))


def _key(tmp_path: Path, svc: Service, name: str) -> Path:
    path = tmp_path / f"{name}.json"
    hex_key = "0x" + svc.parties[name].signer.private_key.hex()
    path.write_text(json.dumps({"private_key": hex_key}))
    return path


def test_sign_query_and_refusals(service: Service, tmp_path: Path) -> None:
    sup1, oem = _key(tmp_path, service, "supplier"), _key(tmp_path, service, "oem")
    sup2 = _key(tmp_path, service, "supplier2")
    moulded = runner.invoke(
        app,
        [
            "trace",
            "sign-transformation",
            "--input",
            "RAW-01,RESIN,R-1",
            "--output",
            "SUP-02,HOUSING,H-1",
            "--key",
            str(sup2),
            "--site",
            "moulding",
        ],
    )
    assert moulded.exit_code == 0, moulded.output
    for args, key in (
        (["SUP-01,ECU,SN-1", "SUP-02,HOUSING,H-1", "SUP-01,PCB,P-1"], sup1),
        (["OEM-01,VEHICLE,VIN-1", "SUP-01,ECU,SN-1"], oem),
    ):
        result = runner.invoke(app, ["trace", "sign-aggregation", *args, "--key", str(key)])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["status"] == "pending"

    scope = runner.invoke(app, ["trace", "scope", "RAW-01,RESIN,R-1", "--key", str(oem)])
    assert scope.exit_code == 0, scope.output
    assert "3 lots" in scope.output and "VIN-1" in scope.output
    as_json = runner.invoke(
        app, ["trace", "where-from", "OEM-01,VEHICLE,VIN-1", "--key", str(oem), "--json"]
    )
    answer = json.loads(as_json.output)
    assert [(lv["depth"], lv["count"]) for lv in answer["levels"]] == [(1, 1), (2, 2), (3, 1)]
    used = runner.invoke(app, ["trace", "where-used", "SUP-02,HOUSING,H-1", "--key", str(sup2)])
    assert used.exit_code == 0 and "VIN-1" in used.output

    # Refusals end in one line with the service's code: a loop, a competitor's lot, bad names.
    loop = runner.invoke(
        app,
        [
            "trace",
            "sign-aggregation",
            "SUP-02,HOUSING,H-1",
            "OEM-01,VEHICLE,VIN-1",
            "--key",
            str(sup2),
        ],
    )
    assert loop.exit_code == 1 and "genealogy_cycle" in loop.output
    foreign = runner.invoke(app, ["trace", "scope", "RAW-01,RESIN,R-1", "--key", str(sup1)])
    assert foreign.exit_code == 1 and "forbidden_trace" in foreign.output
    bad = runner.invoke(app, ["trace", "where-used", "no-commas", "--key", str(oem)])
    assert bad.exit_code == 1 and "MAKER,PART,LOT" in bad.output
