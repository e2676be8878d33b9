"""Supplier side: the Flower ClientApp (Message API, ``flwr.clientapp``).

A supplier's SuperNode passes this app its own partition directory in node config
(``data-path``); the app reads nothing else. One ``train`` handler serves every server mode:

- plain FedAvg / DP: a Message-API ``train`` message (``arrays`` + ``config``) is answered with
  the locally trained ``arrays``, a MetricRecord and the supplier id.
- SecAgg+: the server drives Flower's SecAgg+ workflow, which exists only on the legacy
  (FitIns/FitRes) path in Flower 1.41. :func:`_secagg_mod` runs Flower's ``secaggplus_mod``
  for exactly those messages, and :func:`_fitins_adapter_mod` inside it translates FitIns/FitRes
  to and from the Message-API content, so the training code is the same. What leaves the node
  in that mode is the masked vector plus the supplier id: :func:`_secagg_mod` strips the example
  count and the training loss, which the server would otherwise read in clear.

In the simulation engine every virtual node shares one process, so the launcher hands
:func:`build_client_app` a partition-id -> directory map instead of node config; the handler is
the same object code either way.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable, Mod
from flwr.common import Code, FitRes, Status
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.compat.common import recorddict_compat as compat
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM, compute_clip_model_update

from federated.config import WEIGHT_KEY, record_float, record_int
from federated.data import Partition, load_partition
from federated.model import get_arrays, new_model, set_arrays, train_epochs, train_epochs_dp
from federated.secagg_ahead import NextRoundRequest, forget_advertised_keys
from federated.secagg_primitives import use_secagg_primitives

# Keys shared with the ServerApp.
ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"
SUPPLIER = "supplier"
SUPPLIER_ID = "supplier-id"
HELLO = "hello"  # query action: roll call
_FITINS_PARAMS = "fitins.parameters"
_FITRES_METRICS = "fitres.metrics"
_FITRES_NUM_EXAMPLES = "fitres.num_examples"

_partition_cache: dict[str, Partition] = {}


def _data_dir(context: Context, data_dirs: Mapping[int, str] | None) -> str:
    if "data-path" in context.node_config:
        return str(context.node_config["data-path"])
    if data_dirs is not None and "partition-id" in context.node_config:
        return data_dirs[int(context.node_config["partition-id"])]
    raise RuntimeError("this SuperNode was started without a data-path in its node config")


def _partition(path: str) -> Partition:
    # A simulation actor serves many rounds; a deployment ClientApp process lives for one
    # message, so the cache only helps the former.
    if path not in _partition_cache:
        _partition_cache[path] = load_partition(path)
    return _partition_cache[path]


def local_update(
    partition: Partition, global_arrays: Sequence[np.ndarray], config: Mapping[str, object]
) -> tuple[list[np.ndarray], dict[str, float]]:
    """One round of local training from the global model; the supplier's whole contribution."""
    hidden = tuple(int(h) for h in str(config["hidden"]).split(","))
    server_round = record_int(config["server-round"])
    model = new_model(hidden, seed=0)
    set_arrays(model, global_arrays)
    seed = (
        record_int(config["seed"]) * 1_000_003
        + server_round * 1_009
        + zlib.crc32(partition.supplier_id.encode())
    )
    if record_float(config.get("sample-dp-noise", 0.0)) > 0:
        # Sample-level DP: this supplier's own DP-SGD; what leaves the node is already private
        # with respect to each of its shots (noise from local randomness, not from ``seed``).
        loss, _ = train_epochs_dp(
            model,
            partition.X,
            partition.y,
            epochs=record_int(config["local-epochs"]),
            steps_per_epoch=record_int(config["sample-dp-steps"]),
            lr=record_float(config["lr"]),
            noise_multiplier=record_float(config["sample-dp-noise"]),
            max_grad_norm=record_float(config["sample-dp-clip"]),
        )
    else:
        loss = train_epochs(
            model,
            partition.X,
            partition.y,
            epochs=record_int(config["local-epochs"]),
            batch_size=record_int(config["batch-size"]),
            lr=record_float(config["lr"]),
            seed=seed,
        )
    arrays = get_arrays(model)
    if KEY_CLIPPING_NORM in config:
        # Central DP with client-side clipping: bound this supplier's influence on the round
        # (L2 norm of new - global) before anything leaves the node.
        compute_clip_model_update(
            arrays, list(global_arrays), record_float(config[KEY_CLIPPING_NORM])
        )
    elif record_float(config.get("update-clip", 0.0)) > 0:
        # SecAgg+: bound this supplier's influence before masking; the server sees only the sum
        # and refuses a round whose aggregate is longer than the bound (server_app.py).
        compute_clip_model_update(arrays, list(global_arrays), record_float(config["update-clip"]))
    n = len(partition)
    if bool(config.get("uniform-weights", False)):
        weight = 1.0  # DP: the accountant assumes an unweighted mean
    else:
        weight = float(min(n, record_float(config.get("max-weight", n))))
    return arrays, {WEIGHT_KEY: weight, "num-examples": float(n), "train-loss": float(loss)}


def _train(msg: Message, context: Context, data_dirs: Mapping[int, str] | None) -> Message:
    torch.set_num_threads(1)  # several ClientApps share two cores
    partition = _partition(_data_dir(context, data_dirs))
    global_arrays = msg.content.array_records[ARRAYS].to_numpy_ndarrays()
    config = dict(msg.content[CONFIG])
    arrays, metrics = local_update(partition, global_arrays, config)
    content = RecordDict(
        {
            ARRAYS: ArrayRecord(arrays),
            # dict is invariant in its values: a dict[str, float] is a valid metric dict, but
            # mypy cannot see that it is never written through as the wider type.
            METRICS: MetricRecord(metrics),  # type: ignore[arg-type]
            SUPPLIER: ConfigRecord({SUPPLIER_ID: partition.supplier_id}),
        }
    )
    return Message(content, reply_to=msg)


def _fitins_adapter_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Legacy FitIns content -> Message-API content -> handler -> FitRes content (SecAgg+ only)."""
    if _FITINS_PARAMS not in msg.content.array_records:
        return call_next(msg, context)
    fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
    # Both formats hold each array as the same .npy bytes: hand them over, do not re-encode.
    msg.content = RecordDict(
        {
            ARRAYS: compat.parameters_to_arrayrecord(fitins.parameters, keep_input=True),
            # dict invariance again: FitIns's scalar config is a valid ConfigRecord dict.
            CONFIG: ConfigRecord(fitins.config),  # type: ignore[arg-type]
        }
    )
    reply = call_next(msg, context)
    if reply.has_error():
        return reply
    metrics = reply.content[METRICS]
    fitres = FitRes(
        status=Status(Code.OK, ""),
        parameters=compat.arrayrecord_to_parameters(
            reply.content.array_records[ARRAYS], keep_input=True
        ),
        num_examples=record_int(metrics[WEIGHT_KEY]),
        metrics={SUPPLIER_ID: str(reply.content[SUPPLIER][SUPPLIER_ID])},
    )
    return Message(compat.fitres_to_recorddict(fitres, keep_input=True), reply_to=msg)


def _secagg_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Run Flower's ``secaggplus_mod`` for SecAgg+ protocol messages, and only for them."""
    configs = msg.content.config_records.get(RECORD_KEY_CONFIGS)
    if configs is None:
        return call_next(msg, context)
    # Next round's keys (secagg_ahead.py): made with the masked vector, shared with the unmask
    # shares, each only if the server asked; a setup message drops any not yet used.
    if configs.get(Key.STAGE) == Stage.SETUP:
        forget_advertised_keys(context)
    next_round = NextRoundRequest.of(msg)  # before the mods below replace the content
    reply = secaggplus_mod(msg, context, call_next)
    next_round.answer(reply, context)
    if not reply.has_error():
        # The masked vector already carries the (masked) weight; do not also send the example
        # count and the local loss in clear beside it.
        if _FITRES_NUM_EXAMPLES in reply.content.metric_records:
            reply.content.metric_records[_FITRES_NUM_EXAMPLES] = MetricRecord({"num_examples": 0})
        if _FITRES_METRICS in reply.content.config_records:
            sid = reply.content.config_records[_FITRES_METRICS].get(SUPPLIER_ID, "")
            reply.content.config_records[_FITRES_METRICS] = ConfigRecord({SUPPLIER_ID: sid})
    return reply


def build_client_app(
    data_dirs: Mapping[int, str] | None = None,
    extra_mods: Sequence[Mod] = (),
    inner_mods: Sequence[Mod] = (),
) -> ClientApp:
    """The supplier ClientApp.

    ``data_dirs`` (simulation only) maps the simulation engine's partition-id to a partition
    directory; ``extra_mods`` run outermost and ``inner_mods`` innermost, on the plain update
    before SecAgg+ masks it (fault injection in tests, see :mod:`federated.faults`).
    """
    use_secagg_primitives()  # full-strength masks, P-256, fast Shamir (secagg_primitives.py)
    client = ClientApp()

    @client.train(mods=[*extra_mods, _secagg_mod, _fitins_adapter_mod, *inner_mods])
    def train(msg: Message, context: Context) -> Message:
        return _train(msg, context, data_dirs)

    @client.query(HELLO)
    def hello(msg: Message, context: Context) -> Message:
        # Roll call before round 1: says which supplier this node serves (nothing about its
        # data) and, in the simulation engine, warms the worker so round 1 is timed fairly.
        partition = _partition(_data_dir(context, data_dirs))
        return Message(
            RecordDict({SUPPLIER: ConfigRecord({SUPPLIER_ID: partition.supplier_id})}), reply_to=msg
        )

    return client


# Loaded by ``flwr-clientapp`` in the deployment engine (see pyproject of the generated FAB).
app = build_client_app()
