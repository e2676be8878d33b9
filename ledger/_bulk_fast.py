"""The fast path of bulk receipt verification (``ledger.bulk_verify``).

It can only say "valid", and only where the full verifier (``ledger.verify.verify_receipt``,
``ledger.tlog.verify.verify_receipt_offline``) would say so too. For every receipt it either
proves that all of the full verifier's checks pass, or it answers None and the receipt goes
through the full verifier, which gives the same precise report as ``qledger verify``. It
answers None for:

- any value the full parser would accept only after coercing it (a number in a string, ``5.0``
  for 5, a domain without its name), or that is unusual at all (integers beyond 64 bits):
  it recognises exactly the strict shape the service issues, a subset of what the models
  accept, with the same constraints (patterns, ranges, ``extra="forbid"``);
- any chain fact (or opened checkpoint) the run has not yet read: it never asks the chain
  itself, so the first receipt of each batch root and of each signer goes the full way, whose
  :class:`~ledger.bulk_verify.CachingChain` reads are then what the fast path reads too. Chain
  reads and their counts are therefore exactly those of verifying every receipt the full way;
- any check that fails.

What makes it fast is what it leaves out, never what it checks: no pydantic model per receipt
(only the payload's own model, whose validators are the schema), no check result or detail
string for a receipt that passes, hashes of repeated strings (subject, kind, part number)
and the EIP-712 domain separator computed once, and the Merkle fold memoised per node and
the exact proof strings above it (receipts of one batch share all but their lowest nodes).
Every memo is a pure function of its key (exact, type-checked strings, bytes and integers),
so a hit can only give what the computation would.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from typing import Any, Final, NamedTuple, cast

import orjson

from ledger._address import is_valid_checksum, to_checksum
from ledger._hash import keccak
from ledger._secp256k1 import recover_uncompressed
from ledger.canonical import canonical_json
from ledger.eip712 import RECORD_TYPES, domain_separator, type_hash
from ledger.errors import LedgerError
from ledger.keys import SECP256K1_HALF_N
from ledger.records import (
    ID_MAX_LENGTH,
    ID_PATTERN,
    KIND_SIGNER_ROLES,
    SELF_SUBJECT_KINDS,
    UINT64_MAX,
    Domain,
    QualityRecord,
    RecordKind,
    Role,
    _check_counts,
    parse_payload,
)
from ledger.tlog.entries import ledger_origin, record_entry
from ledger.tlog.note import SignedCheckpoint
from ledger.tlog.tree import leaf_hash as log_leaf_hash
from ledger.tlog.tree import node_hash as log_node_hash
from ledger.verify import CLOCK_SKEW_SECONDS, PARTICIPANT_ROLES, _held_at

# Every key each object may have (extra="forbid") and those it must have (no default). The
# domain's name and version have defaults in the model, but the service always writes them:
# one without them is left to the full parser.
_RECEIPT_KEYS: Final = frozenset(
    {
        "version",
        "record",
        "structHash",
        "proof",
        "root",
        "batchId",
        "leafCount",
        "chainId",
        "contract",
        "transactionHash",
        "blockNumber",
        "blockTimestamp",
        "blockHash",
        "log",
    }
)
_RECEIPT_REQUIRED: Final = _RECEIPT_KEYS - {"version", "blockHash", "log"}
_SIGNED_KEYS: Final = frozenset({"domain", "record", "payload", "signature"})
_DOMAIN_KEYS: Final = frozenset({"name", "version", "chainId", "verifyingContract"})
_RECORD_KEYS: Final = frozenset(
    {
        "signer",
        "subject",
        "kind",
        "partNumber",
        "lotId",
        "eventTime",
        "signedAt",
        "quantity",
        "defects",
        "nonce",
        "salt",
        "payloadHash",
    }
)
_LOG_KEYS: Final = frozenset({"index", "treeSize", "inclusion", "checkpoint"})
# LogProof.checkpoint's max_length (ledger.tlog.entries).
_CHECKPOINT_MAX_CHARS: Final = 64 * 1024
# Receipt integers have no upper bound in the model; beyond 64 bits none is real, and the
# fast path need not reason about them (the full parser takes them).
_INT_LIMIT: Final = 2**64
_KINDS: Final = {k.value: k for k in RecordKind}
# QualityRecord._counts: the kinds whose defects may not exceed their quantity.
_COUNTED_KINDS: Final = frozenset(
    {RecordKind.INSPECTION, RecordKind.DELIVERY, RecordKind.COMPLAINT, RecordKind.GOODS_RECEIPT}
)
_ID: Final = re.compile(ID_PATTERN)
_RECORD_TYPE_HASH: Final = type_hash("QualityRecord", RECORD_TYPES)
# eventTime, signedAt (uint64), quantity, defects (uint32), nonce (uint64): five 32-byte
# big-endian words, as ledger.eip712.record_struct_hash encodes them one by one.
_WORDS: Final = struct.Struct(">24xQ24xQ28xI28xI24xQ")
_ZERO32: Final = bytes(32)
# EIP-2: s <= n/2 (ledger.keys.recover_digest_raw); compared as 32 big-endian bytes.
_HALF_N: Final = SECP256K1_HALF_N.to_bytes(32, "big")
# What a memo or a peek at facts read answers for a key it does not hold.
MISSING: Final = object()
# Memo bounds: receipts of one batch share nodes, so a memo of a few batches is as good as an
# unbounded one; past the bound it starts over rather than grow with the input.
_MEMO_LIMIT: Final = 1 << 18


def _uint(value: object, limit: int) -> bool:
    return type(value) is int and 0 <= value <= limit


def _positive(value: object) -> bool:
    return type(value) is int and 0 < value < _INT_LIMIT


def _hex_bytes(value: object, length: int) -> bytes | None:
    """The bytes of ``0x`` + exactly ``2 * length`` hex digits (either case), else None.

    The length check makes bytes.fromhex as strict as the pattern: it skips whitespace, but
    ``length`` bytes from ``2 * length`` characters leave no room for any."""
    if type(value) is not str or len(value) != 2 + 2 * length or value[:2] != "0x":
        return None
    try:
        raw = bytes.fromhex(value[2:])
    except ValueError:
        return None
    return raw if len(raw) == length else None


def _identifier(value: object) -> bool:
    """records.Identifier: 1..64 characters of the one id pattern."""
    return (
        type(value) is str and 1 <= len(value) <= ID_MAX_LENGTH and _ID.fullmatch(value) is not None
    )


class _Bounded(dict[Any, Any]):
    """A memo that starts over when it reaches its bound."""

    def put(self, key: Any, value: Any) -> Any:
        if len(self) >= _MEMO_LIMIT:
            self.clear()
        self[key] = value
        return value


class FastRecordPath:
    """What the RPC and the offline verifiers have in common: the receipt's shape (as strict
    as the models, see the module docstring), the record's signature and struct hash, the
    Merkle fold. :meth:`check` answers the receipt's facts or None."""

    def __init__(self, *, folds_log: bool = False) -> None:
        # Offline the log proof's hashes are checked as LogPath folds them, not twice.
        self._log_hashes = not folds_log
        # Memos of pure functions of their (type-checked) keys; see the module docstring.
        self._domains = _Bounded()  # (chainId, contract str) -> (checksummed, separator) | None
        self._signers = _Bounded()  # signer str -> (checksummed, struct-hash prefix) | None
        self._fields = _Bounded()  # (subject, kind, partNumber) -> (kind, 3 words) | None
        self._contracts = _Bounded()  # address str -> bool
        self._hashes = _Bounded()  # str -> 32 bytes | None (repeated: roots, blocks, txs)
        self._addresses = _Bounded()  # uncompressed public key -> address bytes
        self._tops = _Bounded()  # Merkle node -> (the proof above it, the root it folds to)
        self._recover = recover_uncompressed

    def _hash32(self, value: object) -> bytes | None:
        """A Hex32 that repeats across receipts: checked once per string."""
        if type(value) is not str:
            return None
        found = self._hashes.get(value, MISSING)
        if found is MISSING:
            found = self._hashes.put(value, _hex_bytes(value, 32))
        return found

    def _contract(self, value: object) -> bool:
        """Receipt.contract: ``^0x[0-9a-fA-F]{40}$``."""
        if type(value) is not str:
            return False
        found = self._contracts.get(value)
        if found is None:
            found = self._contracts.put(value, _hex_bytes(value, 20) is not None)
        return bool(found)

    def _domain(self, chain_id: int, contract: object) -> tuple[str, bytes] | None:
        """Domain._address (20-byte hex, checksummed) and the domain separator, which
        ``ledger.eip712.domain_separator`` computes from the same model."""
        if type(contract) is not str:
            return None
        key = (chain_id, contract)
        found = self._domains.get(key, MISSING)
        if found is MISSING:
            found = None
            if _hex_bytes(contract, 20) is not None:
                domain = Domain(chainId=chain_id, verifyingContract=contract)
                found = (domain.verifyingContract, domain_separator(domain))
            self._domains.put(key, found)
        return found

    def _signer(self, value: object) -> tuple[str, bytes] | None:
        """QualityRecord._checksum (20-byte hex, a valid EIP-55 checksum if mixed case): the
        checksummed address and the first two words of the struct hash's encoding."""
        if type(value) is not str:
            return None
        found = self._signers.get(value, MISSING)
        if found is MISSING:
            raw = _hex_bytes(value, 20)
            found = self._signers.put(
                value,
                (to_checksum(value), _RECORD_TYPE_HASH + bytes(12) + raw)
                if raw is not None and is_valid_checksum(value)
                else None,
            )
        return found

    def _record_fields(
        self, subject: object, kind: object, part: object
    ) -> tuple[RecordKind, bytes] | None:
        """subject and partNumber (Identifier), kind (RecordKind): the kind and their three
        words of the struct hash's encoding (keccak of each string)."""
        if type(subject) is not str or type(kind) is not str or type(part) is not str:
            return None
        key = (subject, kind, part)
        found = self._fields.get(key, MISSING)
        if found is MISSING:
            member = _KINDS.get(kind)
            found = self._fields.put(
                key,
                (member, keccak(subject.encode()) + keccak(kind.encode()) + keccak(part.encode()))
                if member is not None and _identifier(subject) and _identifier(part)
                else None,
            )
        return found

    def fold(self, leaf: bytes, proof: list[Any]) -> bytes | None:
        """OpenZeppelin processProof over the proof's hex strings (None: one is not Hex32).

        Receipts of one batch share the upper part of their proofs: once a node has been
        folded to the root with the proof above it, another receipt reaching that node with
        the very same strings above it has the same root, without hashing again."""
        tops = self._tops
        node = leaf
        path: list[tuple[bytes, int]] = []
        for i, sibling in enumerate(proof):
            top = tops.get(node)
            if top is not None and proof[i:] == top[0]:
                node = top[1]
                break
            raw = _hex_bytes(sibling, 32)
            if raw is None:
                return None
            path.append((node, i))
            node = keccak(node + raw if node < raw else raw + node)
        for below, i in path:
            tops.put(below, (proof[i:], node))
        return node

    def check(self, data: dict[str, Any]) -> _Facts | None:
        """The receipt's facts if it parses as the models would parse it and its record's
        signature and struct hash check out (``receipt_format``, ``signature``,
        ``struct_hash`` and ``domain_matches_contract`` pass); else None."""
        keys = data.keys()
        if not (keys <= _RECEIPT_KEYS and keys >= _RECEIPT_REQUIRED):
            return None
        signed = data["record"]
        if type(signed) is not dict or signed.keys() != _SIGNED_KEYS:
            return None
        domain, record, payload = signed["domain"], signed["record"], signed["payload"]
        if (
            type(domain) is not dict
            or type(record) is not dict
            or type(payload) is not dict
            or domain.keys() != _DOMAIN_KEYS
            or record.keys() != _RECORD_KEYS
        ):
            return None
        # -- the receipt's own fields
        version = data.get("version", 1)
        chain_id, batch_id, leaf_count = data["chainId"], data["batchId"], data["leafCount"]
        block_number, block_time = data["blockNumber"], data["blockTimestamp"]
        contract, proof = data["contract"], data["proof"]
        if not (
            type(version) is int
            and version == 1
            and type(chain_id) is int
            and 0 < chain_id < _INT_LIMIT
            and type(batch_id) is int
            and 0 < batch_id < _INT_LIMIT
            and type(leaf_count) is int
            and 0 < leaf_count < _INT_LIMIT
            and type(block_number) is int
            and 0 <= block_number < _INT_LIMIT
            and type(block_time) is int
            and 0 <= block_time < _INT_LIMIT
            and type(proof) is list
            and self._contract(contract)
        ):
            return None
        root = self._hash32(data["root"])
        block_hash = data.get("blockHash")
        log = data.get("log")
        if (
            root is None
            or self._hash32(data["transactionHash"]) is None
            or (block_hash is not None and self._hash32(block_hash) is None)
            or (log is not None and not _log_shape(log, hashes=self._log_hashes))
        ):
            return None
        # -- the signed record
        domain_chain = domain["chainId"]
        if (
            domain["name"] != "QualityLedger"
            or domain["version"] != "1"
            or type(domain_chain) is not int
            or not 0 < domain_chain <= UINT64_MAX
        ):
            return None
        checked_domain = self._domain(domain_chain, domain["verifyingContract"])
        signer = self._signer(record["signer"])
        fields = self._record_fields(record["subject"], record["kind"], record["partNumber"])
        lot = record["lotId"]
        if checked_domain is None or signer is None or fields is None or not _identifier(lot):
            return None
        kind = fields[0]
        event_time, signed_at = record["eventTime"], record["signedAt"]
        quantity, defects, nonce = record["quantity"], record["defects"], record["nonce"]
        if not (
            type(event_time) is int
            and type(signed_at) is int
            and type(quantity) is int
            and type(defects) is int
            and type(nonce) is int
        ):
            return None
        try:  # the struct's ranges are exactly the words' (uint64, uint32): pack checks them
            words = _WORDS.pack(event_time, signed_at, quantity, defects, nonce)
        except struct.error:
            return None
        if kind in _COUNTED_KINDS and defects > quantity:
            return None
        salt = _hex_bytes(record["salt"], 32)
        payload_hash = _hex_bytes(record["payloadHash"], 32)
        signature = _hex_bytes(signed["signature"], 65)
        struct_hash = _hex_bytes(data["structHash"], 32)
        if salt is None or payload_hash is None or signature is None or struct_hash is None:
            return None
        # -- SignedRecord._payload_matches: the same functions, so the same verdict.
        try:
            text = _plain_json(payload) if _plain(payload) else None
            if text is None:
                text = canonical_json(payload)
            if keccak(text) != payload_hash:
                return None
            subject, part = record["subject"], record["partNumber"]
            counted = _Counted(kind, subject, part, lot, event_time, quantity, defects)
            _check_counts(cast(QualityRecord, counted), parse_payload(kind, payload))
        except LedgerError:
            return None
        # -- signature: ledger.signing.check_signature, ledger.keys.recover_digest_raw
        computed = keccak(
            b"".join((signer[1], fields[1], keccak(lot.encode()), words, salt, payload_hash))
        )
        if computed != struct_hash:
            return None
        digest = keccak(b"\x19\x01" + checked_domain[1] + computed)
        v = signature[64]
        if v == 27 or v == 28:
            v -= 27
        s = signature[32:64]
        if v > 1 or s == _ZERO32 or s > _HALF_N:
            return None
        public = self._recover(signature, v, digest)
        if public is None:
            return None
        address = self._addresses.get(public)
        if address is None:
            address = self._addresses.put(public, keccak(public[1:])[-20:])
        if address != signer[1][-20:]:
            return None
        # -- domain_matches_contract
        if domain_chain != chain_id or checked_domain[0].lower() != contract.lower():
            return None
        # ledger.merkle.leaf_hash: the StandardMerkleTree leaf of a bytes32 value
        folded = self.fold(keccak(keccak(computed)), proof)
        if folded is None:
            return None
        return _Facts(
            computed, root, folded, signer[0], kind, subject, signed_at, chain_id, contract
        )


class _Counted(NamedTuple):
    """The fields of a record that ``ledger.records._check_counts`` compares with its payload
    (a QualityRecord costs a model construction per receipt)."""

    kind: RecordKind
    subject: str
    partNumber: str
    lotId: str
    eventTime: int
    quantity: int
    defects: int


_SAFE_INT: Final = 2**53


def _plain_json(value: Any) -> bytes | None:
    """What ``ledger.canonical`` prints for a value :func:`_plain` accepts (there: Python's
    C encoder, sorted keys, no whitespace, ``ensure_ascii=False``), through orjson at a sixth
    of the cost. They agree on such values: both print every code point of a string the same
    way (checked for all of them), floats of that range in the same shortest round-trip form
    and ASCII keys in the same order; tests compare them on random payloads. None where orjson
    refuses (it nests at most 254 deep; a parsed payload may nest 1024 deep)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        return None


def _plain(value: Any) -> bool:
    """True only where ``ledger.canonical`` prints ``value`` with its plain encoder (its
    ``_scan`` says _AS_IS), so that encoder gives the canonical bytes: ASCII keys, integers
    within 2**53, floats that are not integral and print without an exponent, nothing else.
    False sends the payload through ``canonical_json`` itself. A loop, not a recursion: this
    runs once per receipt."""
    stack = [value]
    pop, push = stack.pop, stack.extend
    while stack:
        item = pop()
        kind = type(item)
        if kind is str or kind is bool or item is None:
            continue
        if kind is dict:
            for key in item:
                if type(key) is not str or not key.isascii():
                    return False
            push(item.values())
        elif kind is list:
            push(item)
        elif kind is int:
            if not -_SAFE_INT <= item <= _SAFE_INT:
                return False
        elif kind is float:
            if item.is_integer() or not 1e-4 <= abs(item) < 1e16:
                return False
        else:
            return False
    return True


class _Facts:
    """What the chain or log checks need of a receipt that passed :meth:`FastRecordPath.check`."""

    __slots__ = (
        "chain_id",
        "contract",
        "folded",
        "kind",
        "root",
        "signed_at",
        "signer",
        "struct_hash",
        "subject",
    )

    def __init__(
        self,
        struct_hash: bytes,
        root: bytes,
        folded: bytes,
        signer: str,
        kind: RecordKind,
        subject: str,
        signed_at: int,
        chain_id: int,
        contract: str,
    ) -> None:
        self.struct_hash = struct_hash
        self.root = root
        self.folded = folded
        self.signer = signer
        self.kind = kind
        self.subject = subject
        self.signed_at = signed_at
        self.chain_id = chain_id
        self.contract = contract


def _log_shape(log: object, *, hashes: bool) -> bool:
    """LogProof: index >= 0, treeSize > 0, inclusion a list of lowercase Hex32s (checked here
    if ``hashes``, else by whoever folds them), a checkpoint note of 1..64 Ki characters,
    nothing else."""
    if type(log) is not dict or log.keys() != _LOG_KEYS:
        return False
    inclusion, checkpoint = log["inclusion"], log["checkpoint"]
    return (
        _uint(log["index"], _INT_LIMIT - 1)
        and _positive(log["treeSize"])
        and type(inclusion) is list
        and (not hashes or all(_log_hash(h) is not None for h in inclusion))
        and type(checkpoint) is str
        and 1 <= len(checkpoint) <= _CHECKPOINT_MAX_CHARS
    )


def _log_hash(value: object) -> bytes | None:
    """A log hash: ``^0x[0-9a-f]{64}$`` (lowercase only: ``islower`` is False with an
    upper-case digit, and True otherwise, since ``x`` is a lower-case letter)."""
    if type(value) is not str or not value.islower():
        return None
    return _hex_bytes(value, 32)


class ChainPath:
    """The chain checks of ``ledger.verify.verify_receipt`` for a receipt whose record checks
    passed, from facts already read: ``peek(key)`` answers what ``CachingChain`` read for
    ``key``, or ``MISSING`` (then the receipt goes the full way, which reads it). ``pinned``:
    the (chain id, lowercase ledger) the receipt must name, once the facts read showed that
    the chain serves them (``rpc_serves_pinned_chain``; ``trust_root`` and ``chain_id``
    compare with it)."""

    def __init__(self, peek: Callable[[tuple[Any, ...]], Any], pinned: tuple[int, str]) -> None:
        self._peek = peek
        self._pinned = pinned
        # Checks that passed, by everything they read of the receipt (facts read never change):
        # the signer's (signer, signedAt, kind, subject), the batch's anchoring details.
        self._signers_ok = _Bounded()
        self._batches_ok = _Bounded()  # -> the anchor's block timestamp

    def _signer_ok(self, signer: str, signed_at: int, kind: RecordKind, subject: str) -> bool:
        """signer_role_at_signing, kind_allowed_for_role, supplier_files_about_itself."""
        peek = self._peek
        account = signer.lower()
        roles_then = []
        for role in PARTICIPANT_ROLES:
            history = peek(("role_history", account, role))
            if history is MISSING:
                return False
            if _held_at(list(history), signed_at):
                roles_then.append(role)
        if not roles_then or KIND_SIGNER_ROLES[kind].isdisjoint(roles_then):
            return False
        if Role.SUPPLIER in roles_then or kind in SELF_SUBJECT_KINDS:
            org = peek(("org_of", account))
            if org is MISSING or org is None or str(org) != subject:
                return False
        return True

    def _anchor_time(self, root: bytes, data: dict[str, Any], contract: str) -> int | None:
        """root_anchored, block_canonical (skipped without a blockHash) and
        anchor_matches_receipt: the anchor's block timestamp if they pass."""
        peek = self._peek
        anchor = peek(("anchored_at", root))
        if anchor is MISSING or anchor is None:
            return None
        block_number = data["blockNumber"]
        block_hash = data.get("blockHash")
        if block_hash is not None:
            canonical = peek(("block_hash", block_number))
            if canonical is MISSING or canonical is None or str(canonical) != block_hash.lower():
                return None
        tx = peek(("transaction_block", data["transactionHash"].lower()))
        if not (
            tx is not MISSING
            and tx is not None
            and anchor.batch_id == data["batchId"]
            and anchor.block_number == block_number
            and anchor.timestamp == data["blockTimestamp"]
            and anchor.leaf_count == data["leafCount"]
            and int(tx[0]) == block_number
            and str(tx[1]).lower() == contract
        ):
            return None
        return int(anchor.timestamp)

    def passes(self, facts: _Facts, data: dict[str, Any]) -> bool:
        pinned_chain, pinned_ledger = self._pinned
        contract = facts.contract.lower()
        # trust_root and chain_id; merkle_proof's fold (its anchored(root) is root_anchored's)
        if facts.chain_id != pinned_chain or contract != pinned_ledger:
            return False
        if facts.folded != facts.root:
            return False
        # The receipt's values in these keys were type-checked (ints are ints, not bools).
        signer_key = (facts.signer, facts.signed_at, facts.kind, facts.subject)
        if signer_key not in self._signers_ok:
            if not self._signer_ok(*signer_key):
                return False
            self._signers_ok.put(signer_key, True)
        batch_key = (
            facts.root,
            data["blockNumber"],
            data.get("blockHash"),
            data["transactionHash"],
            data["batchId"],
            data["leafCount"],
            data["blockTimestamp"],
            contract,
        )
        anchored = self._batches_ok.get(batch_key)
        if anchored is None:
            anchored = self._anchor_time(facts.root, data, contract)
            if anchored is None:
                return False
            self._batches_ok.put(batch_key, anchored)
        # signed_before_anchor
        return bool(facts.signed_at <= anchored + CLOCK_SKEW_SECONDS)


class LogPath:
    """The checks of ``ledger.tlog.verify.verify_receipt_offline`` after the record's: trust
    root, proof to the batch root, and the log proof against a checkpoint already opened
    (``opened(note, origin)``: the checkpoint as the log key alone opened it, if both that
    and the opening with the witnesses succeeded, else None). ``pinned``: the trust root's
    (chain id, lowercase ledger), if any."""

    def __init__(
        self, opened: Callable[[str, str], SignedCheckpoint | None], pinned: tuple[int, str] | None
    ) -> None:
        self._opened = opened
        self._pinned = pinned
        self._tops = _Bounded()  # (node, fn, sn) -> (the proof above it, the root it folds to)

    def inclusion_root(self, index: int, size: int, leaf: bytes, proof: list[Any]) -> bytes | None:
        """``ledger.tlog.tree.root_from_inclusion`` (RFC 9162 2.1.3.2) over the proof's
        strings, None where it raises or a string is not a lowercase Hex32 (the LogProof
        pattern). Entries of one checkpoint share the upper part of their paths: a state
        (node, fn, sn) once folded to a root with the very same proof strings above it folds
        to that root again, without hashing (and those strings were checked then)."""
        if not 0 <= index < size:
            return None
        tops = self._tops
        fn, sn, r = index, size - 1, leaf
        path: list[tuple[tuple[bytes, int, int], int]] = []
        for i, sibling in enumerate(proof):
            if sn == 0:
                return None  # the proof is longer than the path
            state = (r, fn, sn)
            top = tops.get(state)
            if top is not None and proof[i:] == top[0]:
                r, sn = top[1], 0
                break
            p = _log_hash(sibling)
            if p is None:
                return None
            path.append((state, i))
            if fn & 1 or fn == sn:
                r = log_node_hash(p, r)
                if not fn & 1:
                    while fn and not fn & 1:
                        fn >>= 1
                        sn >>= 1
            else:
                r = log_node_hash(r, p)
            fn >>= 1
            sn >>= 1
        if sn != 0:
            return None  # the proof is shorter than the path
        for state, i in path:
            tops.put(state, (proof[i:], r))
        return r

    def passes(self, facts: _Facts, data: dict[str, Any]) -> bool:
        if self._pinned is not None:
            chain_id, ledger = self._pinned
            if facts.chain_id != chain_id or facts.contract.lower() != ledger:
                return False
        else:
            chain_id, ledger = facts.chain_id, facts.contract
        if facts.folded != facts.root:
            return False
        log = data.get("log")
        if log is None:
            return False
        signed = self._opened(log["checkpoint"], ledger_origin(chain_id, ledger))
        if signed is None or signed.checkpoint.size != log["treeSize"]:
            return False
        leaf = log_leaf_hash(record_entry(facts.struct_hash, facts.root))
        found = self.inclusion_root(log["index"], log["treeSize"], leaf, log["inclusion"])
        return found is not None and found == signed.checkpoint.root
