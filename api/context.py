"""Everything a request handler or the anchorer needs, built once per process."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from api.roles import RoleFollower, RoleMirror
from api.settings import Settings
from api.store.db import make_engine, migrate, read_session_factory, session_factory
from ledger.chain import ChainClient, Deployment
from ledger.errors import ChainError
from ledger.records import Domain

if TYPE_CHECKING:
    from api.ratelimit import AbuseLimits

log = logging.getLogger("qledger.api")


@dataclass
class ServiceContext:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    chain: ChainClient
    deployment: Deployment
    roles: RoleMirror

    @cached_property
    def limits(self) -> AbuseLimits:
        """This process's rate limiters (sign-in, intake), from the settings."""
        from api.ratelimit import AbuseLimits

        return AbuseLimits(self.settings)

    @cached_property
    def read_sessions(self) -> sessionmaker[Session]:
        """Sessions for reads only: on SQLite they do not queue for the one write lock
        (api.store.db.read_session_factory)."""
        return read_session_factory(self.engine)

    @cached_property
    def follower(self) -> RoleFollower:
        """Reads the chain's role events into ``roles``; its thread runs where the anchorer
        does (``anchor_when_leader``), and ``create`` catches up once."""
        return RoleFollower(self)

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
                settings.rpc_url, private_key=settings.anchorer_private_key(), deployment=deployment
            )
        if chain.deployment is None:
            raise RuntimeError("chain client is not attached to a deployment")
        sessions = session_factory(engine)
        ctx = cls(
            settings=settings,
            engine=engine,
            sessions=sessions,
            chain=chain,
            deployment=chain.deployment,
            roles=RoleMirror(
                sessions, settings.roles_refresh_seconds, read_session_factory(engine)
            ),
        )
        try:
            # One catch-up at start, so a fresh process knows every role the chain knows.
            # Best effort: without it the process serves what the store already mirrors.
            ctx.follower.sync()
        except (ChainError, DBAPIError) as exc:
            log.warning("role mirror not caught up at start (%s); serving the stored mirror", exc)
        return ctx
