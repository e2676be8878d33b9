"""Bulk verification: many receipts from several batches, each checked like `qledger verify`,
the chain asked once per batch root and signer, and the adversary's one bad receipt among many
caught and named."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cli import app
from ledger.bulk_verify import CachingChain, ReceiptInput, read_receipts, verify_all
from ledger.chain import ChainClient
from ledger.eip712 import record_struct_hash
from ledger.keys import Signer
from ledger.merkle import StandardMerkleTree
from ledger.receipts import build_receipt
from ledger.records import Domain, Role
from ledger.signing import sign_record
from ledger.trust import BlockAnchor, TrustRoot
from ledger.verify import VerificationReport, verify_receipt
from tests.helpers import inspection_payload

BATCHES = 3
PER_BATCH = 20


def _make_world(chain: ChainClient) -> dict[str, Any]:
    deployment = chain.deployment
    assert deployment is not None
    domain = Domain(chainId=deployment.chain_id, verifyingContract=deployment.ledger)
    suppliers = [Signer.generate() for _ in range(2)]
    for n, supplier in enumerate(suppliers):
        chain.register_participant(supplier.address, Role.SUPPLIER, f"SUP-{n:02d}")
    if hasattr(chain, "follower"):
        chain.follower.sync()
    now = chain.block_timestamp()
    receipts: list[dict[str, Any]] = []
    for batch in range(BATCHES):
        records = [
            sign_record(
                suppliers[i % 2],
                domain,
                subject=f"SUP-{i % 2:02d}",
                kind="inspection",
                part_number="P-1",
                lot_id=f"L-{batch}-{i}",
                event_time=now - 3600,
                quantity=50,
                defects=1,
                nonce=batch * 1000 + i,
                payload=inspection_payload(),
                signed_at=now,
            )
            for i in range(PER_BATCH)
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
    return {"receipts": receipts, "trust": trust, "domain": domain}


@pytest.fixture(scope="module")
def world() -> dict[str, Any]:
    chain = ChainClient.in_process()
    chain.deploy()
    made = _make_world(chain)
    made["chain"] = chain
    return made


def _run(world: dict[str, Any], receipts: list[dict[str, Any]]) -> tuple[list[Any], CachingChain]:
    cached = CachingChain(world["chain"])
    items = [ReceiptInput(f"r{n}", r) for n, r in enumerate(receipts)]

    def one(data: dict[str, Any]) -> VerificationReport:
        return verify_receipt(None, data, cached, world["trust"])

    return list(verify_all(items, one)), cached


def test_every_receipt_passes_and_the_chain_is_asked_per_root_and_signer(
    world: dict[str, Any],
) -> None:
    verdicts, cached = _run(world, world["receipts"])
    assert len(verdicts) == BATCHES * PER_BATCH
    assert all(v.ok for v in verdicts), [v.line() for v in verdicts if not v.ok][:3]
    assert len(cached.roots) == BATCHES
    assert len(cached.signers) == 2
    # Per root: anchoredAt, the block's hash, the transaction; per signer: 3 role histories
    # and the organisation; once: chain id and the pinned block. Not one per receipt.
    assert cached.calls == BATCHES * 3 + 2 * 4 + 2
    # The same verdicts as the single-receipt verifier asking the chain itself every time.
    for receipt in world["receipts"][:: PER_BATCH // 2]:
        assert verify_receipt(None, receipt, world["chain"], world["trust"]).ok


def _flip(value: str) -> str:
    return value[:-1] + ("1" if value[-1] != "1" else "2")


def test_one_tampered_receipt_among_many_is_caught_and_named(world: dict[str, Any]) -> None:
    receipts = json.loads(json.dumps(world["receipts"]))
    # The adversary raises the quantity of one record after the fact (its hashes no longer
    # match), and swaps another receipt's proof for a sibling's (a proof of another leaf).
    receipts[7]["record"]["record"]["defects"] = 0
    receipts[31]["proof"] = receipts[32]["proof"]
    verdicts, _ = _run(world, receipts)
    bad = {v.name: v for v in verdicts if not v.ok}
    assert set(bad) == {"r7", "r31"}
    assert bad["r7"].failed_check in {"record_format", "receipt_format", "signature"}
    assert bad["r31"].failed_check == "merkle_proof"
    assert "FAIL r31 merkle_proof" in bad["r31"].line()


def test_a_receipt_naming_a_look_alike_contract_is_refused(world: dict[str, Any]) -> None:
    """Same bytecode deployed elsewhere, records signed for it and anchored there: valid there,
    but not the pinned ledger, so refused among valid receipts of the pinned one."""
    other = ChainClient.in_process()
    other.deploy()
    other.deploy()  # a second deployment: same bytecode, another address
    fake = _make_world(other)["receipts"][:2]
    assert fake[0]["contract"] != world["trust"].ledger
    verdicts, _ = _run(world, [*world["receipts"][:5], *fake])
    assert [v.ok for v in verdicts] == [True] * 5 + [False, False]
    assert {v.failed_check for v in verdicts[5:]} == {"trust_root"}


def test_a_root_anchored_nowhere_fails_even_with_a_consistent_proof(world: dict[str, Any]) -> None:
    """A forged batch: records really signed, a tree over them, receipts copied from a real
    batch's anchoring details, but the root never anchored."""
    real = world["receipts"][0]
    domain = world["domain"]
    signer = Signer.generate()  # not a participant either
    record = sign_record(
        signer,
        domain,
        subject="SUP-00",
        kind="inspection",
        part_number="P-9",
        lot_id="L-forged",
        event_time=real["record"]["record"]["eventTime"],
        quantity=50,
        defects=1,
        nonce=99,
        payload=inspection_payload(),
        signed_at=real["record"]["record"]["signedAt"],
    )
    tree = StandardMerkleTree.of([record_struct_hash(record.record), b"\x11" * 32])
    forged = build_receipt(
        record,
        tree,
        batch_id=real["batchId"],
        transaction_hash=real["transactionHash"],
        block_number=real["blockNumber"],
        block_timestamp=real["blockTimestamp"],
        block_hash=real["blockHash"],
    ).model_dump(mode="json")
    verdicts, cached = _run(world, [real, forged, world["receipts"][PER_BATCH]])
    assert [v.ok for v in verdicts] == [True, False, True]
    assert verdicts[1].failed_check in {"signer_role_at_signing", "merkle_proof"}
    report = verify_receipt(None, forged, cached, world["trust"])
    assert {c.check.value for c in report.checks if not c.ok} >= {"merkle_proof", "root_anchored"}


def test_unreadable_inputs_fail_alone(tmp_path: Path, world: dict[str, Any]) -> None:
    export = tmp_path / "receipts.jsonl"
    lines = [json.dumps(r) for r in world["receipts"][:3]]
    lines.insert(1, "{not json")
    lines.insert(2, "[1, 2]")
    lines.insert(3, "")
    export.write_text("\n".join(lines) + "\n")
    items = list(read_receipts(export))
    assert [i.name for i in items] == [f"receipts.jsonl:{n}" for n in (1, 2, 3, 5, 6)]
    verdicts, _ = _run(world, [i.data for i in items if i.data is not None])
    assert all(v.ok for v in verdicts)
    bad = [i for i in items if i.data is None]
    assert [i.name for i in bad] == ["receipts.jsonl:2", "receipts.jsonl:3"]
    assert "not JSON" in (bad[0].error or "") and "JSON object" in (bad[1].error or "")


@pytest.mark.anvil
def test_cli_verifies_a_directory_and_a_jsonl_export(
    anvil_chain: ChainClient, anvil_node: Any, tmp_path: Path
) -> None:
    made = _make_world(anvil_chain)
    receipts = made["receipts"]
    trust_file = tmp_path / "trust.json"
    made["trust"].save(trust_file)
    directory = tmp_path / "receipts"
    directory.mkdir()
    for n, receipt in enumerate(receipts):
        (directory / f"{n:03d}.json").write_text(json.dumps(receipt))
    runner = CliRunner()
    args = ["verify-receipts", "--rpc", anvil_node.rpc_url, "--trust", str(trust_file)]
    result = runner.invoke(app, [*args, str(directory)])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == len(receipts) + 1
    assert all(line.startswith("OK   ") for line in lines[:-1])
    assert lines[-1].startswith(f"{len(receipts)} receipts: {len(receipts)} valid, 0 invalid")
    assert f"for {BATCHES} distinct batch roots and 2 distinct signers" in lines[-1]

    tampered = json.loads(json.dumps(receipts))
    tampered[12]["root"] = tampered[45]["root"]  # a real root, of another batch
    export = tmp_path / "export.jsonl"
    export.write_text("".join(json.dumps(r) + "\n" for r in tampered))
    result = runner.invoke(app, [*args, "--failures-only", str(export)])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("FAIL export.jsonl:13 ")
    assert lines[-1].startswith(f"{len(receipts)} receipts: {len(receipts) - 1} valid, 1 invalid")
    assert len(lines) == 2

    (directory / "nothing").mkdir()
    empty = runner.invoke(app, [*args, str(directory / "nothing")])
    assert empty.exit_code == 1 and "no receipts found" in empty.output
