from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.auth import personal_sign_digest
from api.context import ServiceContext
from api.main import create_app
from api.settings import Settings
from ledger.chain import ChainClient
from ledger.keys import Signer
from ledger.records import Role, SignedRecord
from ledger.signing import sign_record
from tests.helpers import inspection_payload


@dataclass
class Party:
    signer: Signer
    org: str
    role: Role
    nonce: int = 0

    @property
    def address(self) -> str:
        return self.signer.address

    def next_nonce(self) -> int:
        self.nonce += 1
        return self.nonce


@dataclass
class Service:
    ctx: ServiceContext
    client: TestClient
    chain: ChainClient
    admin: Party
    parties: dict[str, Party] = field(default_factory=dict)

    def login(self, party: Party) -> dict[str, str]:
        challenge = self.client.post("/v1/auth/challenge", json={"address": party.address})
        assert challenge.status_code == 200, challenge.text
        body = challenge.json()
        signature = party.signer.sign_digest(personal_sign_digest(body["message"]))
        token = self.client.post(
            "/v1/auth/token",
            json={"address": party.address, "nonce": body["nonce"], "signature": signature},
        )
        assert token.status_code == 200, token.text
        return {"Authorization": f"Bearer {token.json()['accessToken']}"}

    def submit_inspections(self, n: int) -> list[str]:
        """``n`` inspections by the "supplier" party through POST /v1/records, each accepted
        (202); their struct hashes in order."""
        supplier = self.parties["supplier"]
        hashes = []
        for _ in range(n):
            answer = self.client.post(
                "/v1/records", json=self.inspection(supplier).model_dump(mode="json")
            )
            assert answer.status_code == 202, answer.text
            hashes.append(answer.json()["structHash"])
        return hashes

    def inspection(
        self,
        party: Party,
        *,
        defects: int = 1,
        subject: str | None = None,
        nonce: int | None = None,
        **overrides: Any,
    ) -> SignedRecord:
        return sign_record(
            party.signer,
            self.ctx.domain,
            subject=subject or party.org,
            kind="inspection",
            part_number="P-100",
            lot_id=f"LOT-{os.urandom(3).hex()}",
            event_time=int(time.time()) - 3600,  # within the 30-day eventTime bound
            quantity=50,
            defects=defects,
            nonce=party.next_nonce() if nonce is None else nonce,
            payload=inspection_payload(defects),
            **overrides,
        )


def _database_urls() -> list[Any]:
    urls: list[Any] = ["sqlite"]
    pg = os.environ.get("QLEDGER_TEST_POSTGRES_URL")
    urls.append(
        pytest.param(
            pg or "postgresql",
            # One id whatever the URL: xdist workers each have a database of their own
            # (tests/conftest.py) and must collect the same test names.
            id="postgresql",
            marks=[pytest.mark.postgres]
            + (
                []
                if pg
                else [
                    pytest.mark.skip(
                        reason="QLEDGER_TEST_POSTGRES_URL not set: "
                        "PostgreSQL store tests run in CI (.ci/run sets it)"
                    )
                ]
            ),
        )
    )
    return urls


def _fresh_postgres(url: str) -> str:
    """A clean schema per test run: drop every table of ours so migrations start at zero."""
    from sqlalchemy import MetaData, create_engine

    engine = create_engine(url)
    existing = MetaData()
    existing.reflect(engine)
    existing.drop_all(engine)
    engine.dispose()
    return url


def make_service(tmp_path: Path, database: str, **settings: Any) -> Service:
    chain = ChainClient.in_process()
    chain.deploy()
    url = None if database == "sqlite" else _fresh_postgres(database)
    cfg = Settings(
        data_dir=tmp_path / "data",
        database_url=url,
        confirmations=0,
        batch_max_seconds=0.01,
        token_secret="test-secret-" + "0" * 32,
        **settings,
    )
    ctx = ServiceContext.create(cfg, chain=chain)
    client = TestClient(create_app(ctx=ctx))
    admin = Party(Signer.generate(), "ADMIN", Role.ADMIN)
    chain.grant_role(Role.ADMIN, admin.address)
    service = Service(ctx=ctx, client=client, chain=chain, admin=admin)
    for name, org, role in [
        ("supplier", "SUP-01", Role.SUPPLIER),
        ("supplier2", "SUP-02", Role.SUPPLIER),
        ("oem", "OEM-01", Role.OEM),
        ("auditor", "AUD-01", Role.AUDITOR),
    ]:
        party = Party(Signer.generate(), org, role)
        chain.register_participant(party.address, role, org)
        service.parties[name] = party
    # Registered on chain behind the service's back: the role follower's catch-up mirrors them.
    ctx.follower.sync()
    return service


@pytest.fixture(params=_database_urls())
def service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Service]:
    svc = make_service(tmp_path, request.param)
    with svc.client:
        yield svc
    svc.ctx.engine.dispose()
