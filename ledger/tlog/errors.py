"""Typed errors of the transparency log: each names the check that failed."""

from __future__ import annotations

from ledger.errors import LedgerError


class LogError(LedgerError):
    """A note, checkpoint, cosignature or proof failed a named check.

    ``code`` is the check's stable name (``note_format``, ``checkpoint_signature``,
    ``inclusion_proof``, ``consistency_proof``, ``cosignature``, ``witness_quorum``, ...), so a
    caller can branch on it and a report can print it.
    """

    code = "log_error"

    def __init__(
        self, check: str, message: str, *, expected: object = None, got: object = None
    ) -> None:
        self.code = check
        super().__init__(f"{check}: {message}", expected=expected, got=got)


class NoteFormatError(LogError):
    """The bytes are not a well-formed C2SP signed note / checkpoint / vkey."""

    def __init__(self, message: str, *, expected: object = None, got: object = None) -> None:
        super().__init__("note_format", message, expected=expected, got=got)


class ProofError(LogError):
    """An RFC 9162 inclusion or consistency proof does not verify."""
