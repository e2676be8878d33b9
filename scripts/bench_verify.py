"""Bulk receipt verification throughput (``qledger verify-receipts``'s work), one core, against
raw libsecp256k1 recovery measured in the same run.

    PYTHONPATH=. .venv/bin/python scripts/bench_verify.py [--receipts 10000] [--batch 1000]

Receipts are made for real: records signed by 16 registered suppliers, anchored in batches
on anvil (127.0.0.1, ``--prune-history``), receipts built as the anchorer builds them and
written to a JSONL export. The timed part reads that export and runs every check of
``qledger verify --rpc`` on each receipt through :class:`ledger.bulk_verify.CachingChain`
(chain reads once per batch root and signer; the count is printed). For contrast it also
times the single-receipt verifier, which asks the chain every question for every receipt, on
a sample, and it breaks one receipt's time down.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from coincurve import PublicKey

from ledger.bulk_verify import CachingChain, read_receipts, verify_all
from ledger.chain import ChainClient
from ledger.chain.local import dev_private_keys, start_anvil, stop_anvil
from ledger.eip712 import record_struct_hash
from ledger.keys import Signer
from ledger.merkle import StandardMerkleTree, leaf_hash, process_proof
from ledger.receipts import Receipt, build_receipt
from ledger.records import Domain, Role
from ledger.signing import check_signature, sign_record
from ledger.trust import BlockAnchor, TrustRoot
from ledger.verify import VerificationReport, verify_receipt

SUPPLIERS = 16
PAYLOAD = {
    "disposition": "non_conformant",
    "inspectionType": "incoming",
    "lotSize": 1000,
    "sampleSize": 50,
    "defectList": [{"code": "FLASH", "count": 1, "severity": "minor"}],
}


def make_receipts(
    chain: ChainClient, count: int, batch: int
) -> tuple[TrustRoot, list[dict[str, Any]]]:
    """``count`` receipts of real records in anchored batches of ``batch``."""
    deployment = chain.deploy()
    domain = Domain(chainId=deployment.chain_id, verifyingContract=deployment.ledger)
    signers = [Signer.generate() for _ in range(SUPPLIERS)]
    for n, signer in enumerate(signers):
        chain.register_participant(signer.address, Role.SUPPLIER, f"SUP-{n:02d}")
    now = chain.block_timestamp()
    receipts: list[dict[str, Any]] = []
    for start in range(0, count, batch):
        records = [
            sign_record(
                signers[i % SUPPLIERS],
                domain,
                subject=f"SUP-{i % SUPPLIERS:02d}",
                kind="inspection",
                part_number="P-100",
                lot_id=f"LOT-{i}",
                event_time=now - 3600,
                quantity=50,
                defects=1,
                nonce=i,
                payload=PAYLOAD,
                signed_at=now,
            )
            for i in range(start, min(start + batch, count))
        ]
        tree = StandardMerkleTree.of([record_struct_hash(r.record) for r in records])
        result = chain.anchor_batch(tree.root, len(records))
        block_hash = chain.block_hash(result.block_number)
        receipts += [
            build_receipt(
                r,
                tree,
                batch_id=result.batch_id,
                transaction_hash=result.tx_hash,
                block_number=result.block_number,
                block_timestamp=result.timestamp,
                block_hash=block_hash,
            ).model_dump(mode="json")
            for r in records
        ]
    genesis = chain.block_hash(0)
    assert genesis is not None
    trust = TrustRoot(
        chain_id=deployment.chain_id, ledger=deployment.ledger, anchor=BlockAnchor(0, genesis)
    )
    return trust, receipts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--receipts", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--sample", type=int, default=200, help="receipts for the uncached path")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qledger-verify-") as tmp:
        anvil = start_anvil(Path(tmp) / "anvil")
        try:
            chain = ChainClient.connect(anvil.rpc_url, private_key=dev_private_keys()[0])
            run(args, chain, anvil.rpc_url, Path(tmp))
        finally:
            stop_anvil(Path(tmp) / "anvil")


def run(args: argparse.Namespace, chain: ChainClient, rpc_url: str, tmp: Path) -> None:
    trust, receipts = make_receipts(chain, args.receipts, args.batch)
    # What the verifier uses: a read-only client on the pinned ledger, as `verify-receipts`.
    reader = ChainClient.connect_ledger(rpc_url, trust.ledger)

    raw = []
    for r in receipts:
        sig = bytes.fromhex(r["record"]["signature"][2:])
        raw.append((sig[:64] + bytes([sig[64] - 27]), os.urandom(32)))
    raw_rates = []
    for _ in range(3):
        t0 = time.perf_counter()
        for sig, digest in raw:
            PublicKey.from_signature_and_message(sig, digest, hasher=None)
        raw_rates.append(len(raw) / (time.perf_counter() - t0))
    raw_rate = max(raw_rates)

    export = tmp / "receipts.jsonl"
    export.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in receipts))

    def bulk(cached: CachingChain) -> float:
        def one(data: dict[str, Any]) -> VerificationReport:
            return verify_receipt(None, data, cached, trust)

        t0 = time.perf_counter()
        verdicts = list(verify_all(read_receipts(export), one))
        rate = len(verdicts) / (time.perf_counter() - t0)
        if len(verdicts) != len(receipts) or not all(v.ok for v in verdicts):
            raise SystemExit(f"a receipt failed: {next(v for v in verdicts if not v.ok)}")
        return rate

    cold, reads = [], 0
    for _ in range(3):
        cached = CachingChain(reader)
        cold.append(bulk(cached))
        reads = cached.calls
    warm = max(bulk(cached) for _ in range(3))  # chain facts already known: the CPU alone

    # Where the time goes, per receipt (best of 3 over all receipts).
    def per_receipt(fn: Any) -> float:
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            best = min(best, (time.perf_counter() - t0) / len(receipts))
        return best * 1e6

    parsed = [Receipt.model_validate(r) for r in receipts]
    lines = export.read_bytes().splitlines()
    read_us = per_receipt(lambda: [orjson.loads(line) for line in lines])
    parse_us = per_receipt(lambda: [Receipt.model_validate(r) for r in receipts])
    sig_us = per_receipt(lambda: [check_signature(p.record) for p in parsed])
    fold_us = per_receipt(
        lambda: [
            process_proof(
                leaf_hash(bytes.fromhex(p.structHash[2:])),
                [bytes.fromhex(h[2:]) for h in p.proof],
            )
            for p in parsed
        ]
    )
    total_us = 1e6 / warm

    sample = receipts[: args.sample]
    t0 = time.perf_counter()
    for receipt in sample:
        assert verify_receipt(None, receipt, reader, trust).ok
    single_rate = len(sample) / (time.perf_counter() - t0)

    batches = -(-args.receipts // args.batch)
    print(
        f"{args.receipts:,} receipts in {batches} batches of {args.batch:,}, "
        f"{SUPPLIERS} signers; anvil over HTTP; verifier on 1 core"
    )
    print(f"raw coincurve recover                          {raw_rate:>9,.0f} /s")
    print(
        f"bulk verify, JSONL, every check (cold cache)   {max(cold):>9,.0f} receipts/s   "
        f"{reads} RPC reads in all"
    )
    print(f"bulk verify, chain facts already read (CPU)    {warm:>9,.0f} receipts/s")
    print(
        f"single-receipt verify, RPC for each receipt    {single_rate:>9,.0f} receipts/s   "
        f"(sample of {len(sample)})"
    )
    print(f"per receipt (chain facts read): {total_us:.0f} us, of which")
    print(f"  raw recover alone                            {1e6 / raw_rate:>9.1f} us")
    print(f"  JSON line -> dict (orjson)                   {read_us:>9.1f} us")
    print(f"  Receipt + SignedRecord model (payloadHash)   {parse_us:>9.1f} us")
    print(f"  signature (struct hash, digest, recover)     {sig_us:>9.1f} us")
    print(f"  Merkle proof fold                            {fold_us:>9.1f} us")
    rest = total_us - read_us - parse_us - sig_us - fold_us
    print(f"  the rest (checks, their report lines)        {rest:>9.1f} us")
    print(f"bulk (cold) / raw recover                      {max(cold) / raw_rate:>9.1%}")
    print(f"goal >= 10,000 receipts/s per core: {'met' if max(cold) >= 10_000 else 'NOT met'}")


if __name__ == "__main__":
    main()
