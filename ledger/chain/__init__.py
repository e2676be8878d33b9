"""The chain client: deploy, administer and read the qledger contracts over any EVM JSON-RPC node.

``ChainClient.connect(url)`` talks to a node (anvil locally, Besu/QBFT in production);
``ChainClient.in_process()`` runs an in-process py-evm chain (eth-tester) for unit tests. Both
expose the same methods. Every failure surfaces as a :mod:`ledger.errors` exception:

* :class:`~ledger.errors.ChainUnavailable` when the endpoint does not answer (callers retry with
  backoff),
* :class:`ContractReverted` (a :class:`~ledger.errors.TransactionReverted`) when a call or
  transaction reverts, with the decoded custom error name and arguments,
* :class:`~ledger.errors.ChainError` for everything else (wrong chain, missing contract, ...).

Modules: ``transport`` (connection, sending, error translation), ``contracts`` (one wrapper per
contract), ``devchain`` (controls only development chains have), ``local`` (the embedded anvil
node), ``types`` (ids and result types), ``client`` (``ChainClient``, all of them together).
"""

from ledger.chain.client import ChainClient
from ledger.chain.transport import ContractReverted, decode_revert, with_retries
from ledger.chain.types import (
    CONTRACTS,
    PARTICIPANT_ROLES,
    ROLE_EVENT_NAMES,
    ROLE_IDS,
    ROLES_BY_ID,
    UINT32_MAX,
    AnchorInfo,
    AnchorResult,
    Checkpoint,
    CommitResult,
    Deployment,
    RoleEvent,
    role_id,
    run_id,
    topic_id,
)

__all__ = [
    "CONTRACTS",
    "PARTICIPANT_ROLES",
    "ROLES_BY_ID",
    "ROLE_EVENT_NAMES",
    "ROLE_IDS",
    "UINT32_MAX",
    "AnchorInfo",
    "AnchorResult",
    "ChainClient",
    "Checkpoint",
    "CommitResult",
    "ContractReverted",
    "Deployment",
    "RoleEvent",
    "decode_revert",
    "role_id",
    "run_id",
    "topic_id",
    "with_retries",
]
