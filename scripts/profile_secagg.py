#!/usr/bin/env python
"""Where a SecAgg+ round's time goes, per supplier call and per stage (simulation engine).

    .venv/bin/python scripts/profile_secagg.py --suppliers 8 --rounds 25

Runs plain FedAvg, SecAgg+ with keys set up a round ahead (the default) and SecAgg+ with
Flower's four stages every round, back to back on the same data, and prints for each:

- the median round time, and the medians of each run of ``--window`` consecutive rounds (how
  much the machine's speed drifts within one run);
- the median wall time of each SecAgg+ stage as the server sees it (``rounds.jsonl``);
- per supplier call, timed inside the ClientApp by a mod outermost on it: the median wall and
  CPU milliseconds of each kind of message (stage, and the keys-ahead records it carries).

The difference between a stage's wall time and its calls' own work, with two workers, is what
Ray and Flower add around each call.

With ``--deploy-suppliers N`` it then runs the same three variants in the deployment engine
(SuperLink + N SuperNodes, ``--deploy-rounds`` rounds) and prints each run's round times and
SecAgg+ stage medians (a deployment ClientApp cannot take the timing mod).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_fl import deploy_config, stage_summary  # scripts/, first on sys.path here
from flwr.app import Context, Message
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key

from federated.config import FLConfig, ServerSettings
from federated.data import generate_partitions
from federated.run import deploy_local, simulate

VARIANTS: dict[str, dict[str, Any]] = {
    "FedAvg": {},
    "SecAgg+, keys ahead": {"secagg": True},
    "SecAgg+, four stages": {"secagg": True, "secagg_keys_ahead": False},
}
# Where the timing mod (run in Ray's worker processes) writes; set per variant.
TIMINGS_ENV = "QLEDGER_PROFILE_TIMINGS"


def timing_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Time one ClientApp call; append (kind, wall, cpu) to this worker's file."""
    configs = msg.content.config_records.get(RECORD_KEY_CONFIGS)
    kind = str(configs.get(Key.STAGE)) if configs is not None else "train"
    extra = sorted(k for k in msg.content.config_records if k.startswith("qledger."))
    if extra:
        kind += " + " + ", ".join(k.removeprefix("qledger.secaggplus.") for k in extra)
    wall, cpu = time.perf_counter(), time.process_time()
    reply = call_next(msg, context)
    line = {"kind": kind, "wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}
    out = Path(os.environ[TIMINGS_ENV]) / f"{os.getpid()}.jsonl"
    with out.open("a") as fh:
        fh.write(json.dumps(line) + "\n")
    return reply


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--suppliers", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=25)
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--seed", type=int, default=11, help="data seed")
    ap.add_argument("--deploy-suppliers", type=int, default=0, help="0: no deployment runs")
    ap.add_argument("--deploy-rounds", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)

    work = Path(tempfile.mkdtemp(prefix="profile-secagg-"))
    data = work / "data"
    generate_partitions(args.suppliers, args.seed, data)
    s = ServerSettings(
        rounds=args.rounds,
        min_available_clients=args.suppliers,
        min_fit_clients=args.suppliers,
    )
    for index, (name, changes) in enumerate(VARIANTS.items()):
        timings = work / f"timings-{index}"
        timings.mkdir()
        os.environ[TIMINGS_ENV] = str(timings)  # inherited by the Ray workers started next
        cfg = FLConfig(
            suppliers=args.suppliers, data_dir=data, out_dir=work / name.replace(" ", "_")
        ).with_server(**{**s.__dict__, **changes})
        result = simulate(cfg, client_mods=[timing_mod])
        secs = result.round_seconds()[1:]  # round 1 warms the workers
        windows = [
            statistics.median(secs[i : i + args.window]) for i in range(0, len(secs), args.window)
        ]
        print(
            f"\n{name}: median round {statistics.median(secs):.4f} s; per {args.window} rounds:"
            f" {', '.join(f'{w:.3f}' for w in windows)}"
        )
        if stages := stage_summary(result, skip_first=True):
            print(f"  {stages}")
        calls: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for path in timings.glob("*.jsonl"):
            for line in path.open():
                c = json.loads(line)
                calls[c["kind"]].append((c["wall"], c["cpu"]))
        for kind, values in sorted(calls.items()):
            wall = statistics.median(v[0] for v in values) * 1000
            cpu = statistics.median(v[1] for v in values) * 1000
            print(f"  per call, {kind}: {len(values)} calls, wall {wall:.2f} ms, cpu {cpu:.2f} ms")

    n = args.deploy_suppliers
    for name, changes in VARIANTS.items() if n else ():
        out_dir = work / f"deploy-{name.replace(' ', '_')}"
        result = deploy_local(deploy_config(data, out_dir, n, args.deploy_rounds, s, **changes))
        secs = result.round_seconds()
        print(
            f"\ndeployment, {n} SuperNodes, {name}: median round {statistics.median(secs):.2f} s;"
            f" rounds {', '.join(f'{x:.2f}' for x in secs)}"
        )
        if stages := stage_summary(result, skip_first=False):
            print(f"  {stages}")


if __name__ == "__main__":
    main()
