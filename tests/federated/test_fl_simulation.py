"""Federated runs in Flower's simulation engine (Ray): tiny data, a few rounds each.

Each test starts the engine once (~15-25 s on the 2-core CI machine), so each covers one
behaviour end to end: convergence + anchoring, SecAgg+ (masked server view, dropout recovery),
plain dropout / minimum-replies, DP accounting, and the CLI.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Message
from flwr.common import bytes_to_ndarray
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from typer.testing import CliRunner

from cli.fl import app as fl_cli
from federated.client_app import local_update
from federated.config import FLConfig, ServerSettings
from federated.data import HOLDOUT_DIR, load_partition, partition_dirs
from federated.faults import dropout_mod, forget_keys_mod
from federated.model import load_model, parse_model_bytes
from federated.provenance import (
    load_anchored_model,
    participants_root,
    verify_participation,
    verify_run,
)
from federated.run import simulate
from federated.secagg import SECAGG_STAGES
from federated.secagg_ahead import ADVERTISE_RECORD, NEXT_SHARES_RECORD
from federated.server_app import projected_epsilon, train_config
from ledger.chain import ChainClient

pytestmark = pytest.mark.slow


# These tests check the SecAgg+ protocol itself (exact sums, stages, dropouts); the poisoning
# defences that change or refuse an aggregate are tested in test_fl_poisoning.py.
NO_DEFENCES = {"secagg_update_clip": 0.0, "secagg_holdout_check": 0.0}


def config(tmp_path: Path, n: int = 3, **server: object) -> FLConfig:
    settings = ServerSettings(
        rounds=int(server.pop("rounds", 3)),  # type: ignore[call-overload]
        min_available_clients=n,
        min_fit_clients=2,
        round_timeout=float(server.pop("round_timeout", 60.0)),  # type: ignore[arg-type]
        connect_timeout=60.0,
        **server,  # type: ignore[arg-type]
    )
    return FLConfig(
        suppliers=n,
        data_dir=tmp_path / "data",
        out_dir=tmp_path / "run",
        data_seed=3,
        server=settings,
    )


def arrays_of(path: Path) -> list[np.ndarray]:
    return parse_model_bytes(path.read_bytes())[1]


def expected_mean(
    data: Path, suppliers: list[str], start: list[np.ndarray], s: ServerSettings, rnd: int
) -> list[np.ndarray]:
    """FedAvg of the suppliers' local updates, recomputed here (local training is seeded)."""
    cfg = {**dict(train_config(s)), "server-round": rnd}
    updates, weights = [], []
    for sid in suppliers:
        arrays, metrics = local_update(load_partition(data / sid), start, cfg)
        updates.append(arrays)
        weights.append(metrics["weight"])
    total = sum(weights)
    return [
        sum(w * u[k] for w, u in zip(weights, updates, strict=True)) / total
        for k in range(len(start))
    ]


def test_fedavg_converges_anchors_and_matches_saved_models(
    tmp_path: Path, inprocess_chain: ChainClient
) -> None:
    seen = []
    result = simulate(config(tmp_path, rounds=4), chain=inprocess_chain, on_round=seen.append)

    # Progress was reported round by round, round 0 being the initial model.
    assert [r.round for r in seen] == [0, 1, 2, 3, 4]
    holdout = load_partition(tmp_path / "data" / HOLDOUT_DIR)
    majority = max(holdout.defect_rate, 1 - holdout.defect_rate)
    final, initial = result.final_metrics, result.rounds[0].metrics
    assert final["accuracy"] > majority + 0.01, (final, majority)
    assert final["auc"] > 0.75 and final["auc"] > initial["auc"] + 0.05, (final, initial)

    # Every aggregated round is anchored, and chain, records and files agree.
    suppliers = sorted(p.name for p in partition_dirs(tmp_path / "data"))
    assert all(r.status == "aggregated" and r.anchored for r in result.rounds[1:])
    assert (
        verify_run(
            inprocess_chain, result.run_id, result.rounds, result.run_dir, result.final_model_path
        )
        == []
    )
    onchain = inprocess_chain.model_round(result.run_id, 4)
    assert onchain is not None
    assert onchain["participants"] == 3
    assert onchain["participants_root"] == participants_root(suppliers)
    model = load_model(result.final_model_path, expected_hash=onchain["model_hash"])
    assert model.hash_hex == result.final_model_hash == result.rounds[-1].model_hash
    # The service's loader accepts the final model and refuses any other file.
    served = load_anchored_model(inprocess_chain, result.run_id, result.final_model_path)
    assert served.model_hash == onchain["model_hash"]
    with pytest.raises(ValueError):
        load_anchored_model(
            inprocess_chain, result.run_id, result.run_dir / result.rounds[1].model_file
        )

    # Participation evidence: every supplier in every round, provable against the anchored root.
    assert sorted(result.participation) == suppliers
    for sid, evidence in result.participation.items():
        assert evidence["rounds_participated"] == evidence["rounds_aggregated"] == 4
        for entry in evidence["rounds"]:
            root = inprocess_chain.model_round(result.run_id, entry["round"])["participants_root"]
            proof = [bytes.fromhex(p[2:]) for p in entry["proof"]]
            assert verify_participation(root, sid, proof)


def test_secagg_server_sees_only_masked_vectors_and_survives_a_dropout(tmp_path: Path) -> None:
    received: list[Message] = []
    cfg = config(tmp_path, rounds=2, secagg=True, round_timeout=10.0, **NO_DEFENCES)
    # Partition 2 (SUP-00003) goes silent in round 2 after it has shared its keys.
    result = simulate(
        cfg, observer=received.append, client_mods=[dropout_mod([2], [2], hang_s=14.0)]
    )
    data = tmp_path / "data"
    s = cfg.server
    r1, r2 = result.rounds[1], result.rounds[2]
    assert r1.participants == ["SUP-00001", "SUP-00002", "SUP-00003"]
    assert (
        r2.status == "aggregated"
        and r2.participants == ["SUP-00001", "SUP-00002"]
        and r2.dropped == 1
    )
    # Each round says where its time went, stage by stage (round 2 rebuilt the dropped
    # supplier's key from its neighbours' shares in the unmask stage). Round 2's keys were set
    # up during round 1 (secagg_ahead.py): its setup and key-sharing stages sent nothing.
    for r in (r1, r2):
        assert set(r.stage_seconds) == set(SECAGG_STAGES)
        assert all(v < r.seconds for v in r.stage_seconds.values()), r.stage_seconds
    assert all(v > 0 for v in r1.stage_seconds.values()), r1.stage_seconds
    assert r2.stage_seconds["setup"] + r2.stage_seconds["share_keys"] < 0.05, r2.stage_seconds

    # What the unmasked sum gives is the weighted mean of exactly the participants' updates
    # (up to SecAgg+'s quantisation): round 2 was recovered without the dropped supplier.
    run = result.run_dir
    start = arrays_of(run / "models" / "round-0000.qlm")
    for got, want in zip(
        arrays_of(run / r1.model_file),
        expected_mean(data, r1.participants, start, s, 1),
        strict=True,
    ):
        np.testing.assert_allclose(got, want, atol=2e-4)
    after1 = arrays_of(run / r1.model_file)
    for got, want in zip(
        arrays_of(run / r2.model_file),
        expected_mean(data, r2.participants, after1, s, 2),
        strict=True,
    ):
        np.testing.assert_allclose(got, want, atol=2e-4)

    # The server's view. No reply carries model arrays in clear ...
    assert all(
        len(arr) == 0
        for m in received
        if m.has_content()
        for arr in m.content.array_records.values()
    )
    masked = [
        m
        for m in received
        if m.has_content()
        and RECORD_KEY_CONFIGS in m.content.config_records
        and Key.MASKED_PARAMETERS in m.content.config_records[RECORD_KEY_CONFIGS]
    ]
    assert len(masked) == 3 + 2  # one masked vector per participant and round
    for index, m in enumerate(masked):
        # ... nor the example count or the loss beside the masked vector ...
        assert m.content.metric_records["fitres.num_examples"]["num_examples"] == 0
        assert set(m.content.config_records["fitres.metrics"]) == {"supplier-id"}
        vectors = [
            bytes_to_ndarray(b)
            for b in m.content.config_records[RECORD_KEY_CONFIGS][Key.MASKED_PARAMETERS]
        ]
        values = np.concatenate([v.ravel() for v in vectors[1:]]).astype(
            np.float64
        )  # [0] = weight factor
        # ... and the masked vector is noise. Unmasked, every coordinate of a quantised update
        # lies within 2**21 +- 2**17 (parameters are far inside SecAgg+'s +-8 range); masked,
        # coordinates are uniform over [0, 2**32): about 6e-5 of them fall in that band.
        in_band = np.mean(np.abs(values - 2**21) < 2**17)
        assert in_band < 0.01, in_band
        assert abs(values.mean() / 2**32 - 0.5) < 0.05
        # It does not correlate with the supplier's actual update either.
        sid = str(m.content.config_records["fitres.metrics"]["supplier-id"])
        rnd = 1 if index < 3 else 2
        base = start if rnd == 1 else after1
        own, _ = local_update(
            load_partition(data / sid), base, {**dict(train_config(s)), "server-round": rnd}
        )
        own_flat = np.concatenate([a.ravel() for a in own])
        assert abs(np.corrcoef(values, own_flat)[0, 1]) < 0.15


def test_secagg_recovers_from_a_supplier_gone_before_key_sharing(tmp_path: Path) -> None:
    # Partition 2 (SUP-00003) does not answer SecAgg+'s setup in round 2: it never shares keys,
    # so nobody holds a share of its key. Flower's own workflow halts such a round at
    # unmasking; ours drops the supplier from the protocol and aggregates the other two.
    # Rounds set up ahead have no setup stage; this is the path of every other round.
    cfg = config(
        tmp_path, rounds=2, secagg=True, round_timeout=6.0, secagg_keys_ahead=False, **NO_DEFENCES
    )
    result = simulate(cfg, client_mods=[dropout_mod([2], [2], hang_s=9.0, before_keys=True)])
    r1, r2 = result.rounds[1], result.rounds[2]
    assert r1.participants == ["SUP-00001", "SUP-00002", "SUP-00003"]
    assert r2.status == "aggregated", r2.note
    assert r2.participants == ["SUP-00001", "SUP-00002"] and r2.dropped == 1
    run, s = result.run_dir, cfg.server
    for got, want in zip(
        arrays_of(run / r2.model_file),
        expected_mean(tmp_path / "data", r2.participants, arrays_of(run / r1.model_file), s, 2),
        strict=True,
    ):
        np.testing.assert_allclose(got, want, atol=2e-4)


def test_secagg_keys_ahead_and_a_supplier_that_lost_them(tmp_path: Path) -> None:
    # Each round's keys are set up during the previous one (advertised with the masked vectors,
    # shared with the unmask shares), so a round after the first needs no setup or key-sharing
    # messages. In round 2, partition 2 (SUP-00003) has lost the keys it advertised (a restarted
    # node) when asked to share them for round 3: round 2 is unaffected, and round 3 runs
    # Flower's four stages from a fresh setup. Round 4 is set up ahead again.
    received: list[Message] = []
    cfg = config(tmp_path, rounds=4, secagg=True, round_timeout=20.0, **NO_DEFENCES)
    result = simulate(cfg, observer=received.append, client_mods=[forget_keys_mod([2], [2])])
    everyone = ["SUP-00001", "SUP-00002", "SUP-00003"]
    assert all(r.status == "aggregated" and r.participants == everyone for r in result.rounds[1:])
    records = [json.loads(line) for line in (result.run_dir / "rounds.jsonl").open()][1:]
    assert [r["keys_set_up_ahead"] for r in records] == [False, True, False, True]

    def replies(record: str, key: str) -> dict[int, int]:
        per_round: dict[int, int] = {}
        for m in received:
            records = m.content.config_records if m.has_content() else {}
            if record in records and key in records[record]:
                rnd = int(m.metadata.group_id)
                per_round[rnd] = per_round.get(rnd, 0) + 1
        return per_round

    # Flower's setup and key-sharing answers only in the rounds not set up ahead ...
    assert replies(RECORD_KEY_CONFIGS, Key.PUBLIC_KEY_1) == {1: 3, 3: 3}
    assert replies(RECORD_KEY_CONFIGS, Key.DESTINATION_LIST) == {1: 3, 3: 3}
    # ... next round's keys with every masked vector but the last round's, and next round's
    # shares with every unmask answer but the last round's and the supplier's that lost them.
    assert replies(ADVERTISE_RECORD, Key.PUBLIC_KEY_1) == {1: 3, 2: 3, 3: 3}
    assert replies(NEXT_SHARES_RECORD, Key.DESTINATION_LIST) == {1: 3, 2: 2, 3: 3}
    # Every round's sum is exactly its participants' mean update: masks set up ahead cancel
    # like any others.
    run, s, data = result.run_dir, cfg.server, tmp_path / "data"
    previous = arrays_of(run / "models" / "round-0000.qlm")
    for rnd, r in enumerate(result.rounds[1:], start=1):
        got = arrays_of(run / r.model_file)
        want = expected_mean(data, r.participants, previous, s, rnd)
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a, b, atol=2e-4)
        previous = got


def test_dropped_client_does_not_hang_and_min_fit_is_enforced(tmp_path: Path) -> None:
    # The timeout leaves a loaded 2-core machine room for a normal round (~1-3 s).
    cfg = config(tmp_path, rounds=3, round_timeout=10.0)
    mods = [dropout_mod([2], [2], hang_s=14.0), dropout_mod([1, 2], [3], hang_s=14.0)]
    started = time.monotonic()
    result = simulate(cfg, client_mods=mods)
    elapsed = time.monotonic() - started
    assert elapsed < 120  # two timed-out rounds of 10 s, not a hang

    r1, r2, r3 = result.rounds[1:]
    assert r1.status == "aggregated" and len(r1.participants) == 3
    # One supplier silent: the round closes at the timeout with the two that answered.
    assert r2.status == "aggregated" and r2.participants == ["SUP-00001", "SUP-00002"]
    assert r2.dropped == 1 and 9.5 < r2.seconds < 14
    # Two silent: fewer than min_fit_clients=2 replies, the model is kept and nothing anchored.
    assert r3.status == "skipped" and len(r3.participants) < 2
    assert r3.model_hash == r2.model_hash and not r3.anchored
    assert result.final_model_hash == r2.model_hash
    assert not result.anchored  # no chain given: hashes computed, nothing anchored
    # Participation evidence counts the rounds each supplier was really in.
    shares = {sid: p["rounds_participated"] for sid, p in result.participation.items()}
    assert shares == {"SUP-00001": 2, "SUP-00002": 2, "SUP-00003": 1}


def test_dp_run_reports_its_privacy_budget(tmp_path: Path) -> None:
    cfg = config(tmp_path, rounds=2, dp_noise=1.0, dp_clip=0.5)
    result = simulate(cfg)
    assert all(r.status == "aggregated" for r in result.rounds[1:])
    assert result.summary["privacy"]["releases"] == 2
    expected = projected_epsilon(cfg.server, population=3, releases=2)
    assert result.epsilon == pytest.approx(expected)
    assert 0 < result.rounds[1].epsilon < result.rounds[2].epsilon == pytest.approx(expected)
    assert result.delta == cfg.server.dp_delta


def test_cli_simulate_prints_rounds_and_final_hash(tmp_path: Path) -> None:
    runner = CliRunner()
    out = runner.invoke(
        fl_cli,
        [
            "simulate",
            "--suppliers",
            "3",
            "--rounds",
            "2",
            "--partitions-dir",
            str(tmp_path / "data"),
            "--out-dir",
            str(tmp_path / "run"),
        ],
    )
    assert out.exit_code == 0, out.output
    assert "round  status" in out.output and "aggregated" in out.output
    final_hash = "0x" + load_model(tmp_path / "run" / "final.qlm").model_hash.hex()
    assert final_hash in out.output
    assert "anchored     True" in out.output
    assert (tmp_path / "data").is_dir()  # the partitions went where --partitions-dir said
