"""Bulk receipt verification throughput (``qledger verify-receipts``'s work), one core, against
raw libsecp256k1 recovery measured in the same run.

    PYTHONPATH=. .venv/bin/python scripts/bench_verify.py [--receipts 10000] [--batch 1000]

Receipts are made for real: records signed by 16 registered suppliers (every payload
different, so nothing about a payload can be reused from another receipt), anchored in batches
on anvil (127.0.0.1, ``--prune-history``), receipts built as the anchorer builds them and
written to a JSONL export. The timed part is the command's work on that export, in this
process and on one thread: read each line, verify it with every check of ``qledger verify
--rpc`` (``ledger.bulk_verify``: the fast path, the full verifier for what it does not vouch
for), format its output line. "Cold" starts with an empty chain cache, so it includes the
chain reads (one per batch root and signer; the count is printed). Rates are given by wall
time and by this process's CPU time (what "per core" means on a shared machine); raw
recovery is timed the same way, interleaved with the runs, and the ratio is per-core CPU
time against per-core CPU time.

For contrast it times the full verifier on every receipt (the bulk path before the fast
path existed), the single-receipt verifier on a sample (every question asked of the chain),
breaks one receipt's time down step by step, and finally runs ``qledger verify-receipts`` as
a user would (a new process, the export and a trust file) and prints its summary and time.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import orjson
from coincurve import PublicKey

from ledger._bulk_fast import (
    ChainPath,
    FastRecordPath,
    _Counted,
    _plain,
    _plain_json,
    _Recover,
)
from ledger._hash import keccak
from ledger.bulk_verify import (
    CachingChain,
    FastChainVerifier,
    FastLogVerifier,
    Verdict,
    read_receipts,
    remember_chain_id,
    verify_all,
    write_verdicts,
)
from ledger.canonical import canonical_json
from ledger.chain import ChainClient
from ledger.chain._raw_reads import RawLedgerReads
from ledger.chain.local import dev_private_keys, start_anvil, stop_anvil
from ledger.eip712 import record_struct_hash
from ledger.keys import Signer
from ledger.merkle import StandardMerkleTree
from ledger.receipts import build_receipt
from ledger.records import Domain, QualityRecord, RecordKind, Role, _check_counts, parse_payload
from ledger.signing import sign_record
from ledger.tlog import (
    COSIGNATURE_V1,
    Checkpoint,
    LogTree,
    leaf_hash,
    ledger_origin,
    record_entry,
    sign_checkpoint,
)
from ledger.tlog import Signer as NoteSigner
from ledger.tlog.verify import CheckpointCache, verify_receipt_offline
from ledger.trust import BlockAnchor, TrustRoot
from ledger.verify import VerificationReport, verify_receipt

SUPPLIERS = 16
ROOT = Path(__file__).resolve().parent.parent


def payload(i: int) -> dict[str, Any]:
    """An inspection payload of its own per record: sample and lot sizes, defect codes and
    counts and the measured values differ from record to record."""
    defects = i % 3
    return {
        "disposition": "non_conformant" if defects else "conformant",
        "inspectionType": "incoming",
        "lotSize": 500 + i % 1000,
        "sampleSize": 20 + i % 80,
        "defectList": [{"code": f"D{i % 7}", "count": defects, "severity": "minor"}]
        if defects
        else [],
        "sensorReport": [
            {
                "type": "bore_diameter",
                "uom": "MMT",
                "lsl": 9.95,
                "usl": 10.05,
                "values": [10.001 + (i % 97) / 10_000, 9.993 + (i % 89) / 10_000],
            }
        ],
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
        records = []
        for i in range(start, min(start + batch, count)):
            detail = payload(i)
            records.append(
                sign_record(
                    signers[i % SUPPLIERS],
                    domain,
                    subject=f"SUP-{i % SUPPLIERS:02d}",
                    kind="inspection",
                    part_number=f"P-{100 + i % 5}",
                    lot_id=f"LOT-{i}",
                    event_time=now - 3600 - i % 600,
                    quantity=detail["sampleSize"],
                    defects=sum(d["count"] for d in detail["defectList"]),
                    nonce=i,
                    payload=detail,
                    signed_at=now,
                )
            )
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


class Clock:
    """Wall and CPU (this process) seconds of a block of work."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def __enter__(self) -> Clock:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu


class TimedReader:
    """The chain reader, with the wall time its answers took (RPC round trips to anvil)."""

    def __init__(self, inner: ChainClient | RawLedgerReads) -> None:
        self._inner = inner
        self.seconds = self.cpu = 0.0

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if not callable(value):
            return value

        def timed(*args: Any, **kwargs: Any) -> Any:
            with Clock() as clock:
                result = value(*args, **kwargs)
            self.seconds += clock.wall
            self.cpu += clock.cpu
            return result

        return timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--receipts", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--sample", type=int, default=200, help="receipts for the uncached path")
    parser.add_argument("--runs", type=int, default=5, help="timed runs (best is reported)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qledger-verify-") as tmp:
        anvil = start_anvil(Path(tmp) / "anvil")
        try:
            chain = ChainClient.connect(anvil.rpc_url, private_key=dev_private_keys()[0])
            run(args, chain, anvil.rpc_url, Path(tmp))
        finally:
            stop_anvil(Path(tmp) / "anvil")


def run(args: argparse.Namespace, chain: ChainClient, rpc_url: str, tmp: Path) -> None:
    t0 = time.perf_counter()
    trust, receipts = make_receipts(chain, args.receipts, args.batch)
    made = time.perf_counter() - t0
    n = len(receipts)
    export = tmp / "receipts.jsonl"
    export.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in receipts))
    # What the command uses: a read-only client on the pinned ledger (cli.records) to connect,
    # and lean JSON-RPC reads of the facts (ledger.chain._raw_reads).
    client = ChainClient.connect_ledger(rpc_url, trust.ledger)
    reader = RawLedgerReads(rpc_url, client.ledger_address)
    remember_chain_id(client)  # the web3 reader, timed once for contrast

    raw = []
    for r in receipts:
        sig = bytes.fromhex(r["record"]["signature"][2:])
        raw.append((sig[:64] + bytes([sig[64] - 27]), os.urandom(32)))

    def raw_recover() -> Clock:
        with Clock() as clock:
            for sig, digest in raw:
                PublicKey.from_signature_and_message(sig, digest, hasher=None)
        return clock

    def command(cached: CachingChain, *, fast: bool = True) -> Clock:
        """The command's work: read, verify, print (into memory)."""

        def one(data: dict[str, Any]) -> VerificationReport:
            return verify_receipt(None, data, cached, trust)

        out = io.StringIO()
        path = FastChainVerifier(cached, trust) if fast else None
        with Clock() as clock:
            total, failed = write_verdicts(verify_all(read_receipts(export), one, path), out)
        if total != n or failed:
            raise SystemExit(f"{failed} of {total} receipts failed: {out.getvalue()[:300]}")
        return clock

    raws, colds, warms, rpc_seconds, rpc_cpu, reads, requests_sent = [], [], [], [], [], 0, 0
    for _ in range(args.runs):  # interleaved, so that both see the same machine
        raws.append(raw_recover())
        timed = TimedReader(RawLedgerReads(rpc_url, client.ledger_address))
        cached = CachingChain(cast(ChainClient, timed))
        colds.append(command(cached))
        rpc_seconds.append(timed.seconds)
        rpc_cpu.append(timed.cpu)
        reads, requests_sent = cached.calls, timed.requests_sent
        warms.append(command(cached))  # chain facts already read: the CPU alone
    raw_rate = n / min(c.cpu for c in raws)
    raw_wall = n / min(c.wall for c in raws)
    cold = min(colds, key=lambda c: c.cpu)
    cold_rate, cold_wall = n / cold.cpu, n / min(c.wall for c in colds)
    warm_rate = n / min(c.cpu for c in warms)
    full = command(CachingChain(reader), fast=False)
    full_rate = n / full.cpu
    web3_timed = TimedReader(client)
    web3_cold = command(CachingChain(cast(ChainClient, web3_timed)))
    web3_rate = n / web3_cold.cpu

    sample = receipts[: args.sample]
    with Clock() as single:
        for receipt in sample:
            assert verify_receipt(None, receipt, client, trust).ok
    single_rate = len(sample) / single.wall

    steps = breakdown(export, receipts, trust, reader)
    batches = -(-n // args.batch)
    print(
        f"{n:,} receipts in {batches} batches of {args.batch:,}, {SUPPLIERS} signers, every "
        f"payload different (made in {made:.0f} s); anvil over HTTP; verifier on 1 thread; "
        f"best of {args.runs}"
    )
    print(f"load average before/after: {LOAD_BEFORE} / {load()}")
    print("                                          per core (CPU time)    wall clock")
    print(f"raw coincurve recover                     {raw_rate:>9,.0f} /s   {raw_wall:>11,.0f} /s")
    print(
        f"verify-receipts' work, cold cache          {cold_rate:>9,.0f} /s   {cold_wall:>11,.0f} /s"
        f"   {reads} RPC reads in {requests_sent} HTTP requests: "
        f"{min(rpc_seconds) * 1e3:.0f} ms wall, {min(rpc_cpu) * 1e3:.0f} ms CPU"
    )
    print(
        f"  the same, facts read through web3        {web3_rate:>8,.0f} /s"
        f"                  (before; one run) reads: {web3_timed.seconds * 1e3:.0f} ms wall, "
        f"{web3_timed.cpu * 1e3:.0f} ms CPU"
    )
    print(f"  chain facts already read (CPU alone)    {warm_rate:>9,.0f} /s")
    print(f"  full verifier for every receipt (before) {full_rate:>8,.0f} /s")
    print(
        f"single-receipt verify, RPC per question   {single_rate:>9,.0f} /s (wall)   "
        f"(sample of {len(sample)})"
    )
    print(f"per receipt, chain facts read: {1e6 / warm_rate:.1f} us CPU; each step timed alone:")
    for name, micros in steps:
        print(f"  {name:<40} {micros:>7.1f} us")
    print(f"cold, per core / raw recover, per core    {cold_rate / raw_rate:>9.1%}")
    print(f"facts read, per core / raw, per core      {warm_rate / raw_rate:>9.1%}")
    print(f"cold, wall / raw recover, wall            {cold_wall / raw_wall:>9.1%}")
    verdict = "met" if cold_rate >= 10_000 else "NOT met"
    print(f"goal >= 10,000 receipts/s per core: {verdict} ({cold_rate:,.0f}/s)")
    offline(receipts, trust, tmp, args.runs, raw_recover)
    as_a_user(export, trust, rpc_url, tmp, n)


def offline(
    receipts: list[dict[str, Any]],
    trust: TrustRoot,
    tmp: Path,
    runs: int,
    raw_recover: Callable[[], Clock],
) -> None:
    """``verify-receipts`` with a log key and a witness instead of RPC: the same receipts
    with log proofs (one checkpoint per batch, signed and cosigned), nothing read from a
    chain; each distinct checkpoint's signatures are checked once."""
    origin = ledger_origin(trust.chain_id, trust.ledger)
    log_key = NoteSigner.generate(origin)
    witness = NoteSigner.generate("witness.example/w1", COSIGNATURE_V1)
    tree = LogTree()
    logged: list[dict[str, Any]] = []
    by_root: dict[str, list[dict[str, Any]]] = {}
    for r in receipts:
        by_root.setdefault(r["root"], []).append(r)
    for batch in by_root.values():
        start = len(tree)
        tree.extend([leaf_hash(record_entry(r["structHash"], r["root"])) for r in batch])
        size = len(tree)
        signed = sign_checkpoint(Checkpoint(origin, size, tree.root(size)), log_key)
        note = signed.with_signatures([witness.cosign(signed.text)]).encode()
        for i, r in enumerate(batch):
            proof = tree.inclusion_proof(start + i, size)
            logged.append(
                {
                    **r,
                    "log": {
                        "index": start + i,
                        "treeSize": size,
                        "inclusion": ["0x" + h.hex() for h in proof],
                        "checkpoint": note,
                    },
                }
            )
    export = tmp / "receipts-with-log.jsonl"
    export.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in logged))
    keys: dict[str, Any] = {
        "log_key": log_key.verifier,
        "witnesses": [witness.verifier],
        "quorum": 1,
        "trust": trust,
    }

    def command() -> Clock:
        checkpoints = CheckpointCache()

        def one(data: dict[str, Any]) -> VerificationReport:
            return verify_receipt_offline(None, data, checkpoints=checkpoints, **keys)

        fast = FastLogVerifier(checkpoints, **keys)
        with Clock() as clock:
            total, failed = write_verdicts(
                verify_all(read_receipts(export), one, fast), io.StringIO()
            )
        if total != len(logged) or failed:
            raise SystemExit(f"offline: {failed} of {total} receipts failed")
        return clock

    raws, colds = [], []
    for _ in range(runs):
        raws.append(raw_recover())
        colds.append(command())
    n = len(logged)
    raw_rate, rate = n / min(c.cpu for c in raws), n / min(c.cpu for c in colds)
    print(
        f"offline (log key + 1 witness, no RPC): {rate:,.0f} receipts/s per core "
        f"({n / min(c.wall for c in colds):,.0f}/s wall) = {rate / raw_rate:.1%} of raw recover "
        f"({raw_rate:,.0f}/s per core, same run); {len(by_root)} checkpoints"
    )


def breakdown(
    export: Path, receipts: list[dict[str, Any]], trust: TrustRoot, reader: RawLedgerReads
) -> list[tuple[str, float]]:
    """One receipt's CPU time, step by step, each step timed on its own over all receipts
    (best of 3): the same functions the fast path calls."""
    n = len(receipts)

    def per_receipt(fn: Callable[[], object]) -> float:
        best = float("inf")
        for _ in range(3):
            with Clock() as clock:
                fn()
            best = min(best, clock.cpu)
        return best / n * 1e6

    lines = export.read_bytes().splitlines()
    data = [orjson.loads(line) for line in lines]
    cached = CachingChain(reader)
    for d in data:  # read the chain facts
        verify_receipt(None, d, cached, trust)
    fast = FastChainVerifier(cached, trust)
    assert all(fast("r", d) for d in data)
    record_path = FastRecordPath()
    facts = [f for f in (record_path.check(d) for d in data) if f is not None]
    assert len(facts) == n
    chain_path = fast._path
    assert isinstance(chain_path, ChainPath)
    payloads = [d["record"]["payload"] for d in data]
    records = [d["record"]["record"] for d in data]

    def payload_step() -> None:
        for p, r in zip(payloads, records, strict=True):
            text = _plain_json(p) if _plain(p) else None
            keccak(canonical_json(p) if text is None else text)
            kind = RecordKind(r["kind"])
            counted = _Counted(
                kind,
                r["subject"],
                r["partNumber"],
                r["lotId"],
                r["eventTime"],
                r["quantity"],
                r["defects"],
            )
            _check_counts(cast(QualityRecord, counted), parse_payload(kind, p))

    digests = [(bytes.fromhex(d["record"]["signature"][2:]), os.urandom(32)) for d in data]

    recover = _Recover()

    def signature_step() -> None:
        for sig, digest in digests:
            public = recover(sig, sig[64] - 27, digest)
            assert public is not None
            keccak(public[1:])

    struct_hashes = [bytes.fromhex(d["structHash"][2:]) for d in data]
    fresh = FastRecordPath()

    def fold_step() -> None:
        for h, d in zip(struct_hashes, data, strict=True):
            fresh.fold(keccak(keccak(h)), d["proof"])

    def verdicts() -> Iterator[Verdict]:
        for d in data:
            yield Verdict("receipts.jsonl:1", True, d["structHash"], None, None)

    steps = [
        (
            "JSON line -> dict (orjson), input record",
            per_receipt(lambda: deque(read_receipts(export), maxlen=0)),
        ),
        (
            "whole fast-path check of the record",
            per_receipt(lambda: [record_path.check(d) for d in data]),
        ),
        ("  payload: canonical JSON, hash, model", per_receipt(payload_step)),
        ("  signature: recover + address", per_receipt(signature_step)),
        ("  Merkle fold (memo cold, then warm)", per_receipt(fold_step)),
        (
            "chain checks from facts read",
            per_receipt(
                lambda: [chain_path.passes(f, d) for f, d in zip(facts, data, strict=True)]
            ),
        ),
        (
            "verdict + its output line",
            per_receipt(lambda: write_verdicts(verdicts(), io.StringIO())),
        ),
    ]
    return steps


def as_a_user(export: Path, trust: TrustRoot, rpc_url: str, tmp: Path, n: int) -> None:
    """``qledger verify-receipts`` in a new process, as a user runs it on an export."""
    trust_file = tmp / "trust.json"
    trust.save(trust_file)
    command = [
        sys.executable,
        "-m",
        "cli",
        "verify-receipts",
        str(export),
        "--rpc",
        rpc_url,
        "--trust",
        str(trust_file),
        "--failures-only",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with Clock() as startup:
        subprocess.run(
            [sys.executable, "-m", "cli", "--help"], env=env, capture_output=True, check=True
        )
    with Clock() as clock:
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    print(
        f"as a user: qledger verify-receipts {export.name} --rpc URL --trust trust.json "
        f"--failures-only -> exit {result.returncode}, {clock.wall:.2f} s wall "
        f"({n / clock.wall:,.0f} receipts/s including the interpreter's start, "
        f"{startup.wall:.2f} s for `qledger --help` alone)"
    )
    said = result.stdout.strip().splitlines() or [result.stderr[-300:]]
    print(f"  {said[-1]}")


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


LOAD_BEFORE = load()

if __name__ == "__main__":
    main()
