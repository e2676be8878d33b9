#!/usr/bin/env python
"""Benchmark of the federated defect model: one table, one run, the same data for every row.

    .venv/bin/python scripts/bench_fl.py --suppliers 8 --rounds 60 --json bench_fl.json

Rows (accuracy / ROC AUC on the OEM's pooled held-out set):

- centralised: all suppliers' data pooled in one place (what federation must not do; the upper
  bound), early-stopped on a 20 % validation split of the pooled data;
- each supplier alone: every supplier trains only on its own data (early-stopped on its own
  validation split); mean, worst and best over suppliers;
- FedAvg, FedAvg + SecAgg+, FedAvg + DP at two noise multipliers: Flower simulation engine,
  same rounds, same local training; seconds per round = median wall time of a round
  (sampling, local training, aggregation; round 1, which warms the Ray workers, excluded);
  DP rows report the RDP accountant's epsilon at delta (client-level: one supplier is the
  unit); sample-level DP rows (each supplier's DP-SGD, opacus; one shot record is the unit)
  report opacus's RDP epsilon, marked "(shot)";
- with ``--poison``: one supplier of n sends a scaled sign-flipped update, undefended, with the
  trimmed mean and under SecAgg+ (clipping + aggregate checks); refused rounds are noted;
- FedAvg and FedAvg + SecAgg+ in the deployment engine: SuperLink + SuperNodes as processes
  (TLS, node auth), on the first ``--deploy-suppliers`` suppliers for ``--deploy-rounds``
  rounds (their accuracy is not comparable to the other rows: fewer suppliers, fewer rounds).

A SecAgg+ run's first round runs Flower's four protocol stages; every later round's keys were
set up during the round before (federated/secagg_ahead.py), and a further simulation row runs
Flower's four stages every round for comparison.

It ends with the issue's three goals, each computed from the rows above. Round times on a small
shared machine move by +-20 % between runs, so the SecAgg+ / FedAvg ratio is also measured on
``--pairs`` further short simulation runs of SecAgg+ each way (keys ahead, four stages), each
between two plain runs and compared with their mean, and on ``--deploy-pairs`` pairs of
deployment runs (the table shows the first), and reported as the median ratio with its range.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from federated.config import FLConfig, ServerSettings
from federated.data import (
    HOLDOUT_DIR,
    Partition,
    generate_partitions,
    load_partition,
    partition_dirs,
)
from federated.faults import poison_mod
from federated.model import evaluate, get_arrays, new_model, set_arrays, train_epochs
from federated.privacy import epsilon_reading
from federated.run import FLRunResult, deploy_local, simulate
from federated.secagg import SECAGG_STAGES

# The SecAgg+ variant that runs Flower's four message rounds every round (ratios key).
FOUR_STAGES = "simulation, four stages"


def early_stopped(
    part: Partition, s: ServerSettings, max_epochs: int, seed: int
) -> tuple[torch.nn.Module, int, float]:
    """Train with the ClientApp's routine; keep the epoch with the best validation loss."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(part))
    n_val = max(10, len(part) // 5)
    val, train = order[:n_val], order[n_val:]
    model = new_model(s.hidden, s.seed)
    best, best_epoch, best_loss = get_arrays(model), 0, float("inf")
    started = time.monotonic()
    for epoch in range(1, max_epochs + 1):
        train_epochs(
            model,
            part.X[train],
            part.y[train],
            epochs=1,
            batch_size=s.batch_size,
            lr=s.lr,
            seed=seed + epoch,
        )
        loss = evaluate(model, part.X[val], part.y[val])["loss"]
        if loss < best_loss:
            best, best_epoch, best_loss = get_arrays(model), epoch, loss
    set_arrays(model, best)
    return model, best_epoch, time.monotonic() - started


def stage_summary(result: FLRunResult, skip_first: bool) -> str:
    """Median seconds of each SecAgg+ stage over the timed rounds ("" for other runs)."""
    rounds = [r for r in result.rounds[1:] if r.stage_seconds]
    rounds = rounds[1:] if skip_first and len(rounds) > 1 else rounds
    if not rounds:
        return ""
    return "stages (s): " + ", ".join(
        f"{name} {statistics.median(r.stage_seconds.get(name, 0.0) for r in rounds):.3f}"
        for name in SECAGG_STAGES
    )


def deploy_config(
    data: Path, out_dir: Path, n: int, rounds: int, base: ServerSettings, **changes: Any
) -> FLConfig:
    """A deployment-engine run of ``n`` SuperNodes, all sampled, with generous timeouts."""
    return FLConfig(suppliers=n, data_dir=data, out_dir=out_dir).with_server(
        **{
            **base.__dict__,
            "rounds": rounds,
            "min_available_clients": n,
            "min_fit_clients": n,
            "round_timeout": 120.0,
            "connect_timeout": 120.0,
            **changes,
        }
    )


def fl_row(name: str, result: FLRunResult, skip_first: bool = True) -> dict[str, Any]:
    secs = result.round_seconds()
    timed = secs[1:] if skip_first and len(secs) > 1 else secs
    m = result.final_metrics
    aggregated = sum(1 for r in result.rounds[1:] if r.status == "aggregated")
    refused = (
        f"{len(secs) - aggregated} of {len(secs)} rounds refused" if aggregated < len(secs) else ""
    )
    return {
        "setting": name,
        "accuracy": m["accuracy"],
        "auc": m["auc"],
        "s_per_round": statistics.median(timed),
        "epsilon": result.epsilon if result.epsilon is not None else result.sample_epsilon,
        "level": "client" if result.epsilon is not None else "sample",
        "rounds": len(secs),
        "aggregated": aggregated,
        "total_s": result.seconds,
        "detail": "; ".join(filter(None, [refused, stage_summary(result, skip_first)])),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--suppliers", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--seed", type=int, default=11, help="data seed")
    ap.add_argument("--dp-noise", default="0.3,1.0", help="two noise multipliers")
    ap.add_argument("--dp-clip", type=float, default=0.5)
    ap.add_argument(
        "--sample-dp-noise",
        default="1.0",
        help="sample-level DP noise multipliers (comma-separated; empty: no such row)",
    )
    ap.add_argument("--sample-dp-clip", type=float, default=1.0)
    ap.add_argument(
        "--poison", action="store_true", help="add the poisoning rows (trimmed mean, SecAgg+)"
    )
    ap.add_argument("--deploy-suppliers", type=int, default=3)
    ap.add_argument("--deploy-rounds", type=int, default=4)
    ap.add_argument("--skip-deploy", action="store_true")
    ap.add_argument(
        "--pairs",
        type=int,
        default=3,
        help="extra back-to-back FedAvg / SecAgg+ simulation runs for the ratio",
    )
    ap.add_argument("--pair-rounds", type=int, default=25)
    ap.add_argument(
        "--deploy-pairs",
        type=int,
        default=2,
        help="FedAvg / SecAgg+ deployment run pairs (the table shows the first)",
    )
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    torch.set_num_threads(1)

    work = Path(tempfile.mkdtemp(prefix="bench-fl-"))
    data = work / "data"
    generate_partitions(args.suppliers, args.seed, data)
    parts = [load_partition(d) for d in partition_dirs(data)]
    holdout = load_partition(data / HOLDOUT_DIR)
    s = ServerSettings(
        rounds=args.rounds, min_available_clients=args.suppliers, min_fit_clients=args.suppliers
    )
    rows: list[dict[str, Any]] = []
    max_epochs = 40

    pooled = Partition(
        "pooled", np.concatenate([p.X for p in parts]), np.concatenate([p.y for p in parts])
    )
    model, epoch, secs = early_stopped(pooled, s, max_epochs, seed=1)
    m = evaluate(model, holdout.X, holdout.y)
    rows.append(
        {
            "setting": f"centralised, pooled data (best epoch {epoch}/{max_epochs})",
            **m,
            "detail": f"{secs / max_epochs:.2f} s per epoch",
        }
    )
    print(f"centralised: {m}", flush=True)

    alone = []
    for p in parts:
        model, _, _ = early_stopped(p, s, max_epochs, seed=2)
        alone.append(evaluate(model, holdout.X, holdout.y))
    accs, aucs = [a["accuracy"] for a in alone], [a["auc"] for a in alone]
    rows.append(
        {
            "setting": f"each supplier alone (mean of {len(parts)}; worst / best)",
            "accuracy": float(np.mean(accs)),
            "auc": float(np.mean(aucs)),
            "detail": f"acc {min(accs):.4f} / {max(accs):.4f}, "
            f"AUC {min(aucs):.4f} / {max(aucs):.4f}",
        }
    )
    print(f"alone: {rows[-1]}", flush=True)

    def run(name: str, poison: float | None = None, **changes: Any) -> None:
        cfg = FLConfig(
            suppliers=args.suppliers, data_dir=data, out_dir=work / name.replace(" ", "_")
        )
        cfg = cfg.with_server(**{**s.__dict__, **changes})
        # A poisoning supplier (partition 0) sends global + poison * (its update - global).
        result = simulate(cfg, inner_mods=[poison_mod([0], poison)] if poison else [])
        rows.append(fl_row(name, result))
        print(f"{name}: {rows[-1]}", flush=True)

    run("FedAvg")
    run("FedAvg + SecAgg+", secagg=True)
    # SecAgg+ / FedAvg round-time ratio of each back-to-back pair, the table's pair first.
    ratios: dict[str, list[float]] = {
        "simulation": [rows[-1]["s_per_round"] / rows[-2]["s_per_round"]],
        FOUR_STAGES: [],
        "deployment": [],
    }
    # What setting each round's keys up during the previous one saves (federated/secagg_ahead.py).
    run("FedAvg + SecAgg+, Flower's four stages every round", secagg=True, secagg_keys_ahead=False)
    for z in (float(v) for v in args.dp_noise.split(",")):
        run(f"FedAvg + DP (z={z}, C={args.dp_clip})", dp_noise=z, dp_clip=args.dp_clip)
    for z in (float(v) for v in args.sample_dp_noise.split(",") if v):
        run(
            f"FedAvg + sample-level DP (z={z}, C={args.sample_dp_clip})",
            sample_dp_noise=z,
            sample_dp_clip=args.sample_dp_clip,
        )
    if args.poison:
        # One supplier of n sends a scaled sign-flipped update (docs/federated.md, "A supplier
        # that poisons its update"): undefended, with the trimmed mean, and under SecAgg+.
        run("trimmed mean", aggregation="trimmed-mean")
        run("FedAvg, 1 poisoner (x-10)", poison=-10.0)
        run("trimmed mean, 1 poisoner (x-10)", poison=-10.0, aggregation="trimmed-mean")
        run("FedAvg + SecAgg+, 1 poisoner (x-10)", poison=-10.0, secagg=True)

    # Plain and SecAgg+ runs alternate, starting and ending with plain; each SecAgg+ run is
    # compared with the mean of the plain runs either side of it, so that a drift in the
    # machine's speed during the run (it is shared) does not count as either's cost. Each
    # measurement times SecAgg+ both ways: keys set up ahead (the default) and Flower's four
    # stages every round.
    def pair_run(name: str, **changes: Any) -> float:
        cfg = FLConfig(suppliers=args.suppliers, data_dir=data, out_dir=work / name).with_server(
            **{**s.__dict__, "rounds": args.pair_rounds, **changes}
        )
        return float(fl_row(name, simulate(cfg))["s_per_round"])

    plain_before = pair_run("plain-0") if args.pairs else 0.0
    for i in range(args.pairs):
        for variant, changes in (
            ("simulation", {"secagg": True}),
            (FOUR_STAGES, {"secagg": True, "secagg_keys_ahead": False}),
        ):
            secure = pair_run(f"{variant}-{i}", **changes)
            plain_after = pair_run(f"plain-{variant}-{i}")
            ratios[variant].append(secure / ((plain_before + plain_after) / 2))
            print(
                f"{variant} {i + 1}: FedAvg {plain_before:.4f} / SecAgg+ {secure:.4f}"
                f" / FedAvg {plain_after:.4f} s",
                flush=True,
            )
            plain_before = plain_after

    n = args.deploy_suppliers
    for pair in range(0 if args.skip_deploy else args.deploy_pairs):
        secs = []
        for label, secagg in (("FedAvg", False), ("FedAvg + SecAgg+", True)):
            cfg = deploy_config(
                data,
                work / f"deploy-{pair}-{int(secagg)}",
                n,
                args.deploy_rounds,
                s,
                secagg=secagg,
            )
            result = deploy_local(cfg)
            # Every deployment round starts the same way (SuperExecs are warm before round 1),
            # so round 1 counts.
            row = fl_row(
                f"{label}, deployment engine ({n} SuperNodes, {args.deploy_rounds} rounds)",
                result,
                skip_first=False,
            )
            row["detail"] = "; ".join(
                filter(
                    None,
                    [
                        "rounds (s): " + ", ".join(f"{x:.1f}" for x in result.round_seconds()),
                        row["detail"],
                    ],
                )
            )
            secs.append(row["s_per_round"])
            if pair == 0:
                rows.append(row)
            print(f"deploy, pair {pair + 1}: {row}", flush=True)
        ratios["deployment"].append(secs[1] / secs[0])

    print()
    majority = max(holdout.defect_rate, 1 - holdout.defect_rate)
    print(
        f"{args.suppliers} suppliers ({sum(len(p) for p in parts)} shots), held-out"
        f" {len(holdout)} shots (defect rate {holdout.defect_rate:.3f}, majority-class accuracy"
        f" {majority:.4f}); {args.rounds} rounds, {s.local_epochs} local epoch, MLP {s.hidden};"
        f" load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    print()
    print("| setting | accuracy | AUC | s / round | ε (δ=1e-5) | notes |")
    print("|---|---:|---:|---:|---:|---|")
    for r in rows:
        eps = f"{r['epsilon']:.1f}" if r.get("epsilon") is not None else "–"
        eps += " (shot)" if r.get("epsilon") is not None and r["level"] == "sample" else ""
        spr = f"{r['s_per_round']:.2f}" if r.get("s_per_round") is not None else "–"
        acc, auc, note = r["accuracy"], r["auc"], r.get("detail", "")
        print(f"| {r['setting']} | {acc:.4f} | {auc:.4f} | {spr} | {eps} | {note} |")
    for r in rows:  # what each ε means for a supplier (federated/privacy.py)
        if r.get("epsilon") is not None:
            print(f"- {r['setting']}: {epsilon_reading(r['epsilon'], 1e-5, level=r['level'])}")
    by_name = {r["setting"].split(" (")[0]: r for r in rows}
    central, fedavg = rows[0], by_name["FedAvg"]
    gap = 100 * (fedavg["accuracy"] - central["accuracy"])
    print()
    print(f"- FedAvg minus centralised accuracy: {gap:+.2f} points (goal: >= -1)")
    for engine, plain, secure in (
        ("simulation", "FedAvg", "FedAvg + SecAgg+"),
        ("deployment", "FedAvg, deployment engine", "FedAvg + SecAgg+, deployment engine"),
    ):
        if plain in by_name and secure in by_name:
            ratio = by_name[secure]["s_per_round"] / by_name[plain]["s_per_round"]
            line = f"- SecAgg+ / FedAvg s per round, {engine} engine: {ratio:.2f}x in the table"
            if len(ratios[engine]) > 1:
                pairs = ratios[engine]
                line += (
                    f"; median of {len(pairs)} measurements {statistics.median(pairs):.2f}x"
                    f" (range {min(pairs):.2f}-{max(pairs):.2f}x)"
                )
            print(line + " (goal: <= 2)")
    four = "FedAvg + SecAgg+, Flower's four stages every round"
    if four in by_name:
        ratio = by_name[four]["s_per_round"] / by_name["FedAvg"]["s_per_round"]
        line = f"  (for comparison, Flower's four stages every round: {ratio:.2f}x in the table"
        if ratios[FOUR_STAGES]:
            pairs = ratios[FOUR_STAGES]
            line += (
                f"; median of {len(pairs)} measurements {statistics.median(pairs):.2f}x"
                f" (range {min(pairs):.2f}-{max(pairs):.2f}x)"
            )
        print(line + ")")
    if "FedAvg, deployment engine" in by_name:
        print(
            f"- deployment round, {args.deploy_suppliers} SuperNodes: "
            f"{by_name['FedAvg, deployment engine']['s_per_round']:.2f} s (goal < 10)"
        )
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "secagg_ratios": ratios}, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
