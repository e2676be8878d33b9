"""C2SP signed notes, Ed25519 verifier keys, checkpoints and cosignatures.

Formats (c2sp.org, read from the C2SP/C2SP repository):
- signed-note: text ending in ``\\n``, a blank line, then lines ``— <name> base64(keyid||sig)``;
  key id = SHA-256(name || 0x0A || type || pubkey)[:4]; vkey = ``name+hex(keyid)+base64(type||
  pubkey)``; type 0x01 = Ed25519 over the note text.
- tlog-checkpoint: note text = origin, decimal tree size (no leading zeroes), base64 RFC 6962
  root, optional non-empty extension lines.
- tlog-cosignature (v1, Ed25519): type 0x04; signature = u64 big-endian timestamp || Ed25519
  over ``cosignature/v1\\ntime <ts>\\n`` || the checkpoint's note text.

Parsing is strict (typed ``LogError`` naming the check); nothing is trusted before a known
key's signature over it verified.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ledger.tlog.errors import LogError, NoteFormatError
from ledger.tlog.tree import HASH_SIZE

ED25519 = 0x01  # signed-note "Signature types": Ed25519 note signatures
COSIGNATURE_V1 = 0x04  # signed-note "Signature types": timestamped Ed25519 cosignatures
ED25519_SIG_SIZE = 64  # RFC 8032
ED25519_KEY_SIZE = 32  # RFC 8032
# signed-note: verifiers "MUST accept at least up to 16 signatures"; past this many a note is
# refused (the bound on what a hostile server can make a client parse).
MAX_SIGNATURES = 64
MAX_NOTE_BYTES = 64 * 1024
EM_DASH = "\u2014"
# A key name: non-empty, no Unicode spaces, no plus (signed-note "Format").
_NAME = re.compile(r"^[^\s+]+$")
_SIG_LINE = re.compile(r"^\u2014 ([^\s+]+) ([A-Za-z0-9+/=]+)$")
_DECIMAL = re.compile(r"^(0|[1-9][0-9]*)$")
PRIVATE_KEY_PREFIX = "PRIVATE+KEY+"  # golang.org/x/mod/sumdb/note private key encoding


def _b64(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise NoteFormatError(f"{what} is not standard base64", got=text[:80]) from exc
    # One spelling per value: non-zero padding bits decode to the same bytes, so a note could
    # change without any signed byte changing.
    if base64.b64encode(raw).decode() != text:
        raise NoteFormatError(f"{what} is not canonical base64", got=text[:80])
    return raw


def key_id(name: str, sig_type: int, public_key: bytes) -> bytes:
    """SHA-256(name || 0x0A || type || public key)[:4] (signed-note "Signatures")."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([sig_type]) + public_key).digest()[:4]


def check_key_name(name: str) -> str:
    if not _NAME.match(name):
        raise NoteFormatError("key name is empty or has a space or plus", got=name)
    return name


# -- notes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NoteSignature:
    name: str
    key_id: bytes  # 4 bytes
    signature: bytes  # what follows the key id

    def line(self) -> str:
        blob = base64.b64encode(self.key_id + self.signature).decode()
        return f"{EM_DASH} {self.name} {blob}\n"


@dataclass(frozen=True)
class Note:
    text: str  # ends in "\n", excludes the blank separator line
    signatures: tuple[NoteSignature, ...]

    def encode(self) -> str:
        return self.text + "\n" + "".join(s.line() for s in self.signatures)

    def with_signatures(self, extra: Iterable[NoteSignature]) -> Note:
        """This note plus ``extra`` (duplicates of a (name, key id) already here dropped)."""
        seen = {(s.name, s.key_id) for s in self.signatures}
        added = list(self.signatures)
        for sig in extra:
            if (sig.name, sig.key_id) not in seen:
                seen.add((sig.name, sig.key_id))
                added.append(sig)
        return Note(self.text, tuple(added))


def parse_note(data: str | bytes) -> Note:
    """Parse a signed note strictly (signed-note "Format"); verifies nothing."""
    if isinstance(data, bytes):
        if len(data) > MAX_NOTE_BYTES:
            raise NoteFormatError("note too large", expected=MAX_NOTE_BYTES, got=len(data))
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise NoteFormatError("note is not UTF-8") from exc
    if len(data.encode()) > MAX_NOTE_BYTES:
        raise NoteFormatError("note too large", expected=MAX_NOTE_BYTES, got=len(data))
    if any(ord(c) < 0x20 and c != "\n" for c in data) or "\x7f" in data:
        raise NoteFormatError("note holds a control character other than newline")
    if not data.endswith("\n"):
        raise NoteFormatError("note does not end in a newline")
    # The text is separated from the signatures by the *last* empty line.
    split = data.rfind("\n\n")
    if split < 0:
        raise NoteFormatError("no blank line between text and signatures")
    text, block = data[: split + 1], data[split + 2 :]
    lines = block.split("\n")[:-1]  # block ends in "\n"
    if not lines:
        raise NoteFormatError("note has no signature")
    if len(lines) > MAX_SIGNATURES:
        raise NoteFormatError("too many signatures", expected=MAX_SIGNATURES, got=len(lines))
    signatures = []
    for line in lines:
        match = _SIG_LINE.match(line)
        if match is None:
            raise NoteFormatError("malformed signature line", got=line[:120])
        blob = _b64(match.group(2), "signature")
        if len(blob) < 5:
            raise NoteFormatError("signature shorter than key id + 1 byte", got=len(blob))
        signatures.append(NoteSignature(match.group(1), blob[:4], blob[4:]))
    return Note(text, tuple(signatures))


# -- keys ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verifier:
    """A vkey: name, signature type (0x01 note signer, 0x04 cosigner) and Ed25519 key."""

    name: str
    sig_type: int
    public_key: bytes

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.sig_type, self.public_key)

    @property
    def vkey(self) -> str:
        material = base64.b64encode(bytes([self.sig_type]) + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{material}"

    def matches(self, sig: NoteSignature) -> bool:
        return sig.name == self.name and sig.key_id == self.key_id

    def _ed25519(self, signature: bytes, message: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature:
            return False
        return True

    @classmethod
    def parse(cls, vkey: str, *, expect_type: int | None = None) -> Verifier:
        """Parse ``name+hex(keyid)+base64(type||key)``; the key id must match the key."""
        parts = vkey.strip().split("+", 2)  # base64 may hold "+" itself
        if len(parts) != 3:
            raise NoteFormatError("a vkey is name+keyid+key", got=vkey[:120])
        name, hex_id, material = parts
        check_key_name(name)
        if not re.fullmatch(r"[0-9a-f]{8}", hex_id):
            raise NoteFormatError("vkey key id is not 8 lowercase hex digits", got=hex_id)
        raw = _b64(material, "vkey key material")
        if len(raw) != 1 + ED25519_KEY_SIZE or raw[0] not in (ED25519, COSIGNATURE_V1):
            raise NoteFormatError(
                "vkey is not an Ed25519 (0x01) or cosignature/v1 (0x04) key",
                expected="1+32 bytes, type 0x01 or 0x04",
                got=f"{len(raw)} bytes, type 0x{raw[0]:02x}" if raw else "empty",
            )
        if expect_type is not None and raw[0] != expect_type:
            raise NoteFormatError(
                "vkey has the wrong signature type",
                expected=f"0x{expect_type:02x}",
                got=f"0x{raw[0]:02x}",
            )
        verifier = cls(name, raw[0], raw[1:])
        if verifier.key_id.hex() != hex_id:
            raise NoteFormatError(
                "vkey key id does not match its name and key",
                expected=verifier.key_id.hex(),
                got=hex_id,
            )
        return verifier


@dataclass(frozen=True)
class Signer:
    """An Ed25519 signing key with its key name; ``sig_type`` 0x01 (log) or 0x04 (witness)."""

    name: str
    sig_type: int
    _private: Ed25519PrivateKey

    def __repr__(self) -> str:  # never the key material
        return f"Signer(name={self.name!r}, type=0x{self.sig_type:02x})"

    @classmethod
    def generate(cls, name: str, sig_type: int = ED25519) -> Signer:
        return cls(check_key_name(name), sig_type, Ed25519PrivateKey.generate())

    @property
    def verifier(self) -> Verifier:
        public = self._private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return Verifier(self.name, self.sig_type, public)

    def encode(self) -> str:
        """``PRIVATE+KEY+name+hex(keyid)+base64(type||seed)`` (x/mod/sumdb/note's form)."""
        from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

        seed = self._private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        material = base64.b64encode(bytes([self.sig_type]) + seed).decode()
        return f"{PRIVATE_KEY_PREFIX}{self.name}+{self.verifier.key_id.hex()}+{material}"

    @classmethod
    def decode(cls, text: str) -> Signer:
        text = text.strip()
        if not text.startswith(PRIVATE_KEY_PREFIX):
            raise NoteFormatError("not a PRIVATE+KEY+ signing key")
        parts = text[len(PRIVATE_KEY_PREFIX) :].split("+", 2)
        if len(parts) != 3:
            raise NoteFormatError("a signing key is PRIVATE+KEY+name+keyid+key")
        name, hex_id, material = parts
        raw = _b64(material, "signing key")
        if len(raw) != 33 or raw[0] not in (ED25519, COSIGNATURE_V1):
            raise NoteFormatError("signing key is not an Ed25519 seed with a known type")
        signer = cls(check_key_name(name), raw[0], Ed25519PrivateKey.from_private_bytes(raw[1:]))
        if signer.verifier.key_id.hex() != hex_id:
            raise NoteFormatError("signing key's key id does not match", got=hex_id)
        return signer

    def _sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    def sign_note(self, text: str) -> NoteSignature:
        """A type-0x01 note signature over ``text``."""
        if self.sig_type != ED25519:
            raise LogError("key_type", "a cosigner key does not sign notes", got=self.sig_type)
        return NoteSignature(self.name, self.verifier.key_id, self._sign(text.encode()))

    def cosign(self, checkpoint_text: str, timestamp: int | None = None) -> NoteSignature:
        """A tlog-cosignature/v1 line over a checkpoint's note text."""
        if self.sig_type != COSIGNATURE_V1:
            raise LogError("key_type", "a note key does not cosign", got=self.sig_type)
        ts = int(time.time()) if timestamp is None else timestamp
        if not 0 <= ts < 2**63:
            raise LogError("cosignature", "timestamp out of range", got=ts)
        sig = self._sign(cosignature_message(checkpoint_text, ts))
        return NoteSignature(self.name, self.verifier.key_id, struct.pack(">Q", ts) + sig)


def cosignature_message(checkpoint_text: str, timestamp: int) -> bytes:
    """tlog-cosignature "Ed25519 signed message"."""
    return f"cosignature/v1\ntime {timestamp}\n".encode() + checkpoint_text.encode()


def note_signature_valid(verifier: Verifier, note: Note, sig: NoteSignature) -> bool:
    """Whether ``sig`` (already matched to ``verifier`` by name and key id) verifies."""
    if verifier.sig_type == ED25519:
        return len(sig.signature) == ED25519_SIG_SIZE and verifier._ed25519(
            sig.signature, note.text.encode()
        )
    if len(sig.signature) != 8 + ED25519_SIG_SIZE:
        return False
    (ts,) = struct.unpack(">Q", sig.signature[:8])
    return ts < 2**63 and verifier._ed25519(sig.signature[8:], cosignature_message(note.text, ts))


def cosignature_time(sig: NoteSignature) -> int:
    if len(sig.signature) != 8 + ED25519_SIG_SIZE:
        raise LogError("cosignature", "not a timestamped Ed25519 signature", got=len(sig.signature))
    return int(struct.unpack(">Q", sig.signature[:8])[0])


# -- checkpoints -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def text(self) -> str:
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode()]
        return "\n".join([*lines, *self.extensions]) + "\n"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Parse a checkpoint's note text (tlog-checkpoint "Note text")."""
        if not text.endswith("\n"):
            raise NoteFormatError("checkpoint text does not end in a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise NoteFormatError("a checkpoint has at least three lines", got=len(lines))
        origin, size, root, *extensions = lines
        if not origin:
            raise NoteFormatError("empty origin line")
        if not _DECIMAL.match(size):
            raise NoteFormatError("tree size is not a decimal without leading zeroes", got=size)
        digest = _b64(root, "root hash")
        if len(digest) != HASH_SIZE:
            raise NoteFormatError("root hash is not 32 bytes", expected=32, got=len(digest))
        if any(not line for line in extensions):
            raise NoteFormatError("empty extension line")
        return cls(origin, int(size), digest, tuple(extensions))


@dataclass(frozen=True)
class SignedCheckpoint:
    checkpoint: Checkpoint
    note: Note
    cosigned_by: tuple[str, ...] = ()  # vkeys of the witnesses whose cosignature verified


def sign_checkpoint(checkpoint: Checkpoint, signer: Signer) -> Note:
    text = checkpoint.text()
    return Note(text, (signer.sign_note(text),))


def open_checkpoint(
    data: str | bytes | Note,
    log_key: Verifier,
    *,
    origin: str | None = None,
    witnesses: Sequence[Verifier] = (),
    quorum: int = 0,
) -> SignedCheckpoint:
    """Verify a signed checkpoint: the log key's signature (``checkpoint_signature``), the
    origin (``log_origin``), and at least ``quorum`` valid cosignatures from ``witnesses``
    (``witness_quorum``). A known key's signature that fails rejects the note (signed-note
    SHOULD); lines of unknown keys are ignored (MUST)."""
    note = data if isinstance(data, Note) else parse_note(data)
    if log_key.sig_type != ED25519:
        raise LogError("checkpoint_signature", "the log key must be an Ed25519 note key")
    mine = [s for s in note.signatures if log_key.matches(s)]
    if not mine:
        raise LogError(
            "checkpoint_signature",
            "no signature by the log key",
            expected=log_key.vkey,
            got=[f"{s.name}+{s.key_id.hex()}" for s in note.signatures],
        )
    if not all(note_signature_valid(log_key, note, s) for s in mine):
        raise LogError("checkpoint_signature", "the log key's signature does not verify")
    checkpoint = Checkpoint.parse(note.text)
    expected_origin = origin if origin is not None else log_key.name
    if checkpoint.origin != expected_origin:
        raise LogError(
            "log_origin",
            "checkpoint names another log",
            expected=expected_origin,
            got=checkpoint.origin,
        )
    cosigned = []
    for witness in witnesses:
        if witness.sig_type != COSIGNATURE_V1:
            raise LogError("witness_key", "a witness key must be a cosignature/v1 (0x04) vkey")
        lines = [s for s in note.signatures if witness.matches(s)]
        if not lines:
            continue
        if not all(note_signature_valid(witness, note, s) for s in lines):
            raise LogError(
                "cosignature", "a trusted witness's cosignature does not verify", got=witness.vkey
            )
        cosigned.append(witness.vkey)
    if len(set(cosigned)) < quorum:
        raise LogError(
            "witness_quorum",
            "too few trusted witnesses cosigned this checkpoint",
            expected=quorum,
            got=len(set(cosigned)),
        )
    return SignedCheckpoint(checkpoint, note, tuple(cosigned))
