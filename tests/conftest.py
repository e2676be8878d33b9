"""Shared fixtures: chains with the qledger contracts deployed.

* ``inprocess_chain`` — a fresh in-process py-evm chain (eth-tester) per test, contracts deployed,
  the client's sender is admin and anchorer. Fast; use it for unit tests.
* ``anvil_chain`` — a fresh deployment on a real anvil node (one anvil per test session, started
  in a temporary directory on a free port); the sender (anvil dev account 0, signing locally)
  is admin and anchorer. Tests using it must be marked ``@pytest.mark.anvil``; it skips with the
  reason when the anvil binary is missing.
* ``any_chain`` — parametrized over both (the anvil case carries the ``anvil`` mark).
* ``anvil_node`` — the session's running anvil (:class:`ledger.chain.local.LocalChain`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.chain import ChainClient
from ledger.chain.local import LocalChain, anvil_binary, dev_private_keys, start_anvil
from ledger.errors import ChainError


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``make test`` runs 2 workers), each worker gets a PostgreSQL
    database of its own: the store tests drop every table of ours before they start, so two
    workers on one database would pull it from under each other. The database is created
    beside the configured one (``test`` -> ``test_gw0``) and the URL pointed at it, which the
    tests and the processes they start read from the environment."""
    import os

    # This process's own worker id (not PYTEST_XDIST_WORKER: the pytest a test starts in
    # .ape-venv inherits that variable, and it is no worker)
    worker = getattr(config, "workerinput", {}).get("workerid")
    url = os.environ.get("QLEDGER_TEST_POSTGRES_URL")
    if not worker or not url:
        return
    from sqlalchemy import create_engine, make_url, text

    base = make_url(url)
    name = f"{base.database}_{worker}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name})
            if not exists:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    finally:
        admin.dispose()
    os.environ["QLEDGER_TEST_POSTGRES_URL"] = base.set(database=name).render_as_string(
        hide_password=False
    )


def _anvil_missing_reason() -> str | None:
    try:
        anvil_binary()
    except ChainError as exc:
        return str(exc)
    return None


@pytest.fixture(scope="session")
def anvil_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalChain]:
    reason = _anvil_missing_reason()
    if reason is not None:
        pytest.skip(f"anvil is not available: {reason}")
    data_dir: Path = tmp_path_factory.mktemp("anvil")
    chain = start_anvil(data_dir)
    try:
        yield chain
    finally:
        chain.stop()


@pytest.fixture
def inprocess_chain() -> ChainClient:
    client = ChainClient.in_process()
    client.deploy()
    return client


@pytest.fixture
def anvil_chain(anvil_node: LocalChain) -> ChainClient:
    client = ChainClient.connect(
        anvil_node.rpc_url, private_key=dev_private_keys()[0], allow_evm_mine=True
    )
    client.deploy()
    return client


@pytest.fixture(
    params=[
        pytest.param("inprocess", id="inprocess"),
        pytest.param("anvil", id="anvil", marks=pytest.mark.anvil),
    ]
)
def any_chain(request: pytest.FixtureRequest) -> ChainClient:
    """The same test on the in-process chain and on anvil."""
    fixture = "inprocess_chain" if request.param == "inprocess" else "anvil_chain"
    client: ChainClient = request.getfixturevalue(fixture)
    return client
