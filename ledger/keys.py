"""Keys, signing and recovery on secp256k1 through libsecp256k1 (coincurve).

eth-account's recovery goes through eth-keys, several times slower per call; recovery is the hot
path of intake, so we call coincurve directly and keep eth-account only for key files.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from coincurve import PrivateKey, PublicKey
from eth_account import Account
from eth_utils import to_checksum_address

from ledger._hash import keccak
from ledger.errors import InvalidSignature, KeyFileError

# secp256k1 group order; EIP-2 requires s <= n/2 so that a signature has one valid form.
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
SECP256K1_HALF_N = SECP256K1_N // 2


def address_of_public_key(public_key: PublicKey) -> str:
    return to_checksum_address(keccak(public_key.format(compressed=False)[1:])[-20:])


@dataclass(frozen=True)
class Signer:
    """A private key able to sign record digests.

    Its repr and str name only the address: a signer sits in local variables that tracebacks,
    debuggers and log records print, and the key must never reach any of them.
    """

    private_key: bytes = field(repr=False)

    def __repr__(self) -> str:
        return f"Signer(address={self.address}, private_key=<redacted>)"

    __str__ = __repr__

    @classmethod
    def generate(cls) -> Signer:
        return cls(os.urandom(32))

    @classmethod
    def from_hex(cls, hex_key: str) -> Signer:
        raw = bytes.fromhex(hex_key.removeprefix("0x"))
        if len(raw) != 32:
            raise KeyFileError("private key must be 32 bytes", expected=32, got=len(raw))
        return cls(raw)

    @property
    def address(self) -> str:
        return address_of_public_key(PrivateKey(self.private_key).public_key)

    def sign_digest(self, digest: bytes) -> str:
        """65-byte r||s||v signature (v = 27/28) as 0x-hex, the form eth_signTypedData returns."""
        sig = PrivateKey(self.private_key).sign_recoverable(digest, hasher=None)
        return "0x" + sig[:64].hex() + f"{sig[64] + 27:02x}"


def personal_sign_digest(message: str) -> bytes:
    """The EIP-191 ``personal_sign`` digest of ``message`` (what a wallet signs to log in)."""
    data = message.encode()
    return keccak(b"\x19Ethereum Signed Message:\n" + str(len(data)).encode() + data)


def recover_digest(digest: bytes, signature: str) -> str:
    """Return the checksummed address that signed ``digest``; raise InvalidSignature otherwise."""
    return to_checksum_address(recover_digest_raw(digest, signature))


def recover_digest_raw(digest: bytes, signature: str) -> bytes:
    """Like :func:`recover_digest` but returns the 20 raw address bytes (no EIP-55 formatting,
    which costs as much as a keccak and is not needed to compare addresses)."""
    try:
        raw = bytes.fromhex(signature.removeprefix("0x"))
    except ValueError as exc:
        raise InvalidSignature("signature is not hex") from exc
    if len(raw) != 65:
        raise InvalidSignature("signature must be 65 bytes (r, s, v)", expected=65, got=len(raw))
    v = raw[64]
    if v in (27, 28):
        v -= 27
    if v not in (0, 1):
        raise InvalidSignature("signature v must be 27 or 28", expected="27|28", got=raw[64])
    s = int.from_bytes(raw[32:64], "big")
    if not 0 < s <= SECP256K1_HALF_N:
        raise InvalidSignature("signature s is not in the lower half order (EIP-2)")
    try:
        public_key = PublicKey.from_signature_and_message(
            raw[:64] + bytes([v]), digest, hasher=None
        )
    except ValueError as exc:  # coincurve raises ValueError for unrecoverable signatures
        raise InvalidSignature("signature does not recover to any key") from exc
    return keccak(public_key.format(compressed=False)[1:])[-20:]


def save_key(signer: Signer, path: Path, passphrase: str) -> None:
    """Write an Ethereum V3 keystore (scrypt), readable by geth, ethers and eth-account."""
    keystore = Account.encrypt(signer.private_key, passphrase)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(keystore))
    tmp.chmod(0o600)
    tmp.replace(path)


def load_key(path: Path, passphrase: str) -> Signer:
    try:
        keystore = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc}") from exc
    if not isinstance(keystore, dict):
        raise KeyFileError(f"key file {path} is not a JSON object", expected="object")
    if "crypto" not in keystore and "private_key" in keystore:
        # A plain dev key (anvil/demo accounts). The error names the problem, never the value.
        hex_key = keystore["private_key"]
        try:
            return Signer.from_hex(hex_key if isinstance(hex_key, str) else "")
        except ValueError:
            raise KeyFileError(f"{path}: private_key is not 32 bytes of hex") from None
    try:
        return Signer(bytes(Account.decrypt(keystore, passphrase)))
    except ValueError as exc:
        raise KeyFileError(f"cannot decrypt {path}: wrong passphrase or corrupt file") from exc
