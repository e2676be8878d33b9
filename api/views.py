"""Rows -> wire JSON (signed envelopes and receipts), shared by routes, CLI and demo."""

from __future__ import annotations

from typing import Any

from api.store.models import Batch, Record


def envelope(row: Record) -> dict[str, Any]:
    """The signed record exactly as submitted (it re-validates and re-verifies)."""
    return {
        "domain": {
            "name": "QualityLedger",
            "version": "1",
            "chainId": row.chain_id,
            "verifyingContract": row.contract,
        },
        "record": {
            "signer": row.signer,
            "subject": row.subject,
            "kind": row.kind,
            "partNumber": row.part_number,
            "lotId": row.lot_id,
            "eventTime": row.event_time,
            "signedAt": row.signed_at,
            "quantity": row.quantity,
            "defects": row.defects,
            "nonce": row.nonce,
            "salt": row.salt,
            "payloadHash": row.payload_hash,
        },
        "payload": row.payload,
        "signature": row.signature,
    }


def receipt(row: Record, batch: Batch, proof: list[str]) -> dict[str, Any]:
    """A confirmed record's receipt; ``proof`` is its path in the batch tree, derived from the
    stored batch (api.batch_trees.record_proof)."""
    assert batch.status == "confirmed" and batch.chain_batch_id is not None
    return {
        "version": 1,
        "record": envelope(row),
        "structHash": row.struct_hash,
        "proof": proof,
        "root": batch.root,
        "batchId": batch.chain_batch_id,
        "leafCount": batch.leaf_count,
        "chainId": row.chain_id,
        "contract": row.contract,
        "transactionHash": batch.tx_hash,
        "blockNumber": batch.block_number,
        "blockTimestamp": batch.block_timestamp,
        "blockHash": batch.block_hash,
    }


def record_summary(row: Record, batch: Batch | None) -> dict[str, Any]:
    status = "pending"
    if batch is not None and batch.status == "confirmed":
        status = "anchored"
    return {
        "structHash": row.struct_hash,
        "kind": row.kind,
        "subject": row.subject,
        "signer": row.signer,
        "signerRole": row.signer_role,
        "partNumber": row.part_number,
        "lotId": row.lot_id,
        "eventTime": row.event_time,
        "signedAt": row.signed_at,
        "quantity": row.quantity,
        "defects": row.defects,
        "status": status,
        "batchId": batch.chain_batch_id if batch is not None else None,
        "receivedAt": row.received_at.isoformat() if row.received_at else None,
    }
