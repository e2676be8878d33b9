"""OEM side: the Flower ServerApp (Message API, ``flwr.serverapp``).

The round loop is ours, the parts are Flower's: sampling and weighted averaging come from
``flwr.serverapp.strategy.FedAvg``, DP from ``DifferentialPrivacyClientSideFixedClipping`` with
Flower's RDP accountant, SecAgg+ from the legacy ``SecAggPlusWorkflow`` (see
:mod:`federated.secagg`). We do not use ``Strategy.start`` because each round has to end in
things it has no hook for: an explicit minimum-replies rule, central evaluation on the OEM's
hold-out set, the canonical model file and its hash, and a round record for provenance.

Everything a round produces goes to ``out_dir`` (the OEM's disk):

- ``models/round-NNNN.qlm``  the global model after round N (canonical file, see model.py)
- ``rounds.jsonl``           one JSON record per round, appended as soon as the round ends; the
                             launcher tails it to anchor each hash and to show progress, the
                             same way in the simulation and the deployment engine
- ``final.qlm``, ``result.json`` (or ``error.json`` if the run fails)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import flwr.superlink.grid.http_grid as http_grid
import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import (
    GaussianPrivacyEvent,
    Grid,
    NeighboringRelation,
    PrivacyAccountant,
    PrivacyConfig,
    SamplingMethod,
    ServerApp,
)
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideFixedClipping,
    FedAvg,
    FedMedian,
    FedTrimmedAvg,
    MultiKrum,
    Strategy,
)
from flwr.superlink.grid import InMemoryGrid

from federated.client_app import ARRAYS, CONFIG, HELLO, SUPPLIER, SUPPLIER_ID
from federated.config import (
    WEIGHT_KEY,
    ServerSettings,
    record_float,
    secagg_plan,
    server_settings_from_run_config,
)
from federated.data import load_partition
from federated.flower_compat import patch_pull_backoff, secagg_keys_ahead_supported
from federated.flower_tuning import SimulationWakeups, simulation_wakeups
from federated.model import DefectMLP, evaluate, get_arrays, new_model, save_model, set_arrays
from federated.privacy import epsilon_reading, sample_level_epsilon
from federated.secagg import secagg_round
from federated.secagg_ahead import KeysAhead

ROUNDS_FILE = "rounds.jsonl"
RESULT_FILE = "result.json"
ERROR_FILE = "error.json"
log = logging.getLogger(__name__)
FINAL_MODEL = "final.qlm"

ReplyObserver = Callable[[Message], None]


class NotEnoughClients(RuntimeError):
    """Fewer SuperNodes than required were connected when the deadline passed."""


class PollingGrid(Grid):
    """A Grid whose ``send_and_receive`` polls for replies every ``interval`` seconds.

    Flower's HTTP grid (deployment engine) sleeps 3 s between pulls, which alone added seconds
    to every round and to each SecAgg+ message round (two per round with keys set up ahead, four
    with ``secagg_keys_ahead=False``). Inside the simulation engine the grid
    is told of each push and each stored reply instead (``wakeups``, see
    :mod:`federated.flower_tuning`), and ``interval`` is only the longest wait. Everything else
    is delegated. An optional observer sees every reply the server receives (tests use it to
    inspect exactly what the OEM gets to see).
    """

    def __init__(
        self,
        inner: Grid,
        interval: float = 0.05,
        observer: ReplyObserver | None = None,
        wakeups: SimulationWakeups | None = None,
    ):
        self.inner = inner
        self.interval = interval
        self.observer = observer
        self.wakeups = wakeups

    def set_run(self, run: Any) -> None:
        self.inner.set_run(run)

    @property
    def run(self) -> Any:
        return self.inner.run

    def create_message(self, *args: Any, **kwargs: Any) -> Message:
        return self.inner.create_message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:
        return self.inner.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = self.inner.push_messages(messages)
        if self.wakeups is not None:
            self.wakeups.pushed.set()
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.inner.pull_messages(message_ids)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        pending = set(self.push_messages(messages))
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while pending:
            if self.wakeups is not None:
                # Cleared before pulling: a reply stored during the pull sets it again.
                self.wakeups.replied.clear()
            for msg in self.inner.pull_messages(pending):
                pending.discard(msg.metadata.reply_to_message_id)
                if self.observer is not None:
                    self.observer(msg)
                replies.append(msg)
            if not pending or (deadline is not None and time.monotonic() >= deadline):
                break
            if self.wakeups is not None:
                self.wakeups.replied.wait(self.interval)
            else:
                time.sleep(self.interval)
        return replies


def wait_for_nodes(grid: Grid, minimum: int, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= minimum:
            return nodes
        if time.monotonic() >= deadline:
            raise NotEnoughClients(
                f"{len(nodes)} SuperNodes connected after {timeout:.0f} s, need {minimum}"
            )
        time.sleep(0.1)


def roll_call(grid: Grid, nodes: list[int], timeout: float) -> dict[int, str]:
    """Ask each node which supplier it serves; node id -> supplier id of those that answer."""
    messages = [
        Message(RecordDict(), dst_node_id=n, message_type=f"{MessageType.QUERY}.{HELLO}")
        for n in nodes
    ]
    return {
        r.metadata.src_node_id: str(r.content[SUPPLIER][SUPPLIER_ID])
        for r in grid.send_and_receive(messages, timeout=timeout)
        if not r.has_error()
    }


class DeadlineSampling(Strategy):
    """Sampling that waits for nodes with a deadline instead of forever (a mixin for Flower's
    FedAvg family).

    ``FedAvg.configure_train`` blocks in a 1-second polling loop until enough nodes connect; a
    run must instead fail or skip the round with a reason. ``aggregate_train`` is inherited
    unchanged from the Flower strategy it is mixed into (FedAvg: Flower's DP accountant requires
    that; FedTrimmedAvg, FedMedian, MultiKrum: the robust rules).
    """

    # Set by the Flower strategy this is mixed into (FedAvg's constructor).
    min_available_nodes: int
    min_train_nodes: int
    fraction_train: float

    def __init__(self, *, connect_timeout: float, seed: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.connect_timeout = connect_timeout
        self.seed = seed

    def sample(self, server_round: int, grid: Grid, timeout: float | None = None) -> list[int]:
        """The nodes round ``server_round`` trains on, given those connected (sorted).

        Waits up to ``timeout`` (default: the connect timeout) for enough nodes.
        """
        need = max(self.min_available_nodes, self.min_train_nodes)
        nodes = wait_for_nodes(grid, need, self.connect_timeout if timeout is None else timeout)
        size = max(int(len(nodes) * self.fraction_train), self.min_train_nodes)
        return sorted(random.Random(self.seed * 7919 + server_round).sample(nodes, size))

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        sampled = self.sample(server_round, grid)
        config["server-round"] = server_round
        content = RecordDict({ARRAYS: arrays, CONFIG: config})
        return [
            Message(content=content, dst_node_id=nid, message_type=MessageType.TRAIN)
            for nid in sampled
        ]


class SupplierFedAvg(DeadlineSampling, FedAvg):
    """Plain weighted FedAvg (the default; the only rule DP and SecAgg+ allow)."""


class SupplierTrimmedAvg(DeadlineSampling, FedTrimmedAvg):
    """Flower's FedTrimmedAvg: per coordinate, drop the top and bottom ``beta`` of the updates."""


class SupplierMedian(DeadlineSampling, FedMedian):
    """Flower's FedMedian: the coordinate-wise median of the updates."""


class SupplierMultiKrum(DeadlineSampling, MultiKrum):
    """Flower's MultiKrum: average the updates closest to their neighbours."""


@dataclass
class RoundResult:
    arrays: ArrayRecord | None
    sampled: list[int]
    participants: dict[int, str] = field(default_factory=dict)
    train_loss: float | None = None
    note: str = ""
    stage_seconds: dict[str, float] = field(default_factory=dict)  # SecAgg+ rounds only
    set_up_ahead: bool = False  # SecAgg+: keys set up during the previous round


def _plain_round(
    grid: Grid, strategy: Strategy, messages: list[Message], server_round: int, s: ServerSettings
) -> RoundResult:
    sampled = [m.metadata.dst_node_id for m in messages]
    replies = list(grid.send_and_receive(messages, timeout=s.round_timeout))
    ok = [r for r in replies if not r.has_error()]
    participants = {r.metadata.src_node_id: str(r.content[SUPPLIER][SUPPLIER_ID]) for r in ok}
    if len(ok) < s.min_fit_clients:
        return RoundResult(None, sampled, participants, note=f"{len(ok)} of {len(sampled)} replied")
    arrays, metrics = strategy.aggregate_train(server_round, replies)
    loss = record_float(metrics["train-loss"]) if metrics and "train-loss" in metrics else None
    note = "" if arrays is not None else "aggregation refused (DP needs every sampled client)"
    return RoundResult(arrays, sampled, participants, loss, note)


def _secagg_round(
    grid: Grid,
    context: Context,
    strategy: Strategy,
    messages: list[Message],
    server_round: int,
    arrays: ArrayRecord,
    s: ServerSettings,
    ahead: KeysAhead,
    next_sample: list[int] | None,
) -> RoundResult:
    sampled = [m.metadata.dst_node_id for m in messages]
    try:
        secagg_plan(len(messages), s)
    except ValueError as exc:  # e.g. only two nodes left: no update could be masked
        return RoundResult(None, sampled, note=str(exc))
    sa = secagg_round(
        grid,
        context,
        strategy,
        messages,
        server_round,
        arrays,
        s,
        ahead=ahead,
        next_sample=next_sample,
    )
    stages = sa.stage_seconds
    if sa.arrays is None:
        return RoundResult(
            None,
            sampled,
            sa.participants,
            note="SecAgg+ halted: too few to unmask",
            stage_seconds=stages,
        )
    if len(sa.participants) < s.min_fit_clients:
        note = f"{len(sa.participants)} of {len(sampled)} in the sum"
        return RoundResult(None, sampled, sa.participants, note=note, stage_seconds=stages)
    refused = aggregate_update_refusal(sa.arrays, arrays, s.secagg_update_clip)
    if refused is not None:
        # The server cannot see who sent the long update; it can refuse to take the round.
        log.warning("round %d refused: %s", server_round, refused)
        return RoundResult(None, sampled, sa.participants, note=refused, stage_seconds=stages)
    return RoundResult(
        sa.arrays, sampled, sa.participants, stage_seconds=stages, set_up_ahead=sa.set_up_ahead
    )


# Slack on the aggregate-norm check for SecAgg+'s fixed-point quantization (each coordinate is
# rounded to 2 * clipping_range / quantization_range, ~4e-6 at Flower's defaults) and float
# summation: far below any update that was not clipped.
AGGREGATE_NORM_SLACK = 1.01


def update_norm(new: ArrayRecord, old: ArrayRecord) -> float:
    """L2 norm of ``new - old`` over every array of the model."""
    return math.sqrt(
        sum(
            float(np.sum((n.astype(np.float64) - o.astype(np.float64)) ** 2))
            for n, o in zip(new.to_numpy_ndarrays(), old.to_numpy_ndarrays(), strict=True)
        )
    )


def aggregate_update_refusal(
    aggregate: ArrayRecord, global_arrays: ArrayRecord, bound: float
) -> str | None:
    """Why a SecAgg+ round's aggregate must be refused, or None.

    Every honest supplier clips its update to ``bound`` before masking, so the (weighted)
    average of the updates is at most ``bound`` long: a longer one contains an update that was
    not clipped. What this cannot catch is stated in docs/federated.md: a supplier that clips
    and still sends a harmful direction moves the average by at most ``bound / n`` a round.
    """
    if bound <= 0:
        return None
    norm = update_norm(aggregate, global_arrays)
    if norm <= bound * AGGREGATE_NORM_SLACK:
        return None
    return (
        f"aggregate update norm {norm:.3g} exceeds the clip bound {bound:g}: a supplier sent an "
        "unclipped update; round refused, model kept"
    )


def holdout_refusal(
    model: DefectMLP,
    current: ArrayRecord,
    aggregate: ArrayRecord,
    holdout: Any,
    tolerance: float,
) -> str | None:
    """Why a SecAgg+ aggregate must be refused on the OEM's own hold-out data, or None.

    The norm check cannot see a scaled sign flip that cancels honest updates (the average gets
    shorter, not longer); what the server can still do is evaluate the aggregate it would adopt
    (server-side validation, as in Zeno/FLTrust). A round whose aggregate raises the hold-out
    loss by more than ``tolerance`` (relative) is refused and the model kept. ``model`` is left
    holding ``current``.
    """
    if tolerance <= 0:
        return None
    set_arrays(model, aggregate.to_numpy_ndarrays())
    after = evaluate(model, holdout.X, holdout.y)["loss"]
    set_arrays(model, current.to_numpy_ndarrays())
    before = evaluate(model, holdout.X, holdout.y)["loss"]
    if after <= before * (1 + tolerance):
        return None
    return (
        f"the aggregate raises the OEM's hold-out loss from {before:.4f} to {after:.4f} "
        f"(more than {tolerance:.0%}): round refused, model kept"
    )


def _make_strategy(
    s: ServerSettings, population: int
) -> tuple[Strategy, PrivacyAccountant | None, DeadlineSampling]:
    common: dict[str, Any] = {
        "connect_timeout": s.connect_timeout,
        "seed": s.seed,
        "fraction_train": s.fraction_fit,
        "fraction_evaluate": 0.0,  # central evaluation only: no second message round per round
        "min_train_nodes": population if s.dp else s.min_fit_clients,
        "min_available_nodes": population if s.dp else s.min_available_clients,
        "weighted_by_key": WEIGHT_KEY,
        "arrayrecord_key": ARRAYS,
        "configrecord_key": CONFIG,
    }
    base: DeadlineSampling
    if s.aggregation == "trimmed-mean":
        base = SupplierTrimmedAvg(beta=s.trim_beta, **common)
    elif s.aggregation == "median":
        base = SupplierMedian(**common)
    elif s.aggregation == "multikrum":
        # MultiKrum needs n >= 2f + 3 to pick honest updates (Blanchard et al. 2017).
        if population < 2 * s.krum_malicious + 3:
            raise ValueError(
                f"multikrum with krum_malicious={s.krum_malicious} needs at least "
                f"{2 * s.krum_malicious + 3} suppliers, got {population}"
            )
        base = SupplierMultiKrum(
            num_malicious_nodes=s.krum_malicious,
            num_nodes_to_select=max(1, population - s.krum_malicious),
            **common,
        )
    else:
        base = SupplierFedAvg(**common)
    if not s.dp:
        return base, None, base
    accountant = _accountant(s, population)
    strategy = DifferentialPrivacyClientSideFixedClipping(
        base, s.dp_noise, s.dp_clip, population, accountant=accountant
    )
    return strategy, accountant, base


def _next_sample(sampler: DeadlineSampling, server_round: int, grid: Grid) -> list[int] | None:
    """The nodes ``server_round`` will sample if the nodes connected now stay connected."""
    try:
        return sampler.sample(server_round, grid, timeout=0.0)
    except NotEnoughClients:
        return None


def train_config(s: ServerSettings) -> ConfigRecord:
    return ConfigRecord(
        {
            "hidden": ",".join(str(h) for h in s.hidden),
            "seed": s.seed,
            "local-epochs": s.local_epochs,
            "batch-size": s.batch_size,
            "lr": s.lr,
            "uniform-weights": s.dp,
            "max-weight": s.secagg_max_weight,
            # Under SecAgg+ each supplier clips its own update (the server checks the sum).
            "update-clip": s.secagg_update_clip if s.secagg else 0.0,
            # Sample-level DP (each supplier's DP-SGD); 0 disables it.
            "sample-dp-noise": s.sample_dp_noise,
            "sample-dp-clip": s.sample_dp_clip,
            "sample-dp-steps": s.sample_dp_steps,
        }
    )


def _accountant(s: ServerSettings, population: int) -> PrivacyAccountant:
    from flwr.serverapp import RdpAccountant  # needs flwr[dp] (dp-accounting)

    # Client-level DP: the unit of privacy is a supplier's whole dataset. Every round samples
    # the whole population (no amplification by sampling is claimed).
    return RdpAccountant(
        PrivacyConfig(
            target_delta=s.dp_delta,
            population_size=population,
            neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
            sampling_method=SamplingMethod.NO_AMPLIFICATION,
        )
    )


def _epsilon(accountant: PrivacyAccountant) -> float:
    spent = accountant.get_privacy_spent()
    return spent.epsilon if spent.num_releases else 0.0


def projected_epsilon(s: ServerSettings, population: int, releases: int) -> float:
    """Epsilon that ``releases`` aggregated rounds cost (the same accountant, offline)."""
    acc = _accountant(s, population)
    acc.compose(GaussianPrivacyEvent(s.dp_noise, population, population), count=releases)
    return acc.get_epsilon(s.dp_delta)


def sample_epsilon(s: ServerSettings, rounds: int) -> float:
    """Sample-level ε of a supplier that trained in each of ``rounds`` rounds.

    Counted for every round a supplier was asked to train, aggregated or not (a refused round's
    update still reached the server), so it is an upper bound for a supplier that missed some.
    """
    steps = rounds * s.local_epochs * s.sample_dp_steps
    return sample_level_epsilon(s.sample_dp_noise, s.sample_dp_steps, steps, s.dp_delta)


def _append(path: Path, record: dict[str, Any]) -> None:
    with path.open("a") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")
        fh.flush()


def run_server(
    grid: Grid, context: Context, s: ServerSettings, observer: ReplyObserver | None = None
) -> dict[str, Any]:
    """The whole federated run; returns (and writes) the result summary."""
    torch.set_num_threads(1)
    # Deployment engine: replies are pulled every ``reply_poll`` s, often before the SuperNode
    # has finished uploading a reply's objects (see federated/flower_tuning.py).
    patch_pull_backoff(http_grid, "pull_objects")
    out = Path(s.out_dir)
    (out / "models").mkdir(parents=True, exist_ok=True)
    rounds_file = out / ROUNDS_FILE
    # Inside the simulation engine (same process, in-memory link state) replies wake the grid.
    wakeups = simulation_wakeups() if isinstance(grid, InMemoryGrid) else None
    grid = PollingGrid(grid, interval=s.reply_poll, observer=observer, wakeups=wakeups)
    holdout = load_partition(s.holdout_path)

    started = time.monotonic()
    nodes = wait_for_nodes(grid, s.min_available_clients, s.connect_timeout)
    population = len(nodes)
    roster = roll_call(grid, nodes, s.connect_timeout) if s.roll_call else {}
    strategy, accountant, sampler = _make_strategy(s, population)

    model = new_model(s.hidden, s.seed)
    arrays = ArrayRecord(get_arrays(model))
    initial_hash = save_model(out / "models" / "round-0000.qlm", get_arrays(model), s.hidden)
    _append(
        rounds_file,
        {
            "round": 0,
            "status": "initial",
            "model_hash": "0x" + initial_hash.hex(),
            "model_file": "models/round-0000.qlm",
            "metrics": evaluate(model, holdout.X, holdout.y),
            "population": population,
            "roster": [{"node_id": n, "supplier_id": sid} for n, sid in sorted(roster.items())],
        },
    )
    round_config = train_config(s)
    ahead = KeysAhead()  # SecAgg+: what each round sets up for the next
    for rnd in range(1, s.rounds + 1):
        t0 = time.monotonic()
        try:
            messages = list(
                strategy.configure_train(rnd, arrays, ConfigRecord(dict(round_config)), grid)
            )
        except NotEnoughClients as exc:
            result = RoundResult(None, [], note=str(exc))
        else:
            if s.secagg:
                # No keys ahead of the last round: they would only sit in the suppliers' state.
                keys_ahead = (
                    s.secagg_keys_ahead and secagg_keys_ahead_supported() and rnd < s.rounds
                )
                next_sample = _next_sample(sampler, rnd + 1, grid) if keys_ahead else None
                result = _secagg_round(
                    grid, context, strategy, messages, rnd, arrays, s, ahead, next_sample
                )
            else:
                result = _plain_round(grid, strategy, messages, rnd, s)
        fit_seconds = time.monotonic() - t0
        if s.secagg and result.arrays is not None:
            refused = holdout_refusal(model, arrays, result.arrays, holdout, s.secagg_holdout_check)
            if refused is not None:
                log.warning("round %d refused: %s", rnd, refused)
                result = dataclasses.replace(result, arrays=None, note=refused)

        aggregated = result.arrays is not None
        if result.arrays is not None:
            arrays = result.arrays
        # A skipped round keeps the previous model; it is still written under this round's
        # name so every record points at the model the OEM held after it.
        current = arrays.to_numpy_ndarrays()
        set_arrays(model, current)
        model_file = f"models/round-{rnd:04d}.qlm"
        current_hash = save_model(out / model_file, current, s.hidden)
        record: dict[str, Any] = {
            "round": rnd,
            "status": "aggregated" if aggregated else "skipped",
            "note": result.note,
            "sampled": result.sampled,
            "participants": [
                {"node_id": nid, "supplier_id": sid}
                for nid, sid in sorted(result.participants.items())
            ],
            "dropped": sorted(set(result.sampled) - set(result.participants)),
            "model_hash": "0x" + current_hash.hex(),
            "model_file": model_file,
            "metrics": evaluate(model, holdout.X, holdout.y),
            "train_loss": result.train_loss,
            "seconds": round(fit_seconds, 4),
        }
        if result.stage_seconds:
            record["stage_seconds"] = result.stage_seconds
            record["keys_set_up_ahead"] = result.set_up_ahead
        if accountant is not None:
            record.update(epsilon=_epsilon(accountant), delta=s.dp_delta)
        if s.sample_dp:
            record.update(sample_epsilon=sample_epsilon(s, rnd), delta=s.dp_delta)
        _append(rounds_file, record)

    final_hash = save_model(out / FINAL_MODEL, arrays.to_numpy_ndarrays(), s.hidden)
    summary: dict[str, Any] = {
        "final_model": FINAL_MODEL,
        "final_hash": "0x" + final_hash.hex(),
        "rounds": s.rounds,
        "population": population,
        "seconds": round(time.monotonic() - started, 3),
        "settings": s.to_run_config(),
    }
    if accountant is not None:
        summary["privacy"] = {
            "epsilon": _epsilon(accountant),
            "delta": s.dp_delta,
            "releases": accountant.num_releases,
            "noise_multiplier": s.dp_noise,
            "clipping_norm": s.dp_clip,
            "accounting": "RDP (flwr RdpAccountant), client-level, add/remove-one,"
            " no sampling amplification",
            "reading": epsilon_reading(_epsilon(accountant), s.dp_delta),
        }
    if s.sample_dp:
        spent = sample_epsilon(s, s.rounds)
        summary["sample_privacy"] = {
            "epsilon": spent,
            "delta": s.dp_delta,
            "steps": s.rounds * s.local_epochs * s.sample_dp_steps,
            "sample_rate": 1.0 / s.sample_dp_steps,
            "noise_multiplier": s.sample_dp_noise,
            "clipping_norm": s.sample_dp_clip,
            "accounting": "RDP (opacus), sample-level (one shot record), Poisson subsampling,"
            " every round counted",
            "reading": epsilon_reading(spent, s.dp_delta, level="sample"),
        }
    (out / RESULT_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def build_server_app(
    settings: ServerSettings | None = None, observer: ReplyObserver | None = None
) -> ServerApp:
    """The OEM ServerApp. Without ``settings`` it reads them from the run config (deployment)."""
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        s = settings or server_settings_from_run_config(dict(context.run_config))
        try:
            run_server(grid, context, s, observer)
        except Exception as exc:
            out = Path(s.out_dir)
            out.mkdir(parents=True, exist_ok=True)
            (out / ERROR_FILE).write_text(
                json.dumps(
                    {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()},
                    indent=2,
                )
            )
            raise

    return server


# Loaded by ``flwr-serverapp`` in the deployment engine.
app = build_server_app()
