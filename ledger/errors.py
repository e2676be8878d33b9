"""Typed errors raised by the ledger core.

Every error says what was expected and what was found, so that a caller (the API, the CLI, an
auditor's script) can show it verbatim and a machine can branch on ``code``.
"""

from __future__ import annotations


class LedgerError(Exception):
    """Base class of every error the ledger core raises on purpose."""

    code: str = "ledger_error"

    def __init__(self, message: str, *, expected: object = None, got: object = None) -> None:
        self.expected = expected
        self.got = got
        detail = message
        if expected is not None or got is not None:
            detail = f"{message} (expected {expected!r}, got {got!r})"
        super().__init__(detail)


class InvalidRecord(LedgerError):
    """A record or its payload does not satisfy the schema."""

    code = "invalid_record"


class InvalidSignature(LedgerError):
    """A signature is malformed or does not recover to the claimed signer."""

    code = "invalid_signature"


class KindNotAllowed(LedgerError):
    """The signer's role may not sign this kind of evidence."""

    code = "kind_not_allowed"


class WrongDomain(LedgerError):
    """The EIP-712 domain names another chain or another ledger contract."""

    code = "wrong_domain"


class MerkleError(LedgerError):
    """A Merkle tree was asked for something it cannot give (empty tree, unknown leaf)."""

    code = "merkle_error"


class ChainError(LedgerError):
    """The chain refused, reverted or could not be reached."""

    code = "chain_error"


class ChainUnavailable(ChainError):
    """The JSON-RPC endpoint did not answer."""

    code = "chain_unavailable"


class TransactionReverted(ChainError):
    """A transaction was mined but reverted."""

    code = "transaction_reverted"


class KeyFileError(LedgerError):
    """A key file is missing, unreadable or its passphrase is wrong."""

    code = "key_file_error"


class LedgerContractMissing(ChainUnavailable):
    """The chain answers but the ledger contract has no code there any more (a reset or a
    fresh chain under the same URL): nothing can be anchored or verified until the chain
    is restored. Not a client error, and not one that retrying soon will fix."""

    code = "ledger_contract_missing"


class TrustRootError(LedgerError):
    """A trust file is missing, malformed, or names something other than what it pins."""

    code = "invalid_trust_root"
