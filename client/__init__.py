"""qledger's light Python client: sign, submit (one or in batches), receipts, verification
and credit, for an MES or integration job. Imports ``ledger`` and nothing else of qledger's,
and needs none of the service's dependencies (``pip install qledger``; no FastAPI, SQLAlchemy,
torch, Flower or XGBoost).

Public surface (docs/integrating-mes.md):
- :class:`QledgerClient`, :class:`ServiceError` and the answer types ``Accepted``,
  ``BatchResult``, ``BatchItem`` (``client.service``)
- :class:`Draft` and :func:`sign_draft` (``client.drafts``)
- :func:`load_signer` (a V3 keystore or a plain dev key file)
- :func:`verify_receipt` (against the chain) and :func:`verify_receipt_offline` (against
  pinned log and witness keys), re-exported from ``ledger``
- ``client.importer``: CSV/xlsx rows to signed records with a mapping file (``qledger import``)
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from client.drafts import Draft, sign_draft
    from client.errors import ServiceError
    from client.service import Accepted, BatchItem, BatchResult, QledgerClient
    from ledger.keys import Signer
    from ledger.records import Domain, SignedRecord
    from ledger.tlog.verify import verify_receipt_offline
    from ledger.verify import verify_receipt

# Where each public name lives. Resolved on first use (PEP 562), so importing ``client`` (or
# ``client.drafts`` for its field list) costs nothing: eth-account, web3 and httpx load only
# when a signer, a verifier or a session is used (the CLI's --help stays fast).
_LAZY = {
    "Draft": "client.drafts",
    "sign_draft": "client.drafts",
    "Accepted": "client.service",
    "BatchItem": "client.service",
    "BatchResult": "client.service",
    "QledgerClient": "client.service",
    "ServiceError": "client.errors",
    "Signer": "ledger.keys",
    "Domain": "ledger.records",
    "SignedRecord": "ledger.records",
    "verify_receipt_offline": "ledger.tlog.verify",
    "verify_receipt": "ledger.verify",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'client' has no attribute {name!r}")
    return getattr(import_module(module), name)


def load_signer(path: Path | str, passphrase: str = "") -> Signer:
    """The signer of a key file: an Ethereum V3 keystore (``passphrase``) or a plain dev key.
    Raises :class:`ledger.errors.KeyFileError`, whose message never holds the key."""
    from ledger.keys import load_key

    return load_key(Path(path), passphrase)


__all__ = [
    "Accepted",
    "BatchItem",
    "BatchResult",
    "Domain",
    "Draft",
    "QledgerClient",
    "ServiceError",
    "SignedRecord",
    "Signer",
    "load_signer",
    "sign_draft",
    "verify_receipt",
    "verify_receipt_offline",
]
