#!/usr/bin/env python3
"""Anchor the rounds of a deployment-engine run in the ModelRegistry, then verify the run.

In the deployment engine the ServerApp runs under the SuperLink (on the OEM's host) and only
writes files to its run config's out-dir: models/round-NNNN.qlm and rounds.jsonl. This tool,
run on that host, reads rounds.jsonl, records every aggregated round on chain
(model hash, participant count, participants' Merkle root, as federated.provenance defines
them), checks the whole run against the chain and writes participation.json (each supplier's
proof of taking part, the credit score's data-sharing evidence).

It is idempotent: a round already on chain is checked, not sent again, so it can run while the
run goes on (--follow) and again afterwards.

    QLEDGER_ANCHORER_KEY_FILE=/etc/qledger/credentials/fl-anchor-key \
    /opt/qledger/.venv/bin/python deploy/flower/anchor-rounds.py \
        --run-dir /var/lib/flower/runs/2025-w14 --run-name qledger-fl-2025-w14 \
        --deployment /etc/qledger/deployment.json --rpc http://127.0.0.1:8545 --follow

The key (hex, in the file named by QLEDGER_ANCHORER_KEY_FILE, or QLEDGER_ANCHORER_KEY) must
hold ANCHORER_ROLE and be in the chain's accounts allowlist. The run id on chain is
keccak256(run name): pick one name per run and keep it with the run's files.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def load_key() -> str:
    path = os.environ.get("QLEDGER_ANCHORER_KEY_FILE")
    if path:
        return Path(path).read_text().strip()
    key = os.environ.get("QLEDGER_ANCHORER_KEY")
    if not key:
        sys.exit("set QLEDGER_ANCHORER_KEY_FILE (or QLEDGER_ANCHORER_KEY)")
    return key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, required=True, help="the run's out-dir")
    parser.add_argument("--run-name", required=True, help="on chain: keccak256(run name)")
    parser.add_argument("--deployment", type=Path, required=True)
    parser.add_argument("--rpc", required=True)
    parser.add_argument(
        "--follow",
        action="store_true",
        help="keep going until the run writes result.json or error.json",
    )
    parser.add_argument("--poll", type=float, default=1.0)
    args = parser.parse_args(argv)

    from federated.provenance import (
        anchor_round,
        participation,
        round_record,
        verify_run,
    )
    from ledger.chain import ChainClient, Deployment, run_id

    chain = ChainClient.connect(
        args.rpc, private_key=load_key(), deployment=Deployment.load(args.deployment)
    )
    rid = run_id(args.run_name)
    rounds_file = args.run_dir / "rounds.jsonl"
    records, offset = [], 0

    def drain() -> None:
        nonlocal offset
        if not rounds_file.exists():
            return
        with rounds_file.open() as fh:
            fh.seek(offset)
            while (line := fh.readline()).endswith("\n"):
                offset = fh.tell()
                record = round_record(json.loads(line), args.run_dir)
                if record.status == "aggregated" and record.participants:
                    if chain.model_round(rid, record.round) is None:
                        anchor_round(chain, rid, record)
                        print(
                            f"round {record.round}: anchored ({len(record.participants)} "
                            f"participants) tx {record.tx_hash}",
                            flush=True,
                        )
                    else:
                        record.anchored = True
                        print(f"round {record.round}: already on chain", flush=True)
                records.append(record)

    done = lambda: any((args.run_dir / f).exists() for f in ("result.json", "error.json"))  # noqa: E731
    while True:
        finished = done()
        drain()
        if finished or not args.follow:
            break
        time.sleep(args.poll)

    if (args.run_dir / "error.json").exists():
        print(f"the run failed: {(args.run_dir / 'error.json').read_text()}", file=sys.stderr)
    final = args.run_dir / "final.qlm"
    if not final.exists():
        print("no final.qlm yet: anchored what there is; run again when the run is over")
        return 0 if not args.follow else 1
    issues = verify_run(chain, rid, records, args.run_dir, final)
    for issue in issues:
        print(f"FAIL round {issue.round}: {issue.problem}")
    (args.run_dir / "participation.json").write_text(
        json.dumps(participation(records, rid), indent=2) + "\n"
    )
    print(
        f"run {args.run_name} (id 0x{rid.hex()}): {len(records)} rounds, "
        f"{sum(r.anchored for r in records)} anchored, "
        + ("verified against the chain" if not issues else f"{len(issues)} problems")
    )
    return 1 if issues else 0


if __name__ == "__main__":
    sys.exit(main())
