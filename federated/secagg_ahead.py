"""SecAgg+ keys set up one round ahead: two message rounds per round instead of four.

Flower's SecAgg+ round is four message rounds: *setup* (each supplier makes two fresh key pairs
and sends the public halves), *share keys* (each supplier splits its mask seed and mask key into
Shamir shares, encrypted to its neighbours), *collect masked vectors* (the server forwards the
shares; each supplier trains, masks its update and sends it) and *unmask* (each supplier sends
the shares the server needs to remove the masks). Only the last two concern the round's model;
the first two depend on nothing but the set of suppliers. So they ride one round earlier:

- with its masked vector (round t), a supplier sends the public halves of two fresh key pairs
  for round t+1 (the "AdvertiseKeys" step of Bonawitz et al., CCS 2017);
- with its unmask shares (round t), it runs round t+1's setup on those keys and shares them:
  the unmask message carries round t+1's protocol settings and its neighbours' advertised
  public keys, the reply carries its encrypted shares for round t+1.

Round t+1 then starts at collecting masked vectors. The keys, shares and seeds are made exactly
as Flower makes them, each for one round; only the messages they travel in change. What the
server sees is the same: public keys, ciphertexts it only forwards, masked vectors, and at
unmasking the shares of one secret per supplier; round t+1's shares are encrypted to the
neighbours, so sending them beside round t's clear unmask shares gives the server nothing.

Rules that keep it equivalent to Flower's four stages:

- A supplier uses advertised keys once: setting up round t+1 takes them out of its state, and a
  setup message drops any it still holds. Keys are made only when the server plans a next round.
- Setting up round t+1 never puts round t at risk: a supplier that cannot (it lost its keys,
  say, because its node restarted) still answers round t's unmask, just without shares for t+1.
- The server uses a round set up ahead only if it samples exactly those suppliers again and
  every one of them shared its keys; otherwise that round runs Flower's four stages from a
  fresh setup (which resets every supplier), as after any irregularity.

The supplier side is :class:`NextRoundRequest`, read and answered by
``federated.client_app._secagg_mod`` around Flower's ``secaggplus_mod``; the server side is
:class:`federated.secagg.SupplierSecAggPlus`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from flwr.app import ConfigRecord, Context, Message
from flwr.app.typing import ConfigRecordValues
from flwr.client.mod.secure_aggregation.secaggplus_mod import SecAggPlusState, check_configs
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_STATE, Key, Stage
from flwr.supercore.primitives.asymmetric import private_key_to_bytes, public_key_to_bytes

from federated.flower_compat import secagg_private_stages
from federated.secagg_primitives import generate_key_pairs

log = logging.getLogger(__name__)

# Server -> supplier, beside a collect message: "make and advertise next round's keys".
# Supplier -> server, beside its masked vector: the two public keys (Flower's key names).
ADVERTISE_RECORD = "qledger.secaggplus.advertise"
# Server -> supplier, beside an unmask message: next round's setup settings (Flower's setup
# message without its stage) and its neighbours' public keys (Flower's key-sharing message
# without its stage).
NEXT_SETUP_RECORD = "qledger.secaggplus.next-setup"
NEXT_KEYS_RECORD = "qledger.secaggplus.next-keys"
# Supplier -> server, beside its unmask shares: its answer to next round's key sharing.
NEXT_SHARES_RECORD = "qledger.secaggplus.next-shares"
# The supplier's own state (never sent): the advertised key pairs, until they are used.
_ADVERTISED = "qledger.secaggplus.advertised-keys"
_KEY_NAMES = ("sk1", "pk1", "sk2", "pk2")


class KeysNotAdvertised(RuntimeError):
    """The server asked to share keys this supplier does not hold."""


@dataclass
class PreparedRound:
    """A round whose setup and key sharing were done during the previous round (server side)."""

    server_round: int
    sampled: list[int]  # sorted node ids
    num_shares: int
    threshold: int
    neighbours: dict[int, set[int]]
    public_keys: dict[int, list[bytes]]
    shared: set[int] = field(default_factory=set)  # nodes whose key shares came back
    forward_srcs: dict[int, list[int]] = field(default_factory=dict)
    forward_ciphertexts: dict[int, list[bytes]] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.shared == set(self.sampled)


@dataclass
class KeysAhead:
    """What one SecAgg+ round hands the next (server side); one per run."""

    prepared: PreparedRound | None = None


def forget_advertised_keys(context: Context) -> None:
    """A setup message starts the round afresh: keys advertised earlier are never used."""
    context.state.config_records.pop(_ADVERTISED, None)


@dataclass(frozen=True)
class NextRoundRequest:
    """What a protocol message asks of the supplier for the next round (supplier side).

    Read before Flower's ``secaggplus_mod`` runs, since the mods under it replace the message's
    content; answered into the reply after it.
    """

    node_id: int
    advertise: bool  # collect message: make next round's keys, send their public halves
    setup: ConfigRecord | None  # unmask message: next round's settings ...
    neighbour_keys: ConfigRecord | None  # ... and its neighbours' public keys

    @classmethod
    def of(cls, msg: Message) -> NextRoundRequest:
        records = msg.content.config_records
        return cls(
            node_id=msg.metadata.dst_node_id,
            advertise=ADVERTISE_RECORD in records,
            setup=records.get(NEXT_SETUP_RECORD),
            neighbour_keys=records.get(NEXT_KEYS_RECORD),
        )

    def answer(self, reply: Message, context: Context) -> None:
        if reply.has_error():
            return
        if self.advertise:
            reply.content.config_records[ADVERTISE_RECORD] = advertise_next_keys(context)
        if self.setup is not None and self.neighbour_keys is not None:
            shares = share_next_keys(self.node_id, self.setup, self.neighbour_keys, context)
            if shares is not None:
                reply.content.config_records[NEXT_SHARES_RECORD] = shares


def advertise_next_keys(context: Context) -> ConfigRecord:
    """Make next round's two key pairs, keep them, and return their public halves."""
    sk1, pk1 = generate_key_pairs()
    sk2, pk2 = generate_key_pairs()
    keys: dict[str, ConfigRecordValues] = {
        "sk1": private_key_to_bytes(sk1),
        "pk1": public_key_to_bytes(pk1),
        "sk2": private_key_to_bytes(sk2),
        "pk2": public_key_to_bytes(pk2),
    }
    context.state.config_records[_ADVERTISED] = ConfigRecord(keys)
    return ConfigRecord({Key.PUBLIC_KEY_1: keys["pk1"], Key.PUBLIC_KEY_2: keys["pk2"]})


def share_next_keys(
    node_id: int, setup: ConfigRecord, neighbour_keys: ConfigRecord, context: Context
) -> ConfigRecord | None:
    """Set up next round on the advertised keys and share them; None if that cannot be done.

    Runs Flower's setup stage (with the advertised keys in place of fresh ones) and Flower's
    key-sharing stage, and leaves the supplier's state exactly where Flower's own key-sharing
    message would have. If that fails, this round's unmask reply goes out all the same, without
    shares for the next round (the server then sets that round up afresh).
    """
    try:
        shares = _setup_and_share(node_id, setup, neighbour_keys, context)
    except (KeysNotAdvertised, KeyError, TypeError, ValueError) as exc:
        log.warning("not sharing keys for the next SecAgg+ round: %s", exc)
        return None
    return ConfigRecord(shares)


def _setup_and_share(
    node_id: int, settings: ConfigRecord, neighbour_keys: ConfigRecord, context: Context
) -> dict[str, ConfigRecordValues]:
    keys = context.state.config_records.pop(_ADVERTISED, None)
    if keys is None:
        raise KeysNotAdvertised(
            "the server asked for next round's key shares, but this supplier holds no keys "
            "advertised for it (expected keys made with its last masked vector)"
        )
    check_configs(Stage.SETUP, settings)
    check_configs(Stage.SHARE_KEYS, neighbour_keys)
    records = context.state.config_records
    state = SecAggPlusState(**records[RECORD_KEY_STATE])
    state.nid = node_id
    # Flower's setup stage reads the settings and clears the last round's shares; the key pairs
    # it also makes are replaced at once by the ones the server already holds.
    setup, share_keys = secagg_private_stages()
    setup(state, settings)
    state.sk1, state.pk1, state.sk2, state.pk2 = (_key_bytes(keys, k) for k in _KEY_NAMES)
    shares = share_keys(state, neighbour_keys)
    state.current_stage = Stage.SHARE_KEYS
    records[RECORD_KEY_STATE] = ConfigRecord(state.to_dict())
    return shares


def _key_bytes(keys: ConfigRecord, name: str) -> bytes:
    value = keys[name]
    if not isinstance(value, bytes):
        raise TypeError(f"advertised key {name} is {type(value).__name__}, not bytes")
    return value


def _answer(reply: Message, record: str) -> ConfigRecord | None:
    if reply.has_error():
        return None
    return reply.content.config_records.get(record)


def advertised_keys(reply: Message) -> tuple[bytes, bytes] | None:
    """The public keys a masked-vector reply advertises for the next round, if any."""
    record = _answer(reply, ADVERTISE_RECORD)
    if record is None:
        return None
    pk1, pk2 = record.get(Key.PUBLIC_KEY_1), record.get(Key.PUBLIC_KEY_2)
    if not isinstance(pk1, bytes) or not isinstance(pk2, bytes):
        return None
    return pk1, pk2


def next_shares(reply: Message) -> tuple[list[int], list[bytes]] | None:
    """(destinations, ciphertexts) of next round's key shares in an unmask reply, if any."""
    record = _answer(reply, NEXT_SHARES_RECORD)
    if record is None:
        return None
    dsts, ciphertexts = record.get(Key.DESTINATION_LIST), record.get(Key.CIPHERTEXT_LIST)
    if not isinstance(dsts, list) or not isinstance(ciphertexts, list):
        return None
    # The record's type allows any scalar list; a reply whose lists hold anything but node ids
    # and ciphertexts is malformed, and carries no shares, like one with mismatched lengths.
    node_ids = [d for d in dsts if isinstance(d, int)]
    blobs = [c for c in ciphertexts if isinstance(c, bytes)]
    if not len(node_ids) == len(blobs) == len(dsts) == len(ciphertexts):
        return None
    return node_ids, blobs
