"""Service configuration from the environment (``QLEDGER_*``) via pydantic-settings."""

from __future__ import annotations

import secrets
from functools import cached_property
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QLEDGER_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path(".qledger"), description="chain state, database, keys, reports")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default SQLite in data_dir")
    rpc_url: str | None = Field(None, description="EVM JSON-RPC; default: local anvil in data_dir")
    deployment_file: Path | None = Field(None, description="default data_dir/deployment.json")
    anchorer_key: str | None = Field(
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
    # eventTime may lie at most this long before signedAt (ledger.records.check_event_time):
    # evidence cannot be dated into or out of a scoring window after the fact (issue 16).
    max_event_age_seconds: int = Field(30 * 86_400, ge=0)
    role_cache_seconds: float = Field(15.0, ge=0, description="how stale a cached role may be")
    token_secret: str | None = Field(
        None, description="HMAC key for access tokens; default: generated once into data_dir"
    )
    token_ttl_seconds: int = 3600
    public_url: str | None = Field(
        None,
        description="URL users reach the service at (behind "
        "a proxy); named in sign-in messages. Default http://host:port",
    )
    host: str = "127.0.0.1"
    port: int = 8700
    workers: int = 1

    @cached_property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{(self.data_dir / 'qledger.db').resolve()}"

    @property
    def deployment_path(self) -> Path:
        return self.deployment_file or self.data_dir / "deployment.json"

    def resolved_token_secret(self) -> str:
        if self.token_secret:
            return self.token_secret
        path = self.data_dir / "token-secret"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(secrets.token_hex(32))
            tmp.chmod(0o600)
            tmp.replace(path)
        return path.read_text().strip()
