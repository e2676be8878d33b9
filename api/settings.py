"""Service configuration from the environment (``QLEDGER_*``) via pydantic-settings."""

from __future__ import annotations

import secrets
from functools import cached_property
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QLEDGER_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path(".qledger"), description="chain state, database, keys, reports")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default SQLite in data_dir")
    rpc_url: str | None = Field(None, description="EVM JSON-RPC; default: local anvil in data_dir")
    deployment_file: Path | None = Field(None, description="default data_dir/deployment.json")
    # Secrets are SecretStr so that a repr, a log line or a traceback shows '**********'.
    anchorer_key: SecretStr | None = Field(
        None,
        description="hex key of the ANCHORER/ADMIN account; "
        "default: the dev chain's first unlocked account",
    )
    # Batching: a batch closes at whichever comes first. 1,024 leaves keeps gas per record under
    # 64 (docs/benchmarks.md); 2 s bounds how stale a receipt can be at low traffic.
    batch_max_leaves: int = Field(1024, ge=1, le=65536)
    batch_max_seconds: float = Field(2.0, gt=0)
    confirmations: int = Field(1, ge=0, description="blocks on top of the anchoring block")
    retry_max_seconds: float = Field(30.0, gt=0, description="cap of the anchorer's backoff")
    # Intake limits: one record's body, a batch request's body and its record count.
    max_record_bytes: int = 64 * 1024
    max_batch_bytes: int = 32 * 1024 * 1024
    max_batch_records: int = 1000
    # A signer's clock may differ from ours by this much (signedAt is checked against it).
    clock_skew_seconds: int = 300
    # Role mirror (api/roles.py): intake reads roles from the store, never from the chain. A
    # role change made on chain reaches intake within
    #   roles_poll_seconds + (roles_confirmations - 1) x block time + roles_refresh_seconds
    # (docs/architecture.md, "Roles without the chain"); the service's own register/revoke
    # calls take effect at once.
    roles_poll_seconds: float = Field(
        1.0, gt=0, description="how often the role follower asks the chain for new blocks"
    )
    roles_confirmations: int = Field(
        1, ge=1, description="depth before a role event is mirrored (1 = its block is mined)"
    )
    roles_refresh_seconds: float = Field(
        0.5, ge=0, description="how often each API process reloads new mirror rows"
    )
    # 2,000 blocks per eth_getLogs: under the smallest cap common providers put on one call.
    roles_max_block_range: int = Field(2000, ge=1, le=100_000)
    token_secret: SecretStr | None = Field(
        None, description="HMAC key for access tokens; default: generated once into data_dir"
    )
    token_ttl_seconds: int = 3600
    public_url: str | None = Field(
        None,
        description="URL users reach the service at (behind "
        "a proxy); named in sign-in messages. Default http://host:port",
    )
    # Abuse limits (api/ratelimit.py), per worker process: with N workers a client gets at most
    # N times each. 0 turns a limit off. Sign-in: a browser login takes 2 requests, so 20 a
    # minute per account leaves room for retries; 60 per client address allows a shared NAT.
    auth_requests_per_minute_per_client: int = Field(60, ge=0)
    auth_requests_per_minute_per_account: int = Field(20, ge=0)
    # Intake per signing key: sustained records per second and the burst on top (a day's
    # backlog of a large supplier, sent in 1,000-record batches, fits in the burst).
    intake_records_per_second_per_key: float = Field(500.0, ge=0)
    intake_burst_per_key: int = Field(20_000, ge=1)
    # Sign-in challenges a single account may have outstanding (older ones are dropped).
    max_open_challenges_per_account: int = Field(5, ge=1)
    host: str = "127.0.0.1"
    port: int = 8700
    workers: int = 1

    @cached_property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{(self.data_dir / 'qledger.db').resolve()}"

    def anchorer_private_key(self) -> str | None:
        """The anchorer's hex key, unwrapped only where a transaction is signed with it."""
        return self.anchorer_key.get_secret_value() if self.anchorer_key else None

    @property
    def deployment_path(self) -> Path:
        return self.deployment_file or self.data_dir / "deployment.json"

    def resolved_token_secret(self) -> str:
        if self.token_secret:
            return self.token_secret.get_secret_value()
        path = self.data_dir / "token-secret"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(secrets.token_hex(32))
            tmp.chmod(0o600)
            tmp.replace(path)
        return path.read_text().strip()
