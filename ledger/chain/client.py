"""``ChainClient``: one object that deploys, administers and reads the qledger contracts."""

from __future__ import annotations

from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from web3 import Web3

from ledger.chain.contracts import CommitmentLogCalls, ModelRegistryCalls, QualityLedgerCalls
from ledger.chain.devchain import DevChainControls
from ledger.chain.transport import http_web3, local_account
from ledger.chain.types import Deployment
from ledger.records import Role


class ChainClient(QualityLedgerCalls, ModelRegistryCalls, CommitmentLogCalls, DevChainControls):
    """Deploys, administers and reads the qledger contracts on one chain, as one sender."""

    def __init__(
        self,
        w3: Web3,
        *,
        account: LocalAccount | None = None,
        sender: str | None = None,
        deployment: Deployment | None = None,
        allow_evm_mine: bool = False,
        tx_timeout: float = 120.0,
        poll_interval: float = 0.1,
    ) -> None:
        super().__init__(
            w3,
            account=account,
            sender=sender,
            allow_evm_mine=allow_evm_mine,
            tx_timeout=tx_timeout,
            poll_interval=poll_interval,
        )
        if deployment is not None:
            self.attach(deployment)

    @classmethod
    def connect(
        cls,
        rpc_url: str,
        *,
        private_key: str | None = None,
        deployment: Deployment | None = None,
        timeout: float = 10,
        allow_evm_mine: bool = False,
    ) -> ChainClient:
        """Connect to a JSON-RPC endpoint (http/https).

        With ``private_key`` transactions are signed locally; otherwise the node's first unlocked
        account sends them. ``allow_evm_mine`` lets :meth:`wait_for_confirmations` mine empty
        blocks on dev chains that only mine on demand (anvil without ``--block-time``).
        """
        w3 = http_web3(rpc_url, timeout)
        return cls(
            w3,
            account=local_account(private_key) if private_key is not None else None,
            deployment=deployment,
            allow_evm_mine=allow_evm_mine,
            tx_timeout=max(float(timeout) * 6, 60.0),
        )

    @classmethod
    def connect_ledger(cls, rpc_url: str, ledger: str, *, timeout: float = 10) -> ChainClient:
        """A client attached to one QualityLedger only, e.g. the contract named in a receipt.

        What a verifier needs (roles, anchors, proofs) without a deployment file; it sends
        nothing unless the node has unlocked accounts.
        """
        client = cls.connect(rpc_url, timeout=timeout)
        client.attach_ledger(ledger)
        return client

    @classmethod
    def in_process(cls) -> ChainClient:
        """A fresh in-process py-evm chain (eth-tester) with funded, unlocked accounts."""
        from web3 import EthereumTesterProvider

        w3 = Web3(EthereumTesterProvider())
        return cls(w3, allow_evm_mine=True, poll_interval=0.01)

    def with_sender(
        self, sender: str | None = None, *, private_key: str | None = None
    ) -> ChainClient:
        """A client on the same connection and deployment that sends as another account.

        Give ``private_key`` to sign locally, or ``sender`` for an unlocked dev account.
        """
        if private_key is None and sender is None:
            raise ValueError("give sender or private_key")
        client = ChainClient(
            self.w3,
            account=local_account(private_key) if private_key is not None else None,
            sender=sender,
            allow_evm_mine=self.allow_evm_mine,
            tx_timeout=self.tx_timeout,
            poll_interval=self.poll_interval,
        )
        client._contracts = self._contracts
        return client

    def deploy(self, admin: str | None = None) -> Deployment:
        """Deploy QualityLedger, ModelRegistry and CommitmentLog and attach to them.

        ``admin`` (default: the sender) receives ADMIN_ROLE. When the sender is the admin it also
        grants itself ANCHORER_ROLE, so the same client can anchor right away.
        """
        admin_address = to_checksum_address(admin or self.sender)
        ledger_address, ledger_receipt = self._deploy_one("QualityLedger", admin_address)
        registry_address, _ = self._deploy_one("ModelRegistry", ledger_address)
        log_address, _ = self._deploy_one("CommitmentLog", ledger_address)
        deployment = Deployment(
            chain_id=self.chain_id,
            ledger=ledger_address,
            model_registry=registry_address,
            commitment_log=log_address,
            deployed_block=int(ledger_receipt["blockNumber"]),
        )
        self.attach(deployment)
        if admin_address == self.sender:
            self.grant_role(Role.ANCHORER, self.sender)
        return deployment
