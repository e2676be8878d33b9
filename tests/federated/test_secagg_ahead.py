"""SecAgg+ keys set up one round ahead, supplier side (federated/secagg_ahead.py).

A supplier's node is driven through its ClientApp's SecAgg+ mod with real Flower messages and
a real Context; the whole protocol over the simulation engine is in test_fl_simulation.py.
"""

from __future__ import annotations

import pytest
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.client.mod.secure_aggregation.secaggplus_mod import SecAggPlusState, check_stage
from flwr.common.secure_aggregation.secaggplus_constants import (
    RECORD_KEY_CONFIGS,
    RECORD_KEY_STATE,
    Key,
    Stage,
)
from flwr.supercore.primitives.asymmetric import bytes_to_public_key, public_key_to_bytes
from flwr.supercore.task_identity import TaskIdentity

from federated.client_app import _secagg_mod
from federated.secagg_ahead import (
    ADVERTISE_RECORD,
    NEXT_KEYS_RECORD,
    NEXT_SETUP_RECORD,
    NEXT_SHARES_RECORD,
    NextRoundRequest,
    advertised_keys,
    next_shares,
)
from federated.secagg_primitives import CURVE, generate_key_pairs

NODE = 11
NEIGHBOURS = (12, 13)
SETTINGS = {
    Key.SAMPLE_NUMBER: 3,
    Key.SHARE_NUMBER: 3,
    Key.THRESHOLD: 2,
    Key.CLIPPING_RANGE: 8.0,
    Key.TARGET_RANGE: 1 << 22,
    Key.MOD_RANGE: 1 << 32,
    Key.MAX_WEIGHT: 1000.0,
}


@pytest.fixture(autouse=True)
def _server_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    # Flower stamps every new Message with the sending task's identity; here the "server".
    for name, value in (("_task_id", 1), ("_run_id", 1), ("_node_id", 1)):
        monkeypatch.setattr(TaskIdentity, name, value)


def _context() -> Context:
    return Context(run_id=1, node_id=NODE, node_config={}, state=RecordDict(), run_config={})


def _message(configs: dict, **extra: ConfigRecord) -> Message:
    content = RecordDict({RECORD_KEY_CONFIGS: ConfigRecord(configs), **extra})
    return Message(content, dst_node_id=NODE, message_type=MessageType.TRAIN, group_id="1")


def _send(msg: Message, context: Context) -> Message:
    def no_training(m: Message, c: Context) -> Message:
        raise AssertionError("no stage here trains")

    return _secagg_mod(msg, context, no_training)


def _state(context: Context) -> SecAggPlusState:
    return SecAggPlusState(**context.state.config_records[RECORD_KEY_STATE])


def _neighbour_keys() -> dict[str, list[bytes]]:
    # Real keys for the neighbours: the share-keys stage encrypts a share to each of them.
    keys = {}
    for nid in NEIGHBOURS:
        pair1, pair2 = generate_key_pairs(), generate_key_pairs()
        keys[str(nid)] = [public_key_to_bytes(pair1[1]), public_key_to_bytes(pair2[1])]
    return keys


def _setup(context: Context) -> tuple[bytes, bytes]:
    reply = _send(_message({Key.STAGE: Stage.SETUP, **SETTINGS}), context)
    assert not reply.has_error()
    configs = reply.content.config_records[RECORD_KEY_CONFIGS]
    return configs[Key.PUBLIC_KEY_1], configs[Key.PUBLIC_KEY_2]  # type: ignore[return-value]


def _share_keys(context: Context, own: tuple[bytes, bytes]) -> Message:
    configs = {Key.STAGE: Stage.SHARE_KEYS, str(NODE): list(own), **_neighbour_keys()}
    return _send(_message(configs), context)


def _masked_vector_sent(context: Context, *, advertise: bool) -> ConfigRecord | None:
    """Move the node on as its collect stage would, answering the server's request if any."""
    state = _state(context)
    # As after the collect stage: the neighbours' shares received, a masked vector sent.
    state.current_stage = Stage.COLLECT_MASKED_VECTORS
    state.rd_seed_share_dict.update({nid: b"share of %d" % nid for nid in NEIGHBOURS})
    context.state.config_records[RECORD_KEY_STATE] = ConfigRecord(state.to_dict())
    reply = Message(RecordDict(), reply_to=_message({}))
    NextRoundRequest(NODE, advertise, None, None).answer(reply, context)
    return reply.content.config_records.get(ADVERTISE_RECORD)


def _unmask(context: Context, next_keys: tuple[bytes, bytes] | None = None) -> Message:
    """An unmask message; with ``next_keys``, also asking to set up next round on them."""
    unmask = {
        Key.STAGE: Stage.UNMASK,
        Key.ACTIVE_NODE_ID_LIST: [NODE, *NEIGHBOURS],
        Key.DEAD_NODE_ID_LIST: [],
    }
    extra = {}
    if next_keys is not None:
        extra = {
            NEXT_SETUP_RECORD: ConfigRecord(SETTINGS),
            NEXT_KEYS_RECORD: ConfigRecord({str(NODE): list(next_keys), **_neighbour_keys()}),
        }
    reply = _send(_message(unmask, **extra), context)
    assert not reply.has_error()
    # This round's unmask answer is Flower's, whatever happens to the next round's set-up.
    assert reply.content.config_records[RECORD_KEY_CONFIGS][Key.NODE_ID_LIST] == [NODE, *NEIGHBOURS]
    return reply


def _one_round(context: Context) -> tuple[bytes, bytes]:
    first = _setup(context)
    assert not _share_keys(context, first).has_error()
    return first


def test_next_round_is_set_up_on_keys_advertised_with_the_masked_vector() -> None:
    context = _context()
    first = _one_round(context)
    record = _masked_vector_sent(context, advertise=True)
    assert record is not None
    advertised = (record[Key.PUBLIC_KEY_1], record[Key.PUBLIC_KEY_2])
    assert set(advertised).isdisjoint(first)
    assert all(isinstance(bytes_to_public_key(k).curve, CURVE) for k in advertised)  # type: ignore[arg-type]

    reply = _unmask(context, next_keys=advertised)  # type: ignore[arg-type]
    shares = next_shares(reply)
    assert shares is not None
    assert sorted(shares[0]) == list(NEIGHBOURS)  # one encrypted share for each neighbour
    # The node is where Flower's own key-sharing message would have left it: next round's
    # settings, the advertised keys, a fresh mask seed, ready for the collect stage.
    state = _state(context)
    assert (state.pk1, state.pk2) == advertised
    assert (state.threshold, state.share_num) == (2, 3)
    assert state.current_stage == Stage.SHARE_KEYS
    check_stage(state.current_stage, ConfigRecord({Key.STAGE: Stage.COLLECT_MASKED_VECTORS}))

    # The advertised keys are used once: asked again, the node shares nothing.
    _masked_vector_sent(context, advertise=False)
    assert next_shares(_unmask(context, next_keys=advertised)) is None  # type: ignore[arg-type]


def test_without_the_servers_request_no_keys_are_made_or_shared() -> None:
    context = _context()
    first = _one_round(context)
    assert _masked_vector_sent(context, advertise=False) is None
    # A node that holds no advertised keys (never asked, or restarted) still unmasks.
    assert next_shares(_unmask(context, next_keys=first)) is None
    assert _state(context).current_stage == Stage.UNMASK


def test_a_setup_message_discards_keys_advertised_before_it() -> None:
    context = _context()
    _one_round(context)
    record = _masked_vector_sent(context, advertise=True)
    assert record is not None
    _unmask(context)  # the server did not set the next round up ahead ...
    fresh = _setup(context)  # ... and starts it with a setup message instead
    assert not set(fresh) & {record[Key.PUBLIC_KEY_1], record[Key.PUBLIC_KEY_2]}
    _share_keys(context, fresh)
    _masked_vector_sent(context, advertise=False)
    advertised = (record[Key.PUBLIC_KEY_1], record[Key.PUBLIC_KEY_2])
    assert next_shares(_unmask(context, next_keys=advertised)) is None  # type: ignore[arg-type]


def test_keys_the_node_did_not_advertise_are_refused_by_flowers_own_check() -> None:
    context = _context()
    first = _one_round(context)
    _masked_vector_sent(context, advertise=True)
    # The server claims this node advertised other keys: Flower's key sharing refuses, the
    # unmask answer goes out, and the node stays where this round left it.
    assert next_shares(_unmask(context, next_keys=first)) is None
    assert _state(context).current_stage == Stage.UNMASK


def test_incomplete_answers_are_ignored() -> None:
    def reply(record: str, values: dict) -> Message:
        return Message(RecordDict({record: ConfigRecord(values)}), reply_to=_message({}))

    # One key instead of two; destinations without ciphertexts: the server sets up afresh.
    assert advertised_keys(reply(ADVERTISE_RECORD, {Key.PUBLIC_KEY_1: b"a"})) is None
    assert next_shares(reply(NEXT_SHARES_RECORD, {Key.DESTINATION_LIST: [12]})) is None
    both = {Key.DESTINATION_LIST: [12, 13], Key.CIPHERTEXT_LIST: [b"x"]}
    assert next_shares(reply(NEXT_SHARES_RECORD, both)) is None
