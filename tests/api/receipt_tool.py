"""Receipts checked the way an auditor checks them: written to a JSONL export and verified by
`qledger verify-receipts` (its own process) against the chain, under a pinned trust root
(chain id, ledger address, genesis block). Nothing the service says is taken on trust."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from ledger.chain import ChainClient, Deployment
from tests.helpers import ROOT


def verify_with_cli(
    receipts: list[dict[str, Any]], rpc_url: str, deployment: Deployment, workdir: Path
) -> list[dict[str, Any]]:
    """Each receipt's verdict (``ok``, ``structHash``, ``failedCheck``), in order; the exit
    code must agree with them."""
    export = workdir / "receipts.jsonl"
    export.write_text("".join(json.dumps(r) + "\n" for r in receipts))
    genesis = ChainClient.connect(rpc_url).block_hash(0)
    checked = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli",
            "verify-receipts",
            str(export),
            "--rpc",
            rpc_url,
            "--chain-id",
            str(deployment.chain_id),
            "--ledger",
            deployment.ledger,
            "--anchor",
            f"0:{genesis}",
            "--json",
        ],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("QLEDGER_")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [json.loads(line) for line in checked.stdout.splitlines() if line.startswith("{")]
    verdicts = [v for v in lines if "ok" in v]
    assert len(verdicts) == len(receipts), checked.stdout[-2000:] + checked.stderr[-2000:]
    assert (checked.returncode == 0) == all(v["ok"] for v in verdicts), checked.stderr[-2000:]
    return verdicts
