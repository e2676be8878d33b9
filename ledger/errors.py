"""Typed errors raised by the ledger core.

Every error says what was expected and what was found, so that a caller (the API, the CLI, an
auditor's script) can show it verbatim and a machine can branch on ``code``.

Each class also carries what an edge needs to answer it, so no edge keeps a table of codes:
``http_status`` (a plain int: this package imports nothing of HTTP) and, for failures that pass
with time, ``retry_after_seconds``. The HTTP service turns ``code`` into its RFC 9457 problem
type URI. Anything a client can cause is a 4xx; 5xx only for what the client cannot fix.
"""

from __future__ import annotations


class LedgerError(Exception):
    """Base class of every error the ledger core raises on purpose."""

    code: str = "ledger_error"
    http_status: int = 400
    # Seconds after which a retry may succeed (an HTTP edge sends it as Retry-After); None when
    # retrying the same request cannot help.
    retry_after_seconds: int | None = None
    # Whether the message may be shown to a remote client. Chain errors quote the RPC endpoint,
    # whose URL can carry a provider's API key: an edge shows their class's summary instead.
    message_is_public: bool = True

    def __init__(self, message: str, *, expected: object = None, got: object = None) -> None:
        self.expected = expected
        self.got = got
        self.message = message
        detail = message
        if expected is not None or got is not None:
            detail = f"{message} (expected {expected!r}, got {got!r})"
        super().__init__(detail)


class InvalidRecord(LedgerError):
    """A record or its payload does not satisfy the schema."""

    code = "invalid_record"
    http_status = 422


class InvalidSignature(LedgerError):
    """A signature is malformed or does not recover to the claimed signer."""

    code = "invalid_signature"
    http_status = 401


class KindNotAllowed(LedgerError):
    """The signer's role may not sign this kind of evidence."""

    code = "kind_not_allowed"
    http_status = 403


class WrongDomain(LedgerError):
    """The EIP-712 domain names another chain or another ledger contract."""

    code = "wrong_domain"
    http_status = 422


class MerkleError(LedgerError):
    """A Merkle tree was asked for something it cannot give (empty tree, unknown leaf)."""

    code = "merkle_error"
    http_status = 422


class ChainError(LedgerError):
    """The chain refused, reverted or could not be reached.

    502: the service's upstream (the EVM node) failed it; nothing the client sent is at fault.
    """

    code = "chain_error"
    http_status = 502
    message_is_public = False


class ChainUnavailable(ChainError):
    """The JSON-RPC endpoint did not answer."""

    code = "chain_unavailable"
    http_status = 503
    # The RPC timeout is 10 s and a restarted anvil answers within a few seconds; asking again
    # sooner than 5 s mostly meets the same outage.
    retry_after_seconds = 5


class TransactionReverted(ChainError):
    """A transaction was mined but reverted."""

    code = "transaction_reverted"
    message_is_public = True  # the action and the decoded revert reason, no endpoint


class KeyFileError(LedgerError):
    """A key file is missing, unreadable or its passphrase is wrong."""

    code = "key_file_error"


class LedgerContractMissing(ChainUnavailable):
    """The chain answers but the ledger contract has no code there any more (a reset or a
    fresh chain under the same URL): nothing can be anchored or verified until the chain
    is restored. Not a client error, and not one that retrying soon will fix."""

    code = "ledger_contract_missing"
    # What to do is the point of this error, and its messages name the contract and chain id,
    # never the RPC endpoint.
    message_is_public = True
    retry_after_seconds = 60  # an operator restores the chain: retrying sooner cannot help


class TrustRootError(LedgerError):
    """A trust file is missing, malformed, or names something other than what it pins."""

    code = "invalid_trust_root"
