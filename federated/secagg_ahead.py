"""SecAgg+ keys advertised one round ahead: three message rounds per round instead of four.

Flower's SecAgg+ round is four message rounds: *setup* (each supplier makes two fresh key pairs
and sends the public halves), *share keys*, *collect masked vectors* and *unmask*. Setup carries
no data and depends on nothing from the round, so here a supplier makes the next round's key
pairs while it answers this round's unmask message and sends their public halves with its
shares (the "AdvertiseKeys" step of Bonawitz et al., CCS 2017, moved one message earlier).
The next round then starts at key sharing: the server puts the setup stage's protocol settings
into each key-sharing message, and the supplier runs the setup stage with the keys it already
advertised before it shares them. Nothing else changes: the same keys, made the same way, are
fresh for every round and used in exactly one; the server holds the same public keys it would
have had after a setup stage.

Rules that keep it equivalent to a fresh setup:

- A supplier uses advertised keys once: taking them removes them from its state; a setup
  message drops any it still holds. Keys travel at most one round ahead, and only in a round
  the server plans to follow (never after its last one).
- The server uses advertised keys only in the round that follows, and only for suppliers it
  samples again; every other supplier gets Flower's setup message as before, in the same
  stage, so a round may mix both.
- A supplier asked to share keys it no longer holds (e.g. its SuperNode restarted and lost
  its state) answers with an error: to the server it is one that dropped before key sharing,
  which :class:`federated.secagg.SupplierSecAggPlus` already handles, and it gets a setup
  message again next round.

The ClientApp side is :func:`take_advertised_keys` and :func:`advertise_next_keys`, called by
``federated.client_app._secagg_mod`` around Flower's ``secaggplus_mod``; the server side is in
:mod:`federated.secagg`.
"""

from __future__ import annotations

from flwr.app import ConfigRecord, Context, Message
from flwr.client.mod.secure_aggregation.secaggplus_mod import (
    SecAggPlusState,
    _setup,
    check_configs,
)
from flwr.common.secure_aggregation.secaggplus_constants import (
    RECORD_KEY_CONFIGS,
    RECORD_KEY_STATE,
    Key,
    Stage,
)
from flwr.supercore.primitives.asymmetric import private_key_to_bytes, public_key_to_bytes

from federated.secagg_primitives import generate_key_pairs

# Server -> supplier, beside an unmask message: "make and advertise next round's keys".
# Supplier -> server, beside its unmask reply: the two public keys (Flower's key names).
ADVERTISE_RECORD = "qledger.secaggplus.advertise"
# Server -> supplier, beside a key-sharing message: the setup stage's protocol settings.
SETUP_RECORD = "qledger.secaggplus.setup"
# The supplier's own state (never sent): the advertised key pairs, until the next round.
_NEXT_KEYS = "qledger.secaggplus.next-keys"
_KEY_NAMES = ("sk1", "pk1", "sk2", "pk2")


class KeysNotAdvertised(RuntimeError):
    """A key-sharing message relied on keys this supplier does not hold."""


def forget_advertised_keys(context: Context) -> None:
    """A setup message starts the round afresh: keys advertised earlier are never used."""
    context.state.config_records.pop(_NEXT_KEYS, None)


def take_advertised_keys(msg: Message, context: Context) -> None:
    """Run the setup stage with the advertised keys, if ``msg`` shares keys without a setup.

    ``msg`` is a key-sharing message with :data:`SETUP_RECORD`; the record is removed from it,
    so Flower's ``secaggplus_mod`` then sees the state and message of an ordinary round.
    """
    settings = msg.content.config_records.pop(SETUP_RECORD, None)
    if settings is None:
        return
    keys = context.state.config_records.pop(_NEXT_KEYS, None)
    if keys is None:
        raise KeysNotAdvertised(
            "the server sent key sharing without a setup stage, but this supplier holds no "
            "keys advertised for it (expected keys from the previous round's unmasking)"
        )
    check_configs(Stage.SETUP, settings)
    records = context.state.config_records
    state = SecAggPlusState(**records.get(RECORD_KEY_STATE, ConfigRecord({})))
    state.current_stage = Stage.SETUP
    state.nid = msg.metadata.dst_node_id
    # Flower's setup stage reads the settings and clears the last round's shares; the key pairs
    # it also makes are replaced at once by the ones the server already holds.
    _setup(state, settings)
    state.sk1, state.pk1, state.sk2, state.pk2 = (bytes(keys[k]) for k in _KEY_NAMES)  # type: ignore[arg-type]
    records[RECORD_KEY_STATE] = ConfigRecord(state.to_dict())  # type: ignore[arg-type]


def advertise_next_keys(msg: Message, reply: Message, context: Context) -> None:
    """After an unmask reply the server asked it of: make next round's keys, send their halves."""
    if ADVERTISE_RECORD not in msg.content.config_records or reply.has_error():
        return
    sk1, pk1 = generate_key_pairs()
    sk2, pk2 = generate_key_pairs()
    keys = {
        "sk1": private_key_to_bytes(sk1),
        "pk1": public_key_to_bytes(pk1),
        "sk2": private_key_to_bytes(sk2),
        "pk2": public_key_to_bytes(pk2),
    }
    context.state.config_records[_NEXT_KEYS] = ConfigRecord(keys)  # type: ignore[arg-type]
    reply.content.config_records[ADVERTISE_RECORD] = ConfigRecord(
        {Key.PUBLIC_KEY_1: keys["pk1"], Key.PUBLIC_KEY_2: keys["pk2"]}
    )


def setup_settings(setup_message: Message) -> ConfigRecord:
    """The protocol settings of a Flower setup message, as :data:`SETUP_RECORD` carries them."""
    settings = dict(setup_message.content.config_records[RECORD_KEY_CONFIGS])
    settings.pop(Key.STAGE, None)
    return ConfigRecord(settings)  # type: ignore[arg-type]


def advertised_keys(reply: Message) -> tuple[bytes, bytes] | None:
    """The public keys an unmask reply advertises for the next round, if any."""
    if reply.has_error() or ADVERTISE_RECORD not in reply.content.config_records:
        return None
    record = reply.content.config_records[ADVERTISE_RECORD]
    pk1, pk2 = record.get(Key.PUBLIC_KEY_1), record.get(Key.PUBLIC_KEY_2)
    if not isinstance(pk1, bytes) or not isinstance(pk2, bytes):
        return None
    return pk1, pk2
