"""SecAgg+ for a Message-API ServerApp, through Flower's legacy workflow.

Flower 1.41 implements SecAgg+ only on the legacy path: ``SecAggPlusWorkflow`` drives the four
protocol stages over a ``Grid`` but takes its sampling and its final aggregation from a legacy
``flwr.server.strategy.Strategy`` inside a ``LegacyContext``. :class:`SecAggBridge` is that
legacy strategy, backed by our Message-API strategy: the messages it hands the workflow are the
ones ``strategy.configure_train`` built (so the DP wrapper's clipping norm and privacy event are
in place), and the unmasked sum comes back through ``strategy.aggregate_train`` (so DP noise and
the accountant apply to it exactly as on the plain path).

:class:`SupplierSecAggPlus` is Flower's workflow with two changes: suppliers' keys are advertised
a round ahead, so a round after the first needs no setup message round
(:mod:`federated.secagg_ahead`), and suppliers gone before key sharing no longer halt a round.

What the server holds of an individual supplier in this mode: its public keys, encrypted key
shares it only forwards, one masked vector (uniform mod 2**32 without the masks), and at
unmasking either shares of its private-mask seed (if it stayed) or of its pairwise-mask key (if
it dropped) - never both, which is what recovering one update would take.
"""

from __future__ import annotations

import contextlib
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
from federated.config import WEIGHT_KEY, ServerSettings, secagg_plan
from federated.secagg_ahead import (
    ADVERTISE_RECORD,
    SETUP_RECORD,
    advertised_keys,
    setup_settings,
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
                FitIns(parameters, dict(m.content["config"])),
            )  # type: ignore[arg-type]
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
            node_id = int(proxy.node_id)  # type: ignore[attr-defined]
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
    """The grid as one workflow stage sees it: its messages adjusted before they are sent.

    ``hold_back`` may keep messages from being sent (their nodes count as not answering
    unless the stage adds them back) and attach records; ``received`` sees the replies.
    Flower's workflow stages only ever call ``send_and_receive``.
    """

    def __init__(
        self,
        grid: Grid,
        adjust: Callable[[list[Message]], list[Message]],
        received: Callable[[list[Message]], None] | None = None,
    ) -> None:
        self.grid = grid
        self.adjust = adjust
        self.received = received

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        outgoing = self.adjust(list(messages))
        replies = list(self.grid.send_and_receive(outgoing, timeout=timeout)) if outgoing else []
        if self.received is not None:
            self.received(replies)
        return replies


class SupplierSecAggPlus(SecAggPlusWorkflow):
    """Flower's SecAgg+ workflow, with keys advertised a round ahead and more dropouts survived.

    Keys ahead (:mod:`federated.secagg_ahead`): ``advertised`` holds the public keys suppliers
    sent with their last unmask replies. In setup, a sampled supplier found there gets no setup
    message; its keys are taken as its setup answer, and the setup stage's settings go with its
    key-sharing message instead. With ``advertise_next`` the unmask messages ask for the next
    round's keys and ``advertised`` is refilled from the replies. A round whose suppliers all
    advertised keys has no setup message round at all.

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
        advertised: dict[int, tuple[bytes, bytes]] | None = None,
        advertise_next: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.stage_seconds: dict[str, float] = {}
        self.advertised = advertised if advertised is not None else {}
        self.advertise_next = advertise_next
        self._setup_settings: ConfigRecord | None = None
        self._keys_to_take: dict[int, tuple[bytes, bytes]] = {}  # held back in setup
        self._keys_taken: set[int] = set()  # nodes set up with advertised keys this round

    @contextlib.contextmanager
    def _timing(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.stage_seconds[stage] = round(time.perf_counter() - started, 4)

    def setup_stage(self, grid: Grid, context: LegacyContext, state: WorkflowState) -> bool:
        with self._timing("setup"):
            return self._setup_with_advertised_keys(grid, context, state)

    def share_keys_stage(self, grid: Grid, context: LegacyContext, state: WorkflowState) -> bool:
        with self._timing("share_keys"):
            return self._share_keys_and_forget_the_absent(grid, context, state)

    def collect_masked_vectors_stage(
        self, grid: Grid, context: LegacyContext, state: WorkflowState
    ) -> bool:
        with self._timing("collect_masked_vectors"):
            return super().collect_masked_vectors_stage(grid, context, state)

    def unmask_stage(self, grid: Grid, context: LegacyContext, state: WorkflowState) -> bool:
        with self._timing("unmask"):
            return self._unmask_and_collect_next_keys(grid, context, state)

    def _setup_with_advertised_keys(
        self, grid: Grid, context: LegacyContext, state: WorkflowState
    ) -> bool:
        # Advertised keys serve the round right after the one they came with, or none.
        advertised = dict(self.advertised)
        self.advertised.clear()

        def hold_back(messages: list[Message]) -> list[Message]:
            outgoing = []
            for m in messages:
                keys = advertised.get(m.metadata.dst_node_id)
                if keys is None:
                    outgoing.append(m)
                else:
                    self._keys_to_take[m.metadata.dst_node_id] = keys
                    self._setup_settings = setup_settings(m)
            return outgoing

        return super().setup_stage(_as_grid(_StageGrid(grid, hold_back)), context, state)

    def _check_threshold(self, state: WorkflowState) -> bool:
        # Flower's setup stage ends with this check, after recording the public keys that came
        # back: the keys advertised last round join them here, as the answers they stand for.
        if self._keys_to_take:
            taken, self._keys_to_take = self._keys_to_take, {}
            self._keys_taken = set(taken)
            state.active_node_ids |= self._keys_taken
            state.nid_to_publickeys.update({n: [pk1, pk2] for n, (pk1, pk2) in taken.items()})
        return super()._check_threshold(state)

    def _share_keys_and_forget_the_absent(
        self, grid: Grid, context: LegacyContext, state: WorkflowState
    ) -> bool:
        def with_setup_settings(messages: list[Message]) -> list[Message]:
            for m in messages:
                if m.metadata.dst_node_id in self._keys_taken:
                    m.content.config_records[SETUP_RECORD] = ConfigRecord(
                        dict(self._setup_settings or {})  # type: ignore[arg-type]
                    )
            return messages

        super().share_keys_stage(_as_grid(_StageGrid(grid, with_setup_settings)), context, state)
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

    def _unmask_and_collect_next_keys(
        self, grid: Grid, context: LegacyContext, state: WorkflowState
    ) -> bool:
        if not self.advertise_next:
            return super().unmask_stage(grid, context, state)

        def ask_for_next_keys(messages: list[Message]) -> list[Message]:
            for m in messages:
                m.content.config_records[ADVERTISE_RECORD] = ConfigRecord()
            return messages

        def keep_next_keys(replies: list[Message]) -> None:
            for r in replies:
                keys = advertised_keys(r)
                if keys is not None:
                    self.advertised[r.metadata.src_node_id] = keys

        stage_grid = _StageGrid(grid, ask_for_next_keys, keep_next_keys)
        return super().unmask_stage(_as_grid(stage_grid), context, state)


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
    advertised: dict[int, tuple[bytes, bytes]] | None = None,
    advertise_next: bool = False,
) -> SecAggOutcome:
    """Run one SecAgg+ round over the already-configured train ``messages``.

    ``advertised`` (node id -> public keys) carries keys advertised in the previous round into
    this one and, with ``advertise_next``, this round's into the next (see
    :mod:`federated.secagg_ahead`); pass the same dict every round.
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
        advertised=advertised,
        advertise_next=advertise_next,
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
    return outcome
