"""The local anvil chain: start, stop from another process, restart with the chain kept."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account

from ledger.chain import ChainClient
from ledger.chain import local as localchain
from ledger.chain.local import LocalChain, dev_private_keys, running_chain, start_anvil, stop_anvil
from ledger.errors import ChainError, ChainUnavailable
from ledger.records import Role

pytestmark = pytest.mark.anvil


@pytest.fixture
def own_anvil(tmp_path: Path) -> Iterator[LocalChain]:
    try:
        localchain.anvil_binary()
    except ChainError as exc:
        pytest.skip(f"anvil is not available: {exc}")
    chain = start_anvil(tmp_path / "chain")
    yield chain
    chain.stop()


def test_anvil_runs_as_configured(own_anvil: LocalChain) -> None:
    assert own_anvil.rpc_url == f"http://127.0.0.1:{own_anvil.port}"
    assert (own_anvil.data_dir / "anvil.pid").read_text().strip() == str(own_anvil.pid)
    assert (own_anvil.data_dir / "anvil.port").read_text().strip() == str(own_anvil.port)
    cmdline = Path(f"/proc/{own_anvil.pid}/cmdline").read_bytes().split(b"\0")
    assert b"--prune-history" in cmdline
    assert cmdline[cmdline.index(b"--host") + 1] == b"127.0.0.1"
    assert cmdline[cmdline.index(b"--chain-id") + 1] == b"31337"
    client = ChainClient.connect(own_anvil.rpc_url)
    assert client.chain_id == 31337
    # the well-known dev keys are anvil's funded accounts
    expected = [Account.from_key(key).address for key in dev_private_keys()]
    assert client.accounts() == expected
    assert client.balance(expected[9]) > 0
    # starting again for the same directory returns the running one
    again = start_anvil(own_anvil.data_dir)
    assert (again.pid, again.port) == (own_anvil.pid, own_anvil.port)


def test_restart_keeps_the_chain(own_anvil: LocalChain) -> None:
    client = ChainClient.connect(own_anvil.rpc_url, private_key=dev_private_keys()[0])
    deployment = client.deploy()
    client.register_participant(client.accounts()[1], Role.SUPPLIER, "SUP-1")
    client.anchor_batch(os.urandom(32), 10)
    checkpoint = client.checkpoint()
    port = own_anvil.port

    # stop from another process, the way `make chain-stop` does
    subprocess.run(
        [sys.executable, "-m", "ledger.chain.local", "stop", str(own_anvil.data_dir)],
        check=True,
        capture_output=True,
        cwd=localchain.REPO_ROOT,
    )
    assert running_chain(own_anvil.data_dir) is None
    assert (own_anvil.data_dir / "anvil-state.json").stat().st_size > 0
    with pytest.raises(ChainUnavailable):
        client.checkpoint()

    restarted = start_anvil(own_anvil.data_dir)
    assert restarted.port == port  # same URL after a restart when the port is free
    again = ChainClient.connect(
        restarted.rpc_url, private_key=dev_private_keys()[0], deployment=deployment
    )
    assert again.checkpoint() == checkpoint
    assert again.role_of(again.accounts()[1]) is Role.SUPPLIER
    assert again.org_of(again.accounts()[1]) == "SUP-1"
    again.anchor_batch(os.urandom(32), 5)
    assert again.checkpoint().batch_count == checkpoint.batch_count + 1


def test_stop_when_not_running(tmp_path: Path) -> None:
    assert stop_anvil(tmp_path) is False
    (tmp_path / "anvil.pid").write_text(f"{os.getpid()}\n")  # a live pid that is not anvil
    assert stop_anvil(tmp_path) is False
    assert not (tmp_path / "anvil.pid").exists()


def test_block_time_mines_on_its_own(tmp_path: Path) -> None:
    try:
        localchain.anvil_binary()
    except ChainError as exc:
        pytest.skip(f"anvil is not available: {exc}")
    with start_anvil(tmp_path / "interval", block_time=0.2) as chain:
        client = ChainClient.connect(chain.rpc_url, private_key=dev_private_keys()[0])
        client.deploy()
        result = client.anchor_batch(os.urandom(32), 3)
        # no evm_mine: blocks arrive every 0.2 s
        block = client.wait_for_confirmations(result.tx_hash, 3, timeout=20)
        assert block == result.block_number
        assert client.block_number() >= block + 2


def test_missing_binary_says_how_to_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(localchain.ANVIL_ENV, str(tmp_path / "nope" / "anvil"))
    with pytest.raises(ChainError, match="make install"):
        localchain.anvil_binary()
    with pytest.raises(ChainError, match="make install"):
        start_anvil(tmp_path / "chain")
