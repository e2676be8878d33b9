"""``qledger fl simulate --rpc`` (issue 20, item 6): the rounds are anchored to the running
chain of a running service, reported to it, and shown under /ui/models; ``--data-dir`` is the
service's data dir (where the deployment is), as in every other command."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from typer.testing import CliRunner

from api.context import ServiceContext
from api.main import create_app
from api.settings import Settings
from cli.fl import app as fl_cli
from client.service import QledgerClient
from ledger.chain import ChainClient
from ledger.chain.local import LocalChain, dev_private_keys
from ledger.keys import Signer

runner = CliRunner()


def _serve(app: Any) -> tuple[uvicorn.Server, threading.Thread, str]:
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"


def test_rpc_without_the_services_deployment_is_one_clear_error(tmp_path: Path) -> None:
    out = runner.invoke(
        fl_cli,
        ["simulate", "--rpc", "http://127.0.0.1:9", "--data-dir", str(tmp_path / "nothing")],
    )
    assert out.exit_code != 0
    assert "no deployment file at" in out.output and "--data-dir" in out.output


def test_rpc_and_in_process_chain_contradict(tmp_path: Path) -> None:
    out = runner.invoke(
        fl_cli, ["simulate", "--rpc", "http://127.0.0.1:9", "--chain", "in-process"]
    )
    assert out.exit_code != 0 and "--rpc anchors to a running chain" in out.output


@pytest.mark.slow
@pytest.mark.anvil
def test_simulate_with_rpc_shows_its_rounds_in_the_dashboard(
    tmp_path: Path, anvil_node: LocalChain
) -> None:
    key = dev_private_keys()[0]
    chain = ChainClient.connect(anvil_node.rpc_url, private_key=key, allow_evm_mine=True)
    data_dir = tmp_path / "service"
    data_dir.mkdir()
    chain.deploy().save(data_dir / "deployment.json")
    settings = Settings(
        data_dir=data_dir,
        rpc_url=anvil_node.rpc_url,
        anchorer_key=key,
        confirmations=0,
        token_secret="fl-rpc-" + "0" * 40,
    )
    ctx = ServiceContext.create(settings)
    server, thread, url = _serve(create_app(ctx=ctx))
    try:
        admin_key = tmp_path / "admin.json"
        admin_key.write_text(json.dumps({"private_key": key}))
        out = runner.invoke(
            fl_cli,
            [
                "simulate",
                "--suppliers",
                "3",
                "--rounds",
                "1",
                "--rpc",
                anvil_node.rpc_url,
                "--data-dir",
                str(data_dir),
                "--partitions-dir",
                str(tmp_path / "partitions"),
                "--out-dir",
                str(tmp_path / "run"),
                "--key",
                str(admin_key),
                "--url",
                url,
            ],
        )
        assert out.exit_code == 0, out.output
        assert "in-process chain" not in out.output
        assert "reported     1 rounds and the final model" in out.output
        run_id = next(
            line.split()[2] for line in out.output.splitlines() if line.startswith("run id")
        )
        with QledgerClient(url) as client:
            client.login(Signer.from_hex(key))
            (run,) = client.get("/v1/models")["runs"]
            assert run["runId"] == run_id and run["modelFileHeld"]
            assert [r["round"] for r in run["rounds"]] == [1]
            token = client.token
        # The dashboard's models page lists the run (a browser session from the same token).
        with httpx.Client(base_url=url, headers={"Origin": url}) as browser:
            session = browser.post("/ui/session", json={"accessToken": token})
            assert session.status_code == 200, session.text
            page = browser.get("/ui/models")
            assert page.status_code == 200 and run_id[:10] in page.text
        # The round is on the running chain itself, not on a throwaway one.
        assert chain.latest_model_round(bytes.fromhex(run_id[2:])) == 1
    finally:
        server.should_exit = True
        thread.join(30)
        ctx.engine.dispose()
