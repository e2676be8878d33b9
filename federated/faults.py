"""Fault injection for the ClientApp: make a supplier drop out of a round, or poison its update.

Used by the tests and the demo to exercise the server's dropout handling in the simulation
engine (in the deployment engine a dropout is a real SuperNode being killed). It is an ordinary
ClientApp mod that ``build_client_app(extra_mods=[...])`` puts outermost; nothing enables it by
default. It lives in the package, not under tests/, because Ray pickles the ClientApp by
reference into its worker processes, which must be able to import it.
"""

from __future__ import annotations

import time
from collections.abc import Collection

import numpy as np
from flwr.app import ArrayRecord, Context, Message
from flwr.clientapp.typing import ClientAppCallable, Mod
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage

from federated.config import record_int
from federated.secagg_ahead import NEXT_SETUP_RECORD, forget_advertised_keys


def _round_of(msg: Message) -> int | None:
    for name in ("config", "fitins.config"):
        if name in msg.content.config_records and "server-round" in msg.content[name]:
            return record_int(msg.content[name]["server-round"])
    return None


def _is_secagg_setup(msg: Message) -> bool:
    configs = msg.content.config_records.get(RECORD_KEY_CONFIGS)
    return configs is not None and configs.get(Key.STAGE) == Stage.SETUP


def dropout_mod(
    partition_ids: Collection[int],
    rounds: Collection[int],
    hang_s: float,
    *,
    before_keys: bool = False,
) -> Mod:
    """Make the given simulation partitions go silent for ``hang_s`` seconds in ``rounds``.

    The node does not answer the training message (plain FedAvg) or, under SecAgg+, the stage
    that carries the model (after it has already shared its keys, the case the protocol's
    unmasking has to recover from). With ``before_keys`` it goes silent at SecAgg+'s setup
    stage instead, as a supplier whose node died between rounds would (a round whose keys were
    set up during the previous one has no setup stage: run with ``secagg_keys_ahead=False``).
    Give ``hang_s`` above the server's round timeout: the server must stop waiting, aggregate
    without the node, and go on.
    """
    targets = {int(p) for p in partition_ids}
    bad_rounds = {int(r) for r in rounds}

    def mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        partition = context.node_config.get("partition-id")
        if partition is not None and int(partition) in targets:
            if before_keys:
                # Setup messages carry no round config; the workflow puts the round in group_id.
                hit = _is_secagg_setup(msg) and int(msg.metadata.group_id or 0) in bad_rounds
            else:
                is_secagg = RECORD_KEY_CONFIGS in msg.content.config_records
                carries_model = not is_secagg or "fitins.parameters" in msg.content.array_records
                hit = carries_model and _round_of(msg) in bad_rounds
            if hit:
                time.sleep(hang_s)
        return call_next(msg, context)

    return mod


def forget_keys_mod(partition_ids: Collection[int], rounds: Collection[int]) -> Mod:
    """Make the given partitions lose the SecAgg+ keys they advertised in ``rounds``.

    As a SuperNode restarted between two messages would: asked, with round r's unmask message,
    to set up round r+1 on the keys it advertised with its masked vector, it no longer holds
    them.
    """
    targets = {int(p) for p in partition_ids}
    bad_rounds = {int(r) for r in rounds}

    def mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        partition = context.node_config.get("partition-id")
        if (
            partition is not None
            and int(partition) in targets
            and NEXT_SETUP_RECORD in msg.content.config_records
            and int(msg.metadata.group_id or 0) in bad_rounds
        ):
            forget_advertised_keys(context)
        return call_next(msg, context)

    return mod


def poison_mod(partition_ids: Collection[int], factor: float) -> Mod:
    """Make the given partitions send ``global + factor * (their update - global)``.

    ``factor`` -10 is a scaled sign flip (the update pushed hard the wrong way), 10 a scaled
    update, -1 a plain sign flip. It stands for a malicious supplier's own ClientApp code, so it
    runs *inside* the protocol mods (``build_client_app(inner_mods=...)``), on the update before
    SecAgg+ masks it and after any clipping an honest ClientApp does: a poisoner does not clip.
    """
    from federated.client_app import ARRAYS  # the ClientApp imports this module's mods

    targets = {int(p) for p in partition_ids}

    def mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        partition = context.node_config.get("partition-id")
        if partition is None or int(partition) not in targets or ARRAYS not in msg.content:
            return call_next(msg, context)
        global_arrays = msg.content[ARRAYS].to_numpy_ndarrays()  # type: ignore[union-attr]
        reply = call_next(msg, context)
        if reply.has_error():
            return reply
        local = reply.content[ARRAYS].to_numpy_ndarrays()  # type: ignore[union-attr]
        poisoned = [
            (g + factor * (u.astype(np.float64) - g)).astype(u.dtype)
            for u, g in zip(local, global_arrays, strict=True)
        ]
        reply.content[ARRAYS] = ArrayRecord(poisoned)
        return reply

    return mod
