"""A supplier that poisons its update, played through the simulation engine.

One of 8 suppliers sends ``global + factor * (its update - global)`` (federated.faults.poison_mod,
inside its ClientApp where its own code would be, so before SecAgg+ masks it and without the
clipping an honest ClientApp does). Plain FedAvg is dragged down; the robust aggregator keeps the
pooled hold-out accuracy within 2 points of the clean run. Under SecAgg+ the server cannot see
updates: it refuses an aggregate longer than the clip bound or one that raises its own hold-out
loss (the model is kept, not poisoned: a persistent attacker can stop training, not steer it),
and a poisoner that stays within the clip bound is limited, not removed (measured: 4.3 points).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from federated.config import FLConfig, ServerSettings
from federated.faults import poison_mod
from federated.run import FLRunResult, simulate

pytestmark = pytest.mark.slow

SUPPLIERS = 8
ROUNDS = 8
TOLERANCE = 0.02  # the "within 2 points of the clean run"
# What a poisoner that clips (and so passes SecAgg+'s checks) may cost: measured 0.043.
BOUNDED_COST = 0.06
ATTACKER = [0]  # simulation partition 0: one supplier of eight


def _run(tmp_path: Path, name: str, factor: float | None = None, **server: object) -> FLRunResult:
    settings = ServerSettings(
        rounds=ROUNDS,
        min_available_clients=SUPPLIERS,
        min_fit_clients=SUPPLIERS - 1,
        round_timeout=120.0,
        connect_timeout=120.0,
        **server,  # type: ignore[arg-type]
    )
    config = FLConfig(
        suppliers=SUPPLIERS,
        data_dir=tmp_path / "data",  # the same partitions for every run
        out_dir=tmp_path / name,
        data_seed=11,
        server=settings,
    )
    mods = [poison_mod(ATTACKER, factor)] if factor is not None else []
    return simulate(config, inner_mods=mods)


def _accuracy(result: FLRunResult) -> float:
    return float(result.final_metrics["accuracy"])


def test_a_robust_aggregator_holds_where_fedavg_is_dragged_down(tmp_path: Path) -> None:
    # Each rule against its own clean run: what the attacker changes, not what the rule costs.
    clean = _accuracy(_run(tmp_path, "clean"))
    undefended = _accuracy(_run(tmp_path, "fedavg-flip", -10.0))
    assert undefended < clean - TOLERANCE, (undefended, clean)
    trimmed_clean = _accuracy(_run(tmp_path, "trimmed", aggregation="trimmed-mean"))
    assert abs(trimmed_clean - clean) <= TOLERANCE, (trimmed_clean, clean)
    for factor in (-10.0, 10.0):  # a scaled sign flip, a scaled update
        defended = _accuracy(_run(tmp_path, f"trimmed{factor}", factor, aggregation="trimmed-mean"))
        assert abs(defended - trimmed_clean) <= TOLERANCE, (factor, defended, trimmed_clean)


def test_under_secagg_a_poisoned_aggregate_is_refused_never_adopted(tmp_path: Path) -> None:
    clean = _run(tmp_path, "clean", secagg=True)
    assert all(r.status == "aggregated" for r in clean.rounds[1:])
    attacked = _run(tmp_path, "scaled", -10.0, secagg=True)
    refused = [r for r in attacked.rounds[1:] if r.status == "skipped"]
    # The server cannot see who did it, but refuses what it would adopt: an aggregate longer
    # than the clip bound, or one that raises its own hold-out loss.
    assert refused, [(r.status, r.note) for r in attacked.rounds]
    assert all("clip bound" in r.note or "hold-out loss" in r.note for r in refused)
    # Every model the OEM adopted is no worse on its hold-out set than the one before it.
    losses = [r.metrics["loss"] for r in attacked.rounds]
    assert all(b <= a * 1.05 for a, b in itertools.pairwise(losses)), losses
    assert _accuracy(attacked) >= float(attacked.rounds[0].metrics["accuracy"]) - TOLERANCE
    # A poisoner that stays within the bound (a sign flip of its clipped update) passes the norm
    # check; the hold-out check takes some of its rounds and refuses others. The bound limits
    # what it can do, it does not remove it (docs/federated.md): measured 4.3 points over 8
    # rounds of 8 suppliers, held here under BOUNDED_COST, against 67 points for the same flip
    # scaled x10 under FedAvg.
    bounded = _run(tmp_path, "flipped", -1.0, secagg=True)
    assert not any("clip bound" in r.note for r in bounded.rounds[1:])
    assert _accuracy(clean) - _accuracy(bounded) <= BOUNDED_COST
