"""SecAgg+ for a Message-API ServerApp, through Flower's legacy workflow.

Flower 1.41 implements SecAgg+ only on the legacy path: ``SecAggPlusWorkflow`` drives the four
protocol stages over a ``Grid`` but takes its sampling and its final aggregation from a legacy
``flwr.server.strategy.Strategy`` inside a ``LegacyContext``. :class:`SecAggBridge` is that
legacy strategy, backed by our Message-API strategy: the messages it hands the workflow are the
ones ``strategy.configure_train`` built (so the DP wrapper's clipping norm and privacy event are
in place), and the unmasked sum comes back through ``strategy.aggregate_train`` (so DP noise and
the accountant apply to it exactly as on the plain path).

:class:`SupplierSecAggPlus` is Flower's workflow with two changes: each round's keys are set up
during the previous round, so a round after the first is two message rounds instead of four
(:mod:`federated.secagg_ahead`), and suppliers gone before key sharing no longer halt a round.

What the server holds of an individual supplier in this mode: its public keys, encrypted key
shares it only forwards, one masked vector (uniform mod 2**32 without the masks), and at
unmasking either shares of its private-mask seed (if it stayed) or of its pairwise-mask key (if
it dropped) - never both, which is what recovering one update would take.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.common import (
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.common.secure_aggregation.secaggplus_constants import Key
from flwr.compat.common import recorddict_compat as compat
from flwr.server import LegacyContext
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.strategy import Strategy as LegacyStrategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import WorkflowState
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from federated.client_app import ARRAYS, METRICS, SUPPLIER, SUPPLIER_ID
from federated.config import WEIGHT_KEY, ServerSettings, record_int, secagg_plan
from federated.secagg_ahead import (
    ADVERTISE_RECORD,
    NEXT_KEYS_RECORD,
    NEXT_SETUP_RECORD,
    KeysAhead,
    PreparedRound,
    advertised_keys,
    next_shares,
)
from federated.secagg_primitives import use_secagg_primitives

# Flower's SecAgg+ stages, in protocol order (the keys of SecAggOutcome.stage_seconds).
SECAGG_STAGES = ("setup", "share_keys", "collect_masked_vectors", "unmask")


@dataclass
class SecAggOutcome:
    arrays: ArrayRecord | None
    participants: dict[int, str]  # node id -> supplier id, of the vectors inside the sum
    # Wall seconds of each protocol stage the round reached (setup, share_keys,
    # collect_masked_vectors, unmask): where a SecAgg+ round's time goes.
    stage_seconds: dict[str, float] = field(default_factory=dict)
    # Whether setup and key sharing were done during the previous round (secagg_ahead.py).
    set_up_ahead: bool = False


class SecAggBridge(LegacyStrategy):
    """Legacy-strategy face of a Message-API strategy for one SecAgg+ round."""

    def __init__(self, strategy: Strategy, messages: Sequence[Message], grid: Grid, run_id: int):
        super().__init__()
        self.strategy = strategy
        self.messages = {m.metadata.dst_node_id: m for m in messages}
        self.grid = grid
        self.run_id = run_id
        self.outcome: SecAggOutcome | None = None

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return None

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        return [
            (
                GridClientProxy(nid, self.grid, self.run_id),
                # The round's config holds scalars only (our ServerApp writes it); a ConfigRecord's
                # type also allows lists, which FitIns's legacy config does not.
                FitIns(parameters, dict(m.content.config_records["config"])),  # type: ignore[arg-type]
            )
            for nid, m in self.messages.items()
        ]

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        # Every FitRes here already carries the same unmasked weighted mean (the workflow put it
        # there); re-wrapping them as equal-weight replies lets the Message-API strategy (and its
        # DP wrapper, which insists on one reply per sampled client) finish the round.
        participants: dict[int, str] = {}
        replies: list[Message] = []
        # The workflow hands every FitRes the same Parameters object: decode it once.
        decoded: dict[int, ArrayRecord] = {}
        for proxy, fitres in results:
            node_id = int(proxy.node_id)
            participants[node_id] = str(fitres.metrics.get(SUPPLIER_ID, ""))
            key = id(fitres.parameters)
            if key not in decoded:
                decoded[key] = ArrayRecord(parameters_to_ndarrays(fitres.parameters))
            content = RecordDict(
                {
                    ARRAYS: decoded[key],
                    METRICS: MetricRecord({WEIGHT_KEY: 1.0}),
                    SUPPLIER: ConfigRecord({SUPPLIER_ID: participants[node_id]}),
                }
            )
            replies.append(Message(content, reply_to=self.messages[node_id]))
        arrays, _ = self.strategy.aggregate_train(server_round, replies)
        self.outcome = SecAggOutcome(arrays, participants)
        if arrays is None:
            return None, {}
        return ndarrays_to_parameters(arrays.to_numpy_ndarrays()), {}

    # Evaluation is central (on the OEM's hold-out set), never federated.
    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
        return []

    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list[tuple[ClientProxy, EvaluateRes] | BaseException],
    ) -> tuple[float | None, dict[str, Scalar]]:
        return None, {}

    def evaluate(
        self, server_round: int, parameters: Parameters
    ) -> tuple[float, dict[str, Scalar]] | None:
        return None


class _StageGrid:
    """The grid as one workflow stage sees it: a record added to each message, replies observed.

    Flower's workflow stages only ever call ``send_and_receive``.
    """

    def __init__(
        self,
        grid: Grid,
        attach: Callable[[Message], None],
        received: Callable[[list[Message]], None],
    ) -> None:
        self.grid = grid
        self.attach = attach
        self.received = received

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        outgoing = list(messages)
        for message in outgoing:
            self.attach(message)
        replies = list(self.grid.send_and_receive(outgoing, timeout=timeout))
        self.received(replies)
        return replies


class SupplierSecAggPlus(SecAggPlusWorkflow):
    """Flower's SecAgg+ workflow, with keys set up a round ahead and more dropouts survived.

    Keys ahead (:mod:`federated.secagg_ahead`): with ``next_round`` (round t+1's sorted sample,
    share count and threshold) the collect messages ask for round t+1's keys and the unmask
    messages carry round t+1's setup and key sharing; what comes back is left in
    ``ahead.prepared``. A round that finds a complete prepared round for exactly its sample
    skips the setup and key-sharing message rounds and starts at collecting masked vectors;
    any other round runs Flower's stages from a fresh setup.

    Dropouts: Flower 1.41 handles a supplier that drops *after* it has shared its keys: its
    key is rebuilt from its neighbours' shares and its pairwise masks removed. A supplier that
    is gone *before* (it never answered the setup or the key-sharing stage, e.g. its SuperNode
    died between rounds) stays in the workflow's sampled set although nobody holds a share of
    its key; the unmasking stage then finds zero shares for it and halts the round. Such a
    supplier took no part in the protocol: no one masked against it and nothing of it is in the
    sum. After key sharing this drops it from the sampled set and from every neighbourhood,
    which is exactly the state the protocol would have had had it never been sampled.

    It also times each stage (``stage_seconds``), which every SecAgg+ round record carries.
    """

    def __init__(
        self,
        *args: Any,
        ahead: KeysAhead | None = None,
        next_round: tuple[list[int], int, int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.stage_seconds: dict[str, float] = {}
        self.ahead = ahead if ahead is not None else KeysAhead()
        self.next_round = next_round
        self.set_up_ahead = False  # this round started from a prepared round
        self._advertised: dict[int, tuple[bytes, bytes]] = {}  # next round's, from collect

    @contextlib.contextmanager
    def _timing(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.stage_seconds[stage] = round(time.perf_counter() - started, 4)

    def setup_stage(self, grid: Grid, context: LegacyContext, state: WorkflowState) -> bool:
        with self._timing("setup"):
            prepared, self.ahead.prepared = self.ahead.prepared, None  # one round's use only
            cfg = context.state.config_records[MAIN_CONFIGS_RECORD]
            if (
                prepared is not None
                and prepared.complete
                and prepared.server_round == cfg[WorkflowKey.CURRENT_ROUND]
            ):
                pairs = _configure_fit(context)
                if prepared.sampled == sorted(proxy.node_id for proxy, _ in pairs):
                    self.set_up_ahead = True
                    return self._adopt(prepared, pairs, state)
            return super().setup_stage(grid, context, state)

    def share_keys_stage(self, grid: Grid, context: LegacyContext, state: WorkflowState) -> bool:
        with self._timing("share_keys"):
            if not self.set_up_ahead:  # else the keys were shared with last round's unmasking
                super().share_keys_stage(grid, context, state)
            return self._forget_the_absent(state)

    def collect_masked_vectors_stage(
        self, grid: Grid, context: LegacyContext, state: WorkflowState
    ) -> bool:
        with self._timing("collect_masked_vectors"):
            if self.next_round is None:
                return super().collect_masked_vectors_stage(grid, context, state)

            def ask_for_next_keys(message: Message) -> None:
                message.content.config_records[ADVERTISE_RECORD] = ConfigRecord()

            def keep_next_keys(replies: list[Message]) -> None:
                for r in replies:
                    keys = advertised_keys(r)
                    if keys is not None:
                        self._advertised[r.metadata.src_node_id] = keys

            stage_grid = _StageGrid(grid, ask_for_next_keys, keep_next_keys)
            return super().collect_masked_vectors_stage(_as_grid(stage_grid), context, state)

    def unmask_stage(self, grid: Grid, context: LegacyContext, state: WorkflowState) -> bool:
        with self._timing("unmask"):
            cfg = context.state.config_records[MAIN_CONFIGS_RECORD]
            prepared = self._plan_next_round(record_int(cfg[WorkflowKey.CURRENT_ROUND]) + 1)
            if prepared is None:
                return super().unmask_stage(grid, context, state)
            settings = self._setup_settings(prepared)

            def with_next_round(message: Message) -> None:
                neighbours = prepared.neighbours.get(message.metadata.dst_node_id)
                if neighbours is None:  # not sampled next round
                    return
                records = message.content.config_records
                records[NEXT_SETUP_RECORD] = ConfigRecord(dict(settings))
                records[NEXT_KEYS_RECORD] = ConfigRecord(
                    {str(n): prepared.public_keys[n] for n in neighbours}
                )

            def keep_next_shares(replies: list[Message]) -> None:
                _forward_shares(prepared, replies)
                self.ahead.prepared = prepared

            stage_grid = _StageGrid(grid, with_next_round, keep_next_shares)
            return super().unmask_stage(_as_grid(stage_grid), context, state)

    def _plan_next_round(self, server_round: int) -> PreparedRound | None:
        """Round ``server_round``'s neighbourhoods, if every supplier it samples sent keys."""
        if self.next_round is None:
            return None
        sampled, num_shares, threshold = self.next_round
        if not sampled or any(nid not in self._advertised for nid in sampled):
            return None
        # Flower's neighbourhoods: a random ring, num_shares // 2 on each side (setup_stage).
        ring = list(sampled)
        random.SystemRandom().shuffle(ring)
        half = num_shares >> 1
        neighbours = {
            nid: {ring[(i + offset) % len(ring)] for offset in range(-half, half + 1)}
            for i, nid in enumerate(ring)
        }
        public_keys = {nid: list(self._advertised[nid]) for nid in sampled}
        return PreparedRound(
            server_round, sorted(sampled), num_shares, threshold, neighbours, public_keys
        )

    def _setup_settings(self, prepared: PreparedRound) -> dict[str, Any]:
        # Flower's setup message, less its stage (setup_stage's sa_params_dict).
        return {
            Key.SAMPLE_NUMBER: len(prepared.sampled),
            Key.SHARE_NUMBER: prepared.num_shares,
            Key.THRESHOLD: prepared.threshold,
            Key.CLIPPING_RANGE: self.clipping_range,
            Key.TARGET_RANGE: self.quantization_range,
            Key.MOD_RANGE: self.modulus_range,
            Key.MAX_WEIGHT: self.max_weight,
        }

    def _adopt(
        self,
        prepared: PreparedRound,
        pairs: list[tuple[ClientProxy, FitIns]],
        state: WorkflowState,
    ) -> bool:
        """The state Flower's setup and key-sharing stages would have left, from ``prepared``."""
        state.nid_to_fitins = {p.node_id: compat.fitins_to_recorddict(f, True) for p, f in pairs}
        state.nid_to_proxies = {p.node_id: p for p, _ in pairs}
        state.sampled_node_ids = set(prepared.sampled)
        state.active_node_ids = set(prepared.shared)
        state.num_shares, state.threshold = prepared.num_shares, prepared.threshold
        state.clipping_range = self.clipping_range
        state.quantization_range = self.quantization_range
        state.mod_range = self.modulus_range
        state.max_weight = self.max_weight
        state.nid_to_neighbours = {n: set(nb) for n, nb in prepared.neighbours.items()}
        state.nid_to_publickeys = prepared.public_keys
        state.forward_srcs = prepared.forward_srcs
        state.forward_ciphertexts = prepared.forward_ciphertexts
        return self._check_threshold(state)

    def _forget_the_absent(self, state: WorkflowState) -> bool:
        shared = set(state.active_node_ids)
        state.sampled_node_ids = shared
        state.nid_to_neighbours = {
            nid: neighbours & shared
            for nid, neighbours in state.nid_to_neighbours.items()
            if nid in shared
        }
        # Flower's own stage result is its threshold check on the stale sampled set (its only
        # way to fail); the check that counts is on the corrected one.
        return self._check_threshold(state)


def _configure_fit(context: LegacyContext) -> list[tuple[ClientProxy, FitIns]]:
    """The sample and FitIns of this round, as Flower's setup stage asks the strategy for them."""
    cfg = context.state.config_records[MAIN_CONFIGS_RECORD]
    parameters = compat.arrayrecord_to_parameters(
        context.state.array_records[MAIN_PARAMS_RECORD], keep_input=True
    )
    return context.strategy.configure_fit(
        record_int(cfg[WorkflowKey.CURRENT_ROUND]),
        parameters,
        context.client_manager,
    )


def _forward_shares(prepared: PreparedRound, replies: list[Message]) -> None:
    """Next round's encrypted shares, routed as Flower's key-sharing stage routes them."""
    sent: list[tuple[int, list[int], list[bytes]]] = []
    for r in replies:
        shares = next_shares(r)
        src = r.metadata.src_node_id
        if shares is not None and src in prepared.neighbours:
            prepared.shared.add(src)
            sent.append((src, *shares))
    prepared.forward_srcs = {nid: [] for nid in prepared.shared}
    prepared.forward_ciphertexts = {nid: [] for nid in prepared.shared}
    for src, dsts, ciphertexts in sent:
        for dst, ciphertext in zip(dsts, ciphertexts, strict=True):
            if dst in prepared.forward_ciphertexts:
                prepared.forward_ciphertexts[dst].append(ciphertext)
                prepared.forward_srcs[dst].append(src)


def _as_grid(stage_grid: _StageGrid) -> Grid:
    return cast(Grid, stage_grid)


def secagg_round(
    grid: Grid,
    context: Context,
    strategy: Strategy,
    messages: Sequence[Message],
    server_round: int,
    arrays: ArrayRecord,
    settings: ServerSettings,
    ahead: KeysAhead | None = None,
    next_sample: Sequence[int] | None = None,
) -> SecAggOutcome:
    """Run one SecAgg+ round over the already-configured train ``messages``.

    ``ahead`` carries keys set up during the previous round into this one and, given
    ``next_sample`` (the nodes the next round will sample), this round's set-up of the next
    (see :mod:`federated.secagg_ahead`); pass the same object every round.
    """
    use_secagg_primitives()  # the masks must match the ClientApp's (secagg_primitives.py)
    shares, threshold = secagg_plan(len(messages), settings)
    workflow = SupplierSecAggPlus(
        num_shares=shares,
        reconstruction_threshold=threshold,
        # Under DP every weight is 1, so a max weight of 1 keeps the full quantisation range
        # for the parameters instead of spending it on a tiny weight ratio.
        max_weight=1.0 if settings.dp else settings.secagg_max_weight,
        clipping_range=settings.secagg_clipping_range,
        timeout=settings.round_timeout,
        ahead=ahead,
        next_round=_next_round(next_sample, settings),
    )
    bridge = SecAggBridge(strategy, messages, grid, context.run_id)
    legacy = LegacyContext(context, strategy=bridge)
    legacy.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord(
        {WorkflowKey.CURRENT_ROUND: server_round}
    )
    legacy.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
        ndarrays_to_parameters(arrays.to_numpy_ndarrays()), keep_input=True
    )
    workflow(grid, legacy)
    # No outcome: the workflow halted (too few live neighbours to unmask); the round is skipped.
    outcome = bridge.outcome or SecAggOutcome(None, {})
    outcome.stage_seconds = dict(workflow.stage_seconds)
    outcome.set_up_ahead = workflow.set_up_ahead
    return outcome


def _next_round(
    sample: Sequence[int] | None, settings: ServerSettings
) -> tuple[list[int], int, int] | None:
    if not sample:
        return None
    try:
        shares, threshold = secagg_plan(len(sample), settings)
    except ValueError:  # the next round cannot run SecAgg+ at all; it will say why itself
        return None
    return sorted(sample), shares, threshold
