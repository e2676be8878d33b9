"""Gas per record: qledger's ``anchorBatch`` against the Ethereum Attestation Service, on one anvil.

    .venv/bin/python scripts/bench_gas_vs_eas.py [--sizes 1,64,1024]

EAS's SchemaRegistry and EAS are compiled from the npm package
``@ethereum-attestation-service/eas-contracts`` (version pinned in package.json) with EAS's own
compiler settings by ``scripts/compile_eas.js`` (solc 0.8.29, optimizer 1,000,000 runs, paris,
bytecodeHash none, OpenZeppelin 5.3.0); the script checks the bytecode equals the artefact EAS
ships in that package. Both are deployed beside QualityLedger on one anvil (127.0.0.1,
``--prune-history``), and for each size n it prints the transaction's ``gasUsed`` divided by n:

- ``attest``: one attestation per transaction (n transactions; the mean is printed);
- ``multiAttest``: n attestations of one schema in one transaction;
- ``multiTimestamp``: n off-chain attestation UIDs timestamped in one transaction;
- ``anchorBatch``: one Merkle root over n records (qledger).

Each attestation carries what a qledger record anchors: a recipient (the supplier), no expiry,
revocable, and ``abi.encode(bytes32 recordHash)`` as data under the schema
``bytes32 recordHash``. Gas includes each transaction's 21,000 base cost. anvil's block gas limit
is raised so that a 1,024-record ``multiAttest`` fits in one block; the output says where a
transaction exceeds Ethereum mainnet's block gas limit.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from ledger.chain import ChainClient
from ledger.chain.local import dev_private_keys, start_anvil, stop_anvil
from ledger.merkle import StandardMerkleTree

ROOT = Path(__file__).resolve().parent.parent
# Ethereum mainnet's block gas limit in 2025 (raised from 30M to 36M in February 2025, then 45M
# in July 2025); a transaction above it cannot be mined there.
MAINNET_BLOCK_GAS_LIMIT = 45_000_000
ANVIL_GAS_LIMIT = 1_000_000_000
SCHEMA = "bytes32 recordHash"
ZERO32 = b"\x00" * 32


def compile_eas() -> dict[str, Any]:
    out = subprocess.run(
        ["node", str(ROOT / "scripts" / "compile_eas.js")],
        check=True,
        capture_output=True,
        text=True,
    )
    return dict(json.loads(out.stdout))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,64,1024", help="records per transaction, commas")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    eas_build = compile_eas()
    matches = all(c["matchesPackageArtifact"] for c in eas_build["contracts"].values())
    print(
        f"EAS {eas_build['easVersion']} compiled with solc {eas_build['compiler']}, "
        f"settings {json.dumps(eas_build['settings'], sort_keys=True)}"
    )
    print(f"bytecode identical to the package's own artefacts: {'yes' if matches else 'NO'}")

    with tempfile.TemporaryDirectory(prefix="qledger-gas-") as tmp:
        data_dir = Path(tmp) / "anvil"
        chain = start_anvil(data_dir, extra_args=["--gas-limit", str(ANVIL_GAS_LIMIT)])
        try:
            client = ChainClient.connect(chain.rpc_url, private_key=dev_private_keys()[0])
            client.deploy()
            w3 = client.w3
            sender = w3.eth.accounts[0]
            recipient = w3.eth.accounts[1]

            def deploy(name: str, *ctor: Any) -> Any:
                spec = eas_build["contracts"][name]
                factory = w3.eth.contract(abi=spec["abi"], bytecode=spec["bytecode"])
                receipt = w3.eth.wait_for_transaction_receipt(
                    factory.constructor(*ctor).transact({"from": sender})
                )
                return w3.eth.contract(address=receipt["contractAddress"], abi=spec["abi"])

            registry = deploy("SchemaRegistry")
            eas = deploy("EAS", registry.address)
            schema_uid = registry.functions.register(SCHEMA, "0x" + "00" * 20, True).call(
                {"from": sender}
            )
            w3.eth.wait_for_transaction_receipt(
                registry.functions.register(SCHEMA, "0x" + "00" * 20, True).transact(
                    {"from": sender}
                )
            )

            def request_data() -> tuple[Any, ...]:
                # (recipient, expirationTime, revocable, refUID, data, value)
                return (recipient, 0, True, ZERO32, os.urandom(32), 0)

            def gas_of(fn: Any) -> int:
                tx = fn.transact({"from": sender, "gas": ANVIL_GAS_LIMIT // 2})
                receipt = w3.eth.wait_for_transaction_receipt(tx)
                if receipt["status"] != 1:
                    raise RuntimeError(f"transaction {tx.hex()} reverted")
                return int(receipt["gasUsed"])

            rows: dict[str, dict[int, tuple[float, int]]] = {}
            # Warm up each path once, so no figure pays a first-write of a counter slot that
            # later calls would not (QualityLedger's first batch, EAS's first attestation).
            gas_of(eas.functions.attest((schema_uid, request_data())))
            gas_of(eas.functions.multiTimestamp([os.urandom(32)]))
            client.anchor_batch(os.urandom(32), 1)
            for n in sizes:
                singles = [
                    gas_of(eas.functions.attest((schema_uid, request_data()))) for _ in range(n)
                ]
                rows.setdefault("attest", {})[n] = (statistics.mean(singles), max(singles))
                multi = gas_of(
                    eas.functions.multiAttest([(schema_uid, [request_data() for _ in range(n)])])
                )
                rows.setdefault("multiAttest", {})[n] = (multi / n, multi)
                stamps = gas_of(eas.functions.multiTimestamp([os.urandom(32) for _ in range(n)]))
                rows.setdefault("multiTimestamp", {})[n] = (stamps / n, stamps)
                tree = StandardMerkleTree.of([os.urandom(32) for _ in range(n)])
                anchor = client.anchor_batch(tree.root, n).gas_used
                rows.setdefault("anchorBatch", {})[n] = (anchor / n, anchor)
        finally:
            stop_anvil(data_dir)

    print(f"\ngas per record on one anvil (QualityLedger and EAS side by side), sizes {sizes}")
    header = "".join(f"{n:>16,}" for n in sizes)
    print(f"{'method':<16}{header}")
    for method, by_size in rows.items():
        cells = "".join(f"{by_size[n][0]:>16,.1f}" for n in sizes)
        print(f"{method:<16}{cells}")
    largest = sizes[-1]
    anchor = rows["anchorBatch"][largest][0]
    print(f"\nat {largest:,} records per transaction, gas per record against anchorBatch:")
    for method in ("attest", "multiAttest", "multiTimestamp"):
        print(f"  {method:<15} {rows[method][largest][0] / anchor:>10,.0f}x")
    for method in ("multiAttest", "multiTimestamp", "anchorBatch"):
        whole = rows[method][largest][1]
        if whole > MAINNET_BLOCK_GAS_LIMIT:
            print(
                f"note: one {method} of {largest:,} uses {whole:,} gas, above mainnet's "
                f"{MAINNET_BLOCK_GAS_LIMIT:,} block gas limit (it would take "
                f"{-(-whole // MAINNET_BLOCK_GAS_LIMIT)} transactions there)"
            )


if __name__ == "__main__":
    main()
