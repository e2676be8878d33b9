"""Receipts: everything an auditor needs, offline, to verify one record against the chain."""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ledger.eip712 import record_struct_hash
from ledger.merkle import StandardMerkleTree
from ledger.records import HEX32_PATTERN, Hex32, SignedRecord
from ledger.tlog.entries import LogProof

RECEIPT_VERSION: Final = 1


class Receipt(BaseModel):
    """Proof that a signed record is a leaf of a batch anchored by one ledger contract."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = RECEIPT_VERSION
    record: SignedRecord
    structHash: Hex32
    proof: list[Annotated[str, Field(pattern=HEX32_PATTERN)]]
    root: Hex32
    batchId: Annotated[int, Field(gt=0)]
    leafCount: Annotated[int, Field(gt=0)]
    chainId: Annotated[int, Field(gt=0)]
    contract: Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{40}$")]
    transactionHash: Hex32
    blockNumber: Annotated[int, Field(ge=0)]
    blockTimestamp: Annotated[int, Field(ge=0)]
    # Hash of the anchoring block, so a verifier with RPC can tell that block is still on the
    # canonical chain. Absent from receipts issued before it existed (verified without it).
    blockHash: Hex32 | None = None
    # The record's transparency-log entry, its inclusion proof and the (cosigned) checkpoint
    # it leads to: what lets the receipt verify with no RPC (ledger.tlog.verify).
    log: LogProof | None = None

    @field_validator("structHash", "root", "transactionHash")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()

    @field_validator("blockHash")
    @classmethod
    def _lower_optional(cls, value: str | None) -> str | None:
        return value.lower() if value is not None else None

    @field_validator("proof")
    @classmethod
    def _lower_all(cls, value: list[str]) -> list[str]:
        return [v.lower() for v in value]


def build_receipt(
    signed: SignedRecord,
    tree: StandardMerkleTree,
    *,
    batch_id: int,
    transaction_hash: str,
    block_number: int,
    block_timestamp: int,
    block_hash: str | None = None,
) -> Receipt:
    """The receipt of one leaf of an anchored tree."""
    struct_hash = record_struct_hash(signed.record)
    return Receipt(
        record=signed,
        structHash="0x" + struct_hash.hex(),
        proof=["0x" + p.hex() for p in tree.proof(struct_hash)],
        root="0x" + tree.root.hex(),
        batchId=batch_id,
        leafCount=len(tree),
        chainId=signed.domain.chainId,
        contract=signed.domain.verifyingContract,
        transactionHash=transaction_hash,
        blockNumber=block_number,
        blockTimestamp=block_timestamp,
        blockHash=block_hash,
    )
