#!/usr/bin/env python3
"""Compare qledger's checkpoint across Besu nodes and with the service (a monitoring probe).

The QualityLedger contract keeps (batchCount, accumulator, leafTotal); the accumulator chains
every anchored root, so equal accumulators mean identical anchoring histories. This probe reads
the checkpoint from every given node AT THE SAME BLOCK (the lowest head among them) and from the
service's GET /v1/checkpoint, and fails when:

- a node is unreachable, on another chain id, or more than --max-lag blocks behind the others;
- two nodes disagree at the same block (a fork, or a node serving stale/forged state);
- the service names another contract/chain than the deployment file, or reports an accumulator
  for a batch count that the chain has with a different accumulator;
- (with --state-file, run periodically) records were pending at the last run and still are,
  and no batch was anchored in between: the anchorer is stuck or stopped.

    .venv/bin/python deploy/qledger/checkpoint-monitor.py \
        --deployment /var/lib/qledger/deployment.json \
        --rpc http://10.10.0.11:8545 --rpc http://10.10.0.12:8545 \
        --service https://ledger.example.com [--prometheus /var/lib/node_exporter/qledger.prom]

Exit status 0 = consistent, 1 = a problem (printed), 2 = usage error. Read-only: sends no
transactions and needs no key.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any


def read_nodes(rpcs: list[str], ledger: str, chain_id: int) -> tuple[dict[str, Any], list[str]]:
    from ledger.chain import ChainClient
    from ledger.errors import ChainError

    clients: dict[str, Any] = {}
    problems: list[str] = []
    for rpc in rpcs:
        try:
            client = ChainClient.connect_ledger(rpc, ledger)
        except ChainError as exc:
            problems.append(f"{rpc}: {exc}")
            continue
        if client.chain_id != chain_id:
            problems.append(f"{rpc}: chain id {client.chain_id}, deployment says {chain_id}")
            continue
        clients[rpc] = client
    return clients, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deployment", type=Path, required=True, help="deployment.json")
    parser.add_argument("--rpc", action="append", default=[], help="a node's JSON-RPC URL")
    parser.add_argument("--service", help="qledger API base URL (GET /v1/checkpoint)")
    parser.add_argument("--max-lag", type=int, default=5, help="blocks a node may trail")
    parser.add_argument(
        "--state-file", type=Path, help="remembers the last run, to detect an anchorer that stopped"
    )
    parser.add_argument("--prometheus", type=Path, help="write a node_exporter textfile")
    args = parser.parse_args(argv)
    if not args.rpc:
        parser.error("give at least one --rpc")

    from ledger.errors import ChainError

    deployment = json.loads(args.deployment.read_text())
    ledger, chain_id = deployment["ledger"], int(deployment["chain_id"])
    clients, problems = read_nodes(args.rpc, ledger, chain_id)
    metrics: list[str] = []

    heads = {}
    for rpc, client in clients.items():
        try:
            heads[rpc] = client.block_number()
        except ChainError as exc:
            problems.append(f"{rpc}: {exc}")
    chain_view: dict[str, Any] | None = None
    if heads:
        common = min(heads.values())
        top = max(heads.values())
        views = {}
        for rpc, head in heads.items():
            metrics.append(f'qledger_node_head_block{{rpc="{rpc}"}} {head}')
            if top - head > args.max_lag:
                problems.append(f"{rpc}: head {head} is {top - head} blocks behind {top}")
            try:
                count, acc, leaves = (
                    clients[rpc].ledger.functions.checkpoint().call(block_identifier=common)
                )
            except Exception as exc:  # any RPC failure is a finding here
                problems.append(f"{rpc}: checkpoint() at block {common} failed: {exc}")
                continue
            views[rpc] = {
                "batchCount": int(count),
                "accumulator": "0x" + bytes(acc).hex(),
                "leafTotal": int(leaves),
            }
        distinct = {json.dumps(v, sort_keys=True) for v in views.values()}
        if len(distinct) > 1:
            problems.append(f"nodes disagree at block {common}: {json.dumps(views)}")
        if views:
            chain_view = next(iter(views.values()))
            metrics.append(f"qledger_chain_batch_count {chain_view['batchCount']}")
            metrics.append(f"qledger_chain_leaf_total {chain_view['leafTotal']}")
        metrics.append(f"qledger_nodes_agree {int(len(distinct) == 1)}")

    service = None
    if args.service:
        import httpx

        try:
            service = httpx.get(f"{args.service}/v1/checkpoint", timeout=10).json()
        except (httpx.HTTPError, ValueError) as exc:
            problems.append(f"service: {exc}")
    if service is not None:
        same_contract = service.get("contract", "").lower() == ledger.lower()
        if not same_contract or service.get("chainId") != chain_id:
            problems.append(
                f"service uses {service.get('contract')} on chain "
                f"{service.get('chainId')}, deployment says {ledger} on {chain_id}"
            )
        if (
            chain_view
            and service["batchCount"] == chain_view["batchCount"]
            and (service["accumulator"] != chain_view["accumulator"])
        ):
            problems.append(
                f"service and chain disagree on the accumulator at batch {service['batchCount']}"
            )
        pending = int(service.get("service", {}).get("pending", 0))
        metrics.append(f"qledger_service_pending {pending}")
        records = int(service.get("service", {}).get("records", 0))
        metrics.append(f"qledger_service_records {records}")
        # Confirmed batches the chain lost (a counter: alert on any increase) and those the
        # anchorer has not yet anchored again.
        reconciliations = int(service.get("service", {}).get("reconciliations", 0))
        metrics.append(f"qledger_reconciliations_total {reconciliations}")
        reanchoring = int(service.get("service", {}).get("reanchoring", 0))
        metrics.append(f"qledger_reanchoring_batches {reanchoring}")
        if args.state_file:
            now = time.time()
            last = json.loads(args.state_file.read_text()) if args.state_file.exists() else None
            if (
                last
                and pending > 0
                and last.get("pending", 0) > 0
                and (service["batchCount"] == last.get("batchCount"))
            ):
                problems.append(
                    f"{pending} records pending and no batch anchored since "
                    f"{int(now - last['time'])} s ago: is the anchorer running?"
                )
            args.state_file.write_text(
                json.dumps({"time": now, "batchCount": service["batchCount"], "pending": pending})
            )

    metrics.append(f"qledger_checkpoint_ok {int(not problems)}")
    if args.prometheus:
        tmp = args.prometheus.with_suffix(".tmp")
        tmp.write_text("\n".join(metrics) + "\n")
        tmp.replace(args.prometheus)
    for problem in problems:
        print(f"FAIL {problem}")
    if not problems:
        summary = chain_view or {}
        print(
            f"ok: {len(clients)} node(s) agree: batchCount {summary.get('batchCount')}, "
            f"accumulator {summary.get('accumulator')}"
            + (f"; service pending {service['service']['pending']}" if service else "")
        )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
