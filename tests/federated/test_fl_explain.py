"""Root-cause hints (`qledger fl explain`): on simulated drifts whose cause is known, the drifted
parameter must rank first; and the supplier's side refuses what an adversary would try (a model
that is not the anchored one, another supplier's analysis in its 8D, a draft of another kind).

The model is the consortium's federated model: FedAvg over the 8 simulated suppliers of the
same local update the ClientApp runs (federated.client_app.local_update), averaged as Flower's
FedAvg does, without starting the Flower engine (test_fl_simulation.py covers the engine; the
slow test below explains a model from a real simulated, anchored run).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cli.fl import app as fl_cli
from federated.client_app import local_update
from federated.config import FLConfig, ServerSettings
from federated.data import (
    DRIFT_DIRECTIONS,
    Drift,
    Partition,
    generate_partitions,
    load_partition,
    partition_dirs,
    save_partition,
    supplier_log,
)
from federated.explain import ACCOUNTED_MIN, ExplainError, attach_to_draft, explain_defects
from federated.model import FLModel, get_arrays, load_model, new_model, predict_proba, save_model
from federated.provenance import load_anchored_model
from federated.run import simulate
from federated.server_app import train_config
from ledger.chain import ChainClient

SUPPLIERS, SEED = 8, 11
# A spike an 8D is opened for: the defect rate of the recent half of the log at least this
# much above the half before (absolute).
SPIKE = 0.10


def _fedavg(root: Path, rounds: int) -> tuple[Path, FLModel]:
    torch.set_num_threads(1)  # the ClientApp's setting; threads only contend on 2 cores
    generate_partitions(SUPPLIERS, SEED, root / "data")
    parts = [load_partition(d) for d in partition_dirs(root / "data")]
    s = ServerSettings()
    arrays = get_arrays(new_model(s.hidden, s.seed))
    for rnd in range(1, rounds + 1):
        cfg = {**dict(train_config(s)), "server-round": rnd}
        updates = [local_update(p, arrays, cfg) for p in parts]
        total = sum(m["weight"] for _, m in updates)
        arrays = [sum(m["weight"] * u[i] for u, m in updates) / total for i in range(len(arrays))]
    digest = save_model(root / "final.qlm", arrays, s.hidden)
    return root, load_model(root / "final.qlm", expected_hash=digest)


@pytest.fixture(scope="module")
def consortium(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, FLModel]:
    """A short run (12 rounds) for the fast tests."""
    return _fedavg(tmp_path_factory.mktemp("fl-explain"), 12)


def _draft(subject: str, kind: str = "corrective_action") -> dict[str, object]:
    now = int(time.time()) - 3600
    return {
        "subject": subject,
        "kind": kind,
        "partNumber": "PN-1",
        "lotId": "LOT-1",
        "eventTime": now,
        "quantity": 0,
        "defects": 0,
        "payload": {
            "complaintId": "CMP-1",
            "status": "open",
            "eightD": {"D0": now, "D1": now},
            "attachments": [{"name": "photo.jpg", "mediaType": "image/jpeg", "sha256": "ab" * 32}],
        },
    }


@pytest.mark.slow
def test_the_drifted_parameter_ranks_first(tmp_path: Path) -> None:
    """Every harmful parameter, drifted at every supplier (64 logs of 800 shots, the recent
    half drifted by 1.5 schema scales), explained with a 40-round FedAvg model. Each log
    whose defect rate spikes is explained by the recent half. Where the model predicts at least
    half of the spike, the drifted parameter must rank first, with the direction that undoes the
    drift, and moving it back must lower the predicted defect rate; where it does not, the
    analysis must say so (never a confident wrong hint)."""
    _, model = _fedavg(tmp_path, 40)
    ids = [f"SUP-{k:05d}" for k in range(1, SUPPLIERS + 1)]
    spikes, misses, quiet, flagged, hinted = 0, [], [], [], set()
    for k, feature in enumerate(DRIFT_DIRECTIONS):
        for supplier in ids:
            drift = Drift.harmful(supplier, feature, 1.5)
            log = supplier_log(SUPPLIERS, SEED, supplier, 800, log_seed=k, drift=drift)
            before, after = log.y[:400].mean(), log.y[400:].mean()
            if after - before < SPIKE:
                quiet.append((feature, supplier))  # no spike: no 8D would be opened
                continue
            spikes += 1
            analysis = explain_defects(model, log, recent=0.5)
            first = analysis.drivers[0]
            assert analysis.observed_rise == pytest.approx(after - before, abs=1e-6)
            assert analysis.accounted is not None
            print(
                f"{feature} at {supplier}: {before:.3f} -> {after:.3f}, model accounts for "
                f"{analysis.accounted:.2f}, first {first.feature}"
            )
            if analysis.accounted < ACCOUNTED_MIN:
                assert "not a root-cause hint" in analysis.note
                flagged.append((feature, supplier, first.feature))
                continue
            assert analysis.note == ""
            hinted.add(feature)
            if first.feature != feature:
                rank = [d.feature for d in analysis.drivers].index(feature) + 1
                misses.append((feature, supplier, first.feature, rank))
                continue
            assert first.direction == ("lower" if drift.shift > 0 else "raise")
            assert first.risk_if_moved < first.risk_now
    print(f"{spikes} spikes; flagged {flagged}; quiet {quiet}")
    print(f"misses {misses}")
    # Most spikes get a hint, across most parameters, and the hints are right: the drifted
    # parameter first in at least 90% of them and never below second (measured figures in
    # docs/federated.md, "Root-cause hints"; most flagged spikes are hold and cycle time, whose
    # short-side regimes the consortium's data barely covers).
    given = spikes - len(flagged)
    assert spikes >= 40 and given >= 30 and len(hinted) >= 6
    assert len(misses) <= given // 10, misses
    assert all(rank == 2 for *_, rank in misses), misses


def test_one_spike_end_to_end_and_what_the_analysis_holds(
    consortium: tuple[Path, FLModel],
) -> None:
    _, model = consortium
    drift = Drift.harmful("SUP-00003", "vibration_mm_s", 1.5)
    log = supplier_log(SUPPLIERS, SEED, "SUP-00003", 800, log_seed=1, drift=drift)
    analysis = explain_defects(model, log, recent=0.5)
    assert analysis.drivers[0].feature == "vibration_mm_s"
    assert analysis.drivers[0].direction == "lower"
    assert analysis.accounted is not None and analysis.accounted >= ACCOUNTED_MIN
    assert analysis.model_hash == model.hash_hex and analysis.supplier_id == "SUP-00003"
    assert analysis.reference == "shots before the spike window"
    assert {d.feature for d in analysis.drivers} == set(DRIFT_DIRECTIONS) | {"humidity_pct"}
    # The analysis is deterministic: same data, same model, same bytes and hash.
    again = explain_defects(model, log, recent=0.5)
    assert again.to_json() == analysis.to_json() and again.sha256 == analysis.sha256
    # The undrifted log of the same supplier does not put vibration first for the same reason:
    # its defective shots are explained against good ones, and whatever ranks, moving it back
    # lowers predicted risk less than undoing the drift does.
    clean = supplier_log(SUPPLIERS, SEED, "SUP-00003", 800, log_seed=1)
    base = explain_defects(model, clean)
    assert base.reference == "good shots"
    drifted_gain = analysis.drivers[0].risk_now - analysis.drivers[0].risk_if_moved
    vib = next(d for d in base.drivers if d.feature == "vibration_mm_s")
    assert vib.risk_now - vib.risk_if_moved < drifted_gain


def test_a_spike_the_model_does_not_predict_is_flagged(consortium: tuple[Path, FLModel]) -> None:
    # Short hold times: a regime the consortium's lines barely run in, which the short run's
    # model has not learnt. The rate rises, the model predicts little of it, and the analysis
    # says its ranking is no hint instead of naming a cause.
    _, model = consortium
    drift = Drift.harmful("SUP-00004", "hold_time_s", 1.5)
    log = supplier_log(SUPPLIERS, SEED, "SUP-00004", 800, log_seed=3, drift=drift)
    analysis = explain_defects(model, log, recent=0.5)
    assert analysis.observed_rise is not None and analysis.observed_rise > SPIKE
    assert analysis.accounted is not None and analysis.accounted < ACCOUNTED_MIN
    assert "not a root-cause hint" in analysis.note


def test_too_few_defective_shots_are_refused(consortium: tuple[Path, FLModel]) -> None:
    _, model = consortium
    log = supplier_log(SUPPLIERS, SEED, "SUP-00001", 400, log_seed=2)
    few = Partition(log.supplier_id, log.X, np.zeros_like(log.y))  # no defective shot at all
    with pytest.raises(ExplainError, match="defective shots"):
        explain_defects(model, few)
    with pytest.raises(ExplainError, match="recent"):
        explain_defects(model, log, recent=0.0)


def test_attachment_carries_only_the_hash_and_refuses_another_suppliers_8d(
    consortium: tuple[Path, FLModel],
) -> None:
    _, model = consortium
    log = supplier_log(SUPPLIERS, SEED, "SUP-00002", 600, log_seed=3)
    analysis = explain_defects(model, log)
    draft = _draft("SUP-00002")
    attached = attach_to_draft(draft, analysis, "fl-explain.json")
    attachments = attached["payload"]["attachments"]
    assert attachments[0]["name"] == "photo.jpg"  # the supplier's other attachments are kept
    assert attachments[1] == {
        "name": "fl-explain.json",
        "mediaType": "application/json",
        "sha256": analysis.sha256,
    }
    # Nothing of the analysis but its hash is in the record.
    text = json.dumps(attached)
    assert analysis.drivers[0].feature not in text and analysis.data_sha256 not in text
    # A re-run replaces its own attachment instead of piling up.
    twice = attach_to_draft(attached, analysis, "fl-explain.json")
    assert len(twice["payload"]["attachments"]) == 2
    # A supplier cannot put its analysis into another supplier's 8D, nor into another record.
    with pytest.raises(ExplainError, match="about 'SUP-00005'"):
        attach_to_draft(_draft("SUP-00005"), analysis, "fl-explain.json")
    with pytest.raises(ExplainError, match="8D"):
        attach_to_draft(_draft("SUP-00002", kind="audit_finding"), analysis, "x.json")
    # An 8D already holding the maximum number of attachments refuses one more.
    full = _draft("SUP-00002")
    full["payload"]["attachments"] = [  # type: ignore[index]
        {"name": f"a{i}", "mediaType": "text/plain", "sha256": "cd" * 32} for i in range(32)
    ]
    with pytest.raises(ExplainError, match="not valid"):
        attach_to_draft(full, analysis, "fl-explain.json")


def test_cli_refuses_a_model_that_is_not_the_anchored_one(
    consortium: tuple[Path, FLModel], tmp_path: Path
) -> None:
    root, model = consortium
    data = save_partition(
        supplier_log(SUPPLIERS, SEED, "SUP-00004", 600, log_seed=4), tmp_path / "mine", {}
    )
    # A model file with one weight changed (e.g. swapped by whoever serves it): its hash is not
    # the anchored one, and nothing is explained or written.
    tampered = tmp_path / "tampered.qlm"
    raw = bytearray((root / "final.qlm").read_bytes())
    raw[-1] ^= 0x01
    tampered.write_bytes(bytes(raw))
    runner = CliRunner()
    out = tmp_path / "analysis.json"
    args = ["explain", "--model", str(tampered), "--data", str(data), "--out", str(out)]
    res = runner.invoke(fl_cli, [*args, "--model-hash", model.hash_hex])
    assert res.exit_code == 1 and "expected" in res.output and not out.exists()
    # Without an anchored hash to check against, it refuses to run at all.
    res = runner.invoke(
        fl_cli, ["explain", "--model", str(root / "final.qlm"), "--data", str(data)]
    )
    assert res.exit_code != 0 and "unanchored" in res.output
    # The anchored file is explained, and the 8D draft gets the analysis's hash.
    draft_path = tmp_path / "8d.json"
    draft_path.write_text(json.dumps(_draft("SUP-00004")))
    good = ["explain", "--model", str(root / "final.qlm"), "--data", str(data), "--out", str(out)]
    res = runner.invoke(
        fl_cli, [*good, "--model-hash", model.hash_hex, "--attach", str(draft_path)]
    )
    assert res.exit_code == 0, res.output
    assert "anchored hash checked" in res.output
    analysis = json.loads(out.read_text())
    assert analysis["supplier_id"] == "SUP-00004" and analysis["model_hash"] == model.hash_hex
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    assert digest in res.output
    names = {
        a["name"]: a["sha256"] for a in json.loads(draft_path.read_text())["payload"]["attachments"]
    }
    assert names["analysis.json"] == digest
    # Another supplier's 8D draft is refused and left as it was.
    other = tmp_path / "other-8d.json"
    other.write_text(json.dumps(_draft("SUP-00001")))
    before = other.read_text()
    res = runner.invoke(fl_cli, [*good, "--model-hash", model.hash_hex, "--attach", str(other)])
    assert res.exit_code == 1 and "refused" in res.output and other.read_text() == before


@pytest.mark.slow
def test_explain_a_simulated_anchored_run(tmp_path: Path, inprocess_chain: ChainClient) -> None:
    """The real path: a Flower simulation anchors its rounds; the supplier loads the final model
    only if it is the anchored one, and explains a drift in its own new log."""
    cfg = FLConfig(suppliers=SUPPLIERS, data_dir=tmp_path / "data", out_dir=tmp_path / "run")
    cfg = cfg.with_server(rounds=8, min_available_clients=SUPPLIERS, min_fit_clients=SUPPLIERS)
    cfg.data_seed = SEED
    result = simulate(cfg, inprocess_chain)
    assert result.anchored
    model = load_anchored_model(inprocess_chain, result.run_id, result.final_model_path)
    drift = Drift.harmful("SUP-00005", "tool_wear_pct", 1.5)
    log = supplier_log(SUPPLIERS, SEED, "SUP-00005", 800, log_seed=5, drift=drift)
    assert log.y[400:].mean() - log.y[:400].mean() >= SPIKE
    analysis = explain_defects(model, log, recent=0.5)
    assert analysis.drivers[0].feature == "tool_wear_pct"
    assert analysis.model_hash == result.final_model_hash
    # The drift is in the supplier's log, and the model predicts its effect.
    assert (
        predict_proba(model.module, log.X[400:]).mean()
        > predict_proba(model.module, log.X[:400]).mean()
    )
