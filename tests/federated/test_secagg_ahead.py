"""SecAgg+ keys advertised one round ahead, supplier side (federated/secagg_ahead.py).

A supplier's node is driven through its ClientApp's SecAgg+ mod with real Flower messages and
a real Context; the whole protocol over the simulation engine is in test_fl_simulation.py.
"""

from __future__ import annotations

import pytest
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.client.mod.secure_aggregation.secaggplus_mod import SecAggPlusState
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
    SETUP_RECORD,
    KeysNotAdvertised,
    advertised_keys,
    setup_settings,
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


def _share_keys(context: Context, own: tuple[bytes, bytes], *, ahead: bool) -> Message:
    configs = {Key.STAGE: Stage.SHARE_KEYS, str(NODE): list(own), **_neighbour_keys()}
    extra = {SETUP_RECORD: ConfigRecord(SETTINGS)} if ahead else {}
    return _send(_message(configs, **extra), context)


def _finish_round(context: Context, advertise: bool) -> Message:
    """Move the node's state on to the end of a round, then answer an unmask message."""
    state = _state(context)
    # As after the collect stage: the neighbours' shares received, a masked vector sent.
    state.current_stage = Stage.COLLECT_MASKED_VECTORS
    state.rd_seed_share_dict.update({nid: b"share of %d" % nid for nid in NEIGHBOURS})
    context.state.config_records[RECORD_KEY_STATE] = ConfigRecord(state.to_dict())
    extra = {ADVERTISE_RECORD: ConfigRecord()} if advertise else {}
    unmask = {
        Key.STAGE: Stage.UNMASK,
        Key.ACTIVE_NODE_ID_LIST: [NODE, *NEIGHBOURS],
        Key.DEAD_NODE_ID_LIST: [],
    }
    return _send(_message(unmask, **extra), context)


def test_unmask_reply_advertises_fresh_keys_that_the_next_round_uses_once() -> None:
    context = _context()
    first = _setup(context)
    assert not _share_keys(context, first, ahead=False).has_error()
    reply = _finish_round(context, advertise=True)
    assert not reply.has_error()
    # The unmask answer itself is Flower's; the next round's public keys ride beside it.
    assert reply.content.config_records[RECORD_KEY_CONFIGS][Key.NODE_ID_LIST] == [NODE, *NEIGHBOURS]
    advertised = advertised_keys(reply)
    assert advertised is not None and set(advertised).isdisjoint(first)
    assert all(isinstance(bytes_to_public_key(k).curve, CURVE) for k in advertised)

    # Next round: key sharing without a setup message, on exactly the advertised keys.
    shared = _share_keys(context, advertised, ahead=True)
    assert not shared.has_error()
    out = shared.content.config_records[RECORD_KEY_CONFIGS]
    assert sorted(out[Key.DESTINATION_LIST]) == list(NEIGHBOURS)  # a share for each neighbour
    state = _state(context)
    assert (state.pk1, state.pk2) == advertised
    assert state.current_stage == Stage.SHARE_KEYS
    assert (state.threshold, state.share_num) == (2, 3)

    # Used once: a second key-sharing message without setup finds no keys.
    _finish_round(context, advertise=False)
    with pytest.raises(KeysNotAdvertised):
        _share_keys(context, advertised, ahead=True)


def test_without_the_servers_request_no_keys_are_made_ahead() -> None:
    context = _context()
    first = _setup(context)
    _share_keys(context, first, ahead=False)
    reply = _finish_round(context, advertise=False)
    assert advertised_keys(reply) is None
    with pytest.raises(KeysNotAdvertised):
        _share_keys(context, first, ahead=True)


def test_a_setup_message_discards_keys_advertised_before_it() -> None:
    context = _context()
    first = _setup(context)
    _share_keys(context, first, ahead=False)
    advertised = advertised_keys(_finish_round(context, advertise=True))
    assert advertised is not None
    # The server did not use them (e.g. the supplier was not sampled next round): a fresh setup.
    fresh = _setup(context)
    assert set(fresh).isdisjoint(advertised)
    with pytest.raises(KeysNotAdvertised):
        _share_keys(context, advertised, ahead=True)


def test_keys_advertised_for_the_wrong_node_are_refused_by_flowers_own_check() -> None:
    context = _context()
    first = _setup(context)
    _share_keys(context, first, ahead=False)
    _finish_round(context, advertise=True)
    # The server claims this node advertised other keys: Flower's share-keys stage refuses.
    with pytest.raises(ValueError, match="Own public keys"):
        _share_keys(context, first, ahead=True)


def test_setup_settings_are_the_setup_message_minus_its_stage() -> None:
    msg = _message({Key.STAGE: Stage.SETUP, **SETTINGS})
    assert dict(setup_settings(msg)) == SETTINGS


def test_an_incomplete_advertisement_is_ignored() -> None:
    reply = Message(
        RecordDict({ADVERTISE_RECORD: ConfigRecord({Key.PUBLIC_KEY_1: b"a"})}),
        dst_node_id=NODE,
        message_type=MessageType.TRAIN,
    )
    assert advertised_keys(reply) is None  # no second key: the supplier gets a setup instead
