"""Service configuration from the environment (``QLEDGER_*``) via pydantic-settings.

The one place the service and the CLI read their configuration: nothing else in ``api`` or
``cli`` reads ``os.environ``. Resolved settings travel to worker processes as this object (see
``cli.service.serve``), never by writing the environment. Getters have no side effects; the one
step that writes (the data dir and its generated token secret) is :meth:`Settings.prepare_data_dir`,
run once at start-up by ``ServiceContext.create``.

CLI options declared with typer's ``envvar=`` (``--data-dir``/``QLEDGER_DATA_DIR``, ``--host``,
``--port``, ``--workers``, ``--rpc``) read the same names and are handed to Settings as
overrides, so both agree; ``QLEDGER_URL`` is the CLI's own client option (the service's URL),
not a service setting.

Exceptions, documented in docs/production.md (step 5): ``ledger`` and ``federated`` sit
below ``api`` and cannot import this class. ``ledger`` reads tool locations
(``QLEDGER_ARTIFACTS_DIR``, ``QLEDGER_ANVIL``, ``SOLCX_BINARY_PATH``); ``federated`` reads
switches that must reach Flower's own subprocesses through their environment (telemetry off,
SuperNode poll intervals, the ClientApp preload).
"""

from __future__ import annotations

import secrets
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

TOKEN_SECRET_FILE = "token-secret"


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
    # Counted as Transport.wait_for_confirmations counts them: the anchoring block is the first,
    # so 1 waits until it is mined and each further one is a block on top; 0 waits as 1 does.
    confirmations: int = Field(
        1, ge=0, description="depth of the anchoring transaction before receipts (1 = mined)"
    )
    retry_max_seconds: float = Field(30.0, gt=0, description="cap of the anchorer's backoff")
    # How often the anchorer rechecks every confirmed batch against the chain (and at start).
    # A minute bounds how long a receipt the chain lost stays served as anchored; each check
    # costs one eth_call per confirmed batch.
    reconcile_seconds: float = Field(60.0, gt=0, description="recheck confirmed batches")
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
    # eventTime may lie at most this long before signedAt (ledger.records.check_event_time):
    # evidence cannot be dated into or out of a scoring window after the fact.
    max_event_age_seconds: int = Field(30 * 86_400, ge=0)
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
    # Helper processes that recover the signatures of intake batches (api/intake.py,
    # RecoveryPool), per API process; 0: the API process recovers them itself. One recovery is
    # most of a record's CPU: with SQLite (one API process: a single writer), 1 lets a second
    # core take them. PostgreSQL runs several API processes instead (serve --workers).
    intake_recovery_processes: int = Field(0, ge=0, le=16)
    # Sign-in challenges a single account may have outstanding (older ones are dropped).
    max_open_challenges_per_account: int = Field(5, ge=1)
    # Webhooks (api/webhooks.py, docs/webhooks.md). A delivery is retried with exponential
    # backoff: 5 s, 10 s, 20 s, ... capped at an hour, at most 10 attempts (about 1.5 hours of
    # trying, past a receiver's restart or short outage; Standard Webhooks leaves the schedule
    # to the sender). 10 s per request keeps a slow receiver from holding the dispatcher.
    webhook_poll_seconds: float = Field(1.0, gt=0, description="how often due deliveries run")
    webhook_max_attempts: int = Field(10, ge=1, le=50)
    webhook_backoff_seconds: float = Field(5.0, gt=0, description="first retry delay")
    webhook_backoff_max_seconds: float = Field(3600.0, gt=0)
    webhook_timeout_seconds: float = Field(10.0, gt=0, le=60)
    webhook_max_subscriptions_per_org: int = Field(20, ge=1, le=1000)
    # Operations. /readyz answers 503 once the oldest record waiting for anchoring is older
    # than this: a batch closes within batch_max_seconds (2 s) and a chain outage backs off to
    # retry_max_seconds (30 s), so two minutes means the anchorer is down or the chain is.
    ready_max_anchoring_lag_seconds: float = Field(120.0, gt=0)
    # Log lines as JSON objects (one a line, for log shippers) or as plain text.
    log_format: Literal["text", "json"] = "text"
    # Where `qledger anchorer` (serve's anchorer process) exports its own Prometheus metrics
    # (its chain errors); 0 = not exported. The API's /metrics covers everything else.
    anchorer_metrics_port: int = Field(0, ge=0, le=65535)
    # `qledger serve` without QLEDGER_RPC_URL starts anvil on this port (0 = the port the data
    # dir's chain used last, else a free one).
    chain_port: int = Field(0, ge=0, le=65535)
    host: str = "127.0.0.1"
    port: int = 8700
    workers: int = 1
    serve_anchorer: Literal["process", "inside"] = Field(
        "process",
        description="`qledger serve`: the anchorer in its own process (default) or inside the "
        "API workers (benchmark comparisons only)",
    )
    # CLI only: QLEDGER_DEBUG=1 re-raises errors the CLI reports as one line (the traceback
    # still shows no local variables).
    debug: bool = False
    # CLI only: unlocks V3 keystores (`qledger keys new|sign|submit`); masked in reprs.
    key_passphrase: SecretStr | None = None
    # Crash tests only (never in production): the anchorer SIGKILLs itself at these named
    # steps (comma-separated) and appends "<step> <pid>" to failpoint_log.
    failpoints: str = ""
    failpoint_log: Path | None = None

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'qledger.db').resolve()}"

    def anchorer_private_key(self) -> str | None:
        """The anchorer's hex key, unwrapped only where a transaction is signed with it."""
        return self.anchorer_key.get_secret_value() if self.anchorer_key else None

    @property
    def deployment_path(self) -> Path:
        return self.deployment_file or self.data_dir / "deployment.json"

    @property
    def failpoint_names(self) -> frozenset[str]:
        return frozenset(filter(None, (n.strip() for n in self.failpoints.split(","))))

    def prepare_data_dir(self) -> None:
        """Create the data dir and, unless a token secret is configured, generate one into it
        (0600, written atomically, kept across restarts). The one settings step that writes."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.token_secret:
            return
        path = self.data_dir / TOKEN_SECRET_FILE
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_text(secrets.token_hex(32))
            tmp.chmod(0o600)
            tmp.replace(path)

    @cached_property
    def token_secret_value(self) -> str:
        """The HMAC key for access tokens: configured, or the data dir's generated one."""
        if self.token_secret:
            return self.token_secret.get_secret_value()
        path = self.data_dir / TOKEN_SECRET_FILE
        try:
            return path.read_text().strip()
        except FileNotFoundError as exc:
            raise RuntimeError(
                f"no token secret: set QLEDGER_TOKEN_SECRET or start the service, which "
                f"generates {path} (Settings.prepare_data_dir)"
            ) from exc
