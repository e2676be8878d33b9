"""Everything a request handler or the anchorer needs, built once per process."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from functools import cached_property

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from api.settings import Settings
from api.store.db import make_engine, migrate, session_factory
from ledger.chain import ChainClient, Deployment
from ledger.records import Domain, Role


@dataclass
class RoleCache:
    """Current on-chain role and organisation of each key, cached for ``ttl`` seconds.

    Intake asks for every record; the chain answers in ~1 ms per call, so a short cache turns
    thousands of calls a second into a few. The service updates entries itself when it
    registers or revokes, so the staleness bound only matters for changes made around it.
    """

    chain: ChainClient
    ttl: float
    _entries: dict[str, tuple[float, Role | None, str | None]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, address: str) -> tuple[Role | None, str | None]:
        now = time.monotonic()
        with self._lock:
            hit = self._entries.get(address)
        if hit and now - hit[0] < self.ttl:
            return hit[1], hit[2]
        role = self.chain.role_of(address)
        if role is None and self.chain.has_role(Role.ADMIN, address):
            role = Role.ADMIN
        org = self.chain.org_of(address) if role is not None else None
        with self._lock:
            self._entries[address] = (now, role, org)
        return role, org

    def forget(self, address: str) -> None:
        with self._lock:
            self._entries.pop(address, None)


@dataclass
class ServiceContext:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    chain: ChainClient
    deployment: Deployment
    roles: RoleCache

    @cached_property
    def domain(self) -> Domain:
        """The EIP-712 domain records must be signed for (fixed by the deployment)."""
        return Domain(chainId=self.deployment.chain_id, verifyingContract=self.deployment.ledger)

    @classmethod
    def create(cls, settings: Settings, chain: ChainClient | None = None) -> ServiceContext:
        settings.prepare_data_dir()  # the start-up step that writes (data dir, token secret)
        engine = make_engine(settings.db_url)
        migrate(engine)
        if chain is None:
            if not settings.rpc_url:
                raise RuntimeError(
                    "QLEDGER_RPC_URL is not set (qledger serve starts a local "
                    "chain and sets it for you)"
                )
            deployment = Deployment.load(settings.deployment_path)
            chain = ChainClient.connect(
                settings.rpc_url, private_key=settings.anchorer_key, deployment=deployment
            )
        if chain.deployment is None:
            raise RuntimeError("chain client is not attached to a deployment")
        return cls(
            settings=settings,
            engine=engine,
            sessions=session_factory(engine),
            chain=chain,
            deployment=chain.deployment,
            roles=RoleCache(chain, settings.role_cache_seconds),
        )
