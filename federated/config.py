"""Configuration of a federated run, and its flat form for Flower's run config.

One dataclass, :class:`FLConfig`, describes a run for both engines. The ServerApp receives the
server-side part as Flower *run config* (flat ``str -> int | float | bool | str``), in the
simulation engine straight from this object and in the deployment engine through
``flwr run --run-config``; :func:`server_settings_from_run_config` reads it back, so both engines
run the same ServerApp code on the same values.

Nothing here points at a supplier's data: data paths reach a ClientApp only through its own
SuperNode's node config.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Weighted FedAvg key in client replies. Under DP every client reports 1.0 (the accountant and
# the noise calibration assume an unweighted mean), otherwise its local example count.
WEIGHT_KEY = "weight"


def record_int(value: object) -> int:
    """An integer read from a Flower config or metric record, whose values are typed as a union
    of scalars and lists; a list here is a malformed message, not a number."""
    if isinstance(value, int | float | str):
        return int(value)
    raise TypeError(f"expected a number in the record, got {type(value).__name__}")


def record_float(value: object) -> float:
    """A number read from a Flower config or metric record (see :func:`record_int`)."""
    if isinstance(value, int | float | str):
        return float(value)
    raise TypeError(f"expected a number in the record, got {type(value).__name__}")


# Server-side aggregation rules a run can choose (ServerSettings.aggregation).
AGGREGATIONS = ("fedavg", "trimmed-mean", "median", "multikrum")


@dataclass(frozen=True)
class ServerSettings:
    """Everything the ServerApp needs; serialisable to Flower run config."""

    rounds: int = 5
    local_epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    hidden: tuple[int, ...] = (32, 16)
    seed: int = 7
    # Participation rules. A round is aggregated only when at least ``min_fit_clients`` replies
    # arrive within ``round_timeout`` seconds; otherwise the global model is kept unchanged, the
    # round is recorded as skipped and nothing is anchored for it. Before round 1 the server waits
    # at most ``connect_timeout`` seconds for ``min_available_clients`` SuperNodes and fails the
    # run (it does not hang) if they never come.
    fraction_fit: float = 1.0
    min_available_clients: int = 2
    min_fit_clients: int = 2
    round_timeout: float = 60.0
    connect_timeout: float = 60.0
    # Ask every node which supplier it serves before round 1 (one extra message round; the
    # deployment launcher skips it because SuperNode registration already names each node).
    roll_call: bool = True
    # How often the ServerApp pulls replies (s). Flower's HTTP grid waits 3 s between pulls;
    # in-memory (simulation) pulls are nearly free, over HTTPS each one is a request.
    reply_poll: float = 0.05
    # SecAgg+ (Flower's legacy workflow; see federated/secagg.py).
    secagg: bool = False
    secagg_shares: int = 0  # 0: every sampled client holds a share (full graph)
    secagg_threshold: int = 0  # 0: a strict majority of the shares
    secagg_clipping_range: float = 8.0
    secagg_max_weight: float = 10_000.0
    # Set up each SecAgg+ round's keys during the previous round (advertised with the masked
    # vectors, shared with the unmask shares): two message rounds per round instead of Flower's
    # four (federated/secagg_ahead.py). False runs Flower's four stages every round.
    secagg_keys_ahead: bool = True
    # Poisoning defence (docs/federated.md, "A supplier that poisons its update").
    # Without SecAgg+ the server sees each update, so it can aggregate robustly: "trimmed-mean"
    # (Flower's FedTrimmedAvg: per coordinate, drop the top and bottom trim_beta of the updates
    # and average the rest), "median" (FedMedian) or "multikrum" (MultiKrum, assuming at most
    # krum_malicious attackers). "fedavg" is plain weighted FedAvg.
    aggregation: str = "fedavg"
    trim_beta: float = 0.2
    krum_malicious: int = 1
    # Under SecAgg+ the server sees only the sum: every supplier's ClientApp clips its update
    # (L2 norm of new - global) to this bound, and the server refuses a round whose aggregate
    # update is longer than the bound (a supplier that did not clip). 1.5 is the largest honest
    # update measured on the simulated consortium (8 suppliers, rounds 1-8: 0.25-1.46), so an
    # honest round loses nothing. 0 disables both.
    secagg_update_clip: float = 1.5
    # ... and refuses a round whose aggregate raises the loss on the OEM's own hold-out set by
    # more than this (relative): a scaled sign flip cancels honest updates and so passes the
    # norm check. Honest rounds measured: loss falls, or rises at most 0.6% (round 6 of 8).
    # 0 disables.
    secagg_holdout_check: float = 0.05
    # Central DP with client-side fixed clipping; dp_noise == 0 disables it.
    dp_noise: float = 0.0
    dp_clip: float = 0.5
    dp_delta: float = 1e-5
    # Sample-level DP: each supplier trains with DP-SGD (opacus) on its own shots; the unit of
    # privacy is one shot record. sample_dp_noise == 0 disables it. Every local epoch is
    # sample_dp_steps steps, each on a Poisson sample of the shots at rate 1 / sample_dp_steps
    # (so ε depends only on these settings, not on a supplier's data size), and each shot's
    # gradient is clipped to sample_dp_clip. Defaults (docs/federated.md, "Defaults for 8-20
    # suppliers"): z = 1.0, C = 1.0, 20 steps an epoch; ε = 5.4 after 10 rounds at δ = 1e-5.
    sample_dp_noise: float = 0.0
    sample_dp_clip: float = 1.0
    sample_dp_steps: int = 20
    # Files: the OEM's own held-out set and where round records / models are written.
    holdout_path: str = ""
    out_dir: str = ""

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError("rounds must be >= 1")
        if self.min_fit_clients < 1 or self.min_available_clients < self.min_fit_clients:
            raise ValueError("need 1 <= min_fit_clients <= min_available_clients")
        if not 0.0 < self.fraction_fit <= 1.0:
            raise ValueError("fraction_fit must be in (0, 1]")
        if self.dp_noise < 0 or self.dp_clip <= 0:
            raise ValueError("dp_noise must be >= 0 and dp_clip > 0")
        if self.sample_dp_noise < 0 or self.sample_dp_clip <= 0 or self.sample_dp_steps < 1:
            raise ValueError("need sample_dp_noise >= 0, sample_dp_clip > 0, sample_dp_steps >= 1")
        if self.secagg and self.min_fit_clients < 2:
            raise ValueError("SecAgg+ needs at least two clients per round (min_fit_clients >= 2)")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}")
        if self.aggregation != "fedavg" and self.secagg:
            raise ValueError(
                f"{self.aggregation} needs each supplier's update, which SecAgg+ hides: under "
                "SecAgg+ the defence is secagg_update_clip (clipped updates, checked aggregate)"
            )
        if self.aggregation != "fedavg" and self.dp_noise > 0:
            raise ValueError(
                f"{self.aggregation} with DP: the noise is calibrated for the mean of clipped "
                "updates, and a robust aggregator has another sensitivity"
            )
        if not 0.0 < self.trim_beta < 0.5 or self.krum_malicious < 0:
            raise ValueError("need 0 < trim_beta < 0.5 and krum_malicious >= 0")
        if self.secagg_update_clip < 0 or self.secagg_holdout_check < 0:
            raise ValueError("secagg_update_clip and secagg_holdout_check must be >= 0")
        if self.dp_noise > 0 and self.fraction_fit != 1.0:
            # The accountant is configured without sampling amplification: every round must
            # sample the whole population, or the reported epsilon would be wrong.
            raise ValueError("DP accounting here requires fraction_fit == 1.0")

    @property
    def dp(self) -> bool:
        return self.dp_noise > 0

    @property
    def sample_dp(self) -> bool:
        return self.sample_dp_noise > 0

    def to_run_config(self) -> dict[str, int | float | bool | str]:
        out: dict[str, int | float | bool | str] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            key = f.name.replace("_", "-")
            out[key] = ",".join(str(h) for h in value) if f.name == "hidden" else value
        return out


def server_settings_from_run_config(run_config: dict[str, Any]) -> ServerSettings:
    """Inverse of :meth:`ServerSettings.to_run_config` (unknown keys are ignored)."""
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(ServerSettings):
        key = f.name.replace("_", "-")
        if key not in run_config:
            continue
        value = run_config[key]
        if f.name == "hidden":
            value = tuple(int(h) for h in str(value).split(",") if h)
        elif f.type in ("int",):
            value = int(value)
        elif f.type in ("float",):
            value = float(value)
        elif f.type in ("bool",):
            value = bool(value)
        else:
            value = str(value)
        kwargs[f.name] = value
    return ServerSettings(**kwargs)


def secagg_plan(n_clients: int, settings: ServerSettings) -> tuple[int, int]:
    """(num_shares, reconstruction_threshold) for ``n_clients`` sampled clients.

    Flower 1.41 builds the SecAgg+ neighbour graph from ``num_shares >> 1`` on each side; an even
    share count below the client count then gives inconsistent neighbourhoods, the clients raise,
    and the legacy workflow halts without aggregating (the run still exits 0). So the count is
    either all clients or odd, and it is checked here instead of failing silently there.
    """
    shares = settings.secagg_shares or n_clients
    if shares > n_clients:
        shares = n_clients
    if shares < n_clients and shares % 2 == 0:
        raise ValueError(
            f"secagg_shares={shares} is even and below the client count {n_clients}; "
            "use an odd count (or 0 for all clients)"
        )
    if shares < 3:
        raise ValueError("SecAgg+ needs at least 3 shares (3 clients) to mask one client's update")
    threshold = settings.secagg_threshold or shares // 2 + 1
    if not 2 <= threshold <= shares:
        raise ValueError(f"secagg_threshold must be in [2, {shares}]")
    return shares, threshold


@dataclass
class FLConfig:
    """A whole run as the launcher sees it: population, engine options and server settings."""

    suppliers: int = 5
    data_dir: Path | None = None  # generated here when it holds no partitions
    out_dir: Path | None = None  # a fresh directory under the system temp dir when None
    data_seed: int = 11
    server: ServerSettings = field(default_factory=ServerSettings)
    # Simulation engine resources (the machine has 2 shared cores).
    sim_cpus: int = 2
    verbose: bool = False

    def with_server(self, **changes: Any) -> FLConfig:
        return dataclasses.replace(self, server=dataclasses.replace(self.server, **changes))
