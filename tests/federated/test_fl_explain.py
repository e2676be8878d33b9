"""Root-cause hints (`qledger fl explain`): on simulated drifts whose cause is known, every spike
the analysis offers as a hint must rank the drifted parameter first, over several consortia; the
Shapley values must be exact (checked against shap's own exact explainer) and add up to the rise
the model predicts; a line's chronic cause must not take the drift's place; and the supplier's
side refuses what an adversary would try (a model that is not the anchored one, another
supplier's analysis in its 8D, a draft of another kind).

The model is the consortium's federated model: FedAvg over the 8 simulated suppliers of the
same local update the ClientApp runs (federated.client_app.local_update), averaged as Flower's
FedAvg does, without starting the Flower engine (test_fl_simulation.py covers the engine; the
slow test at the end explains a model from a real simulated, anchored run).
"""

from __future__ import annotations

import dataclasses
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
    FEATURE_NAMES,
    NUMERIC_FEATURES,
    Drift,
    Partition,
    _defect_logit,
    generate_partitions,
    load_partition,
    make_profiles,
    partition_dirs,
    sample_supplier,
    save_partition,
    supplier_log,
)
from federated.explain import (
    ACCOUNTED_MIN,
    PLAYERS,
    ExplainError,
    attach_to_draft,
    coalition_values,
    explain_defects,
    shapley,
)
from federated.model import FLModel, get_arrays, load_model, new_model, predict_proba, save_model
from federated.provenance import load_anchored_model
from federated.run import simulate
from federated.server_app import train_config
from ledger.chain import ChainClient

SUPPLIERS, SEED = 8, 11
# A spike an 8D is opened for: the defect rate of the recent half of the log at least this
# much above the half before (absolute).
SPIKE = 0.10


def _fedavg(root: Path, rounds: int, seed: int = SEED) -> tuple[Path, FLModel]:
    torch.set_num_threads(1)  # the ClientApp's setting; threads only contend on 2 cores
    generate_partitions(SUPPLIERS, seed, root / "data")
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


# A mechanism the consortium's training data rarely shows: it adds at least 1 to the true
# defect log-odds in fewer than this share of the training shots. Measured (_exposure) for the
# drifted parameters: short cycle times 1.0-4.8% of the shots at seeds 11, 7, 5, 3, short hold
# times 0.4-0.6% at 11 and 3 (6.3% at 5, 12.8% at 7), low hold pressure 5.0-10.3% (4.97% at 7);
# the other mechanisms 7.6-51%.
RARE = 0.05


def _exposure(training: np.ndarray) -> dict[str, float]:
    """For each process parameter, the share of ``training`` shots in which it alone adds at
    least 1 to the simulator's true defect log-odds (the known truth, as against the parameter
    at its schema centre, which no mechanism punishes)."""
    cols = {name: training[:, i].astype(np.float64) for i, name in enumerate(FEATURE_NAMES)}
    logit = _defect_logit(cols)
    share = {}
    for f in NUMERIC_FEATURES:
        centred = {**cols, f.name: np.full(len(training), f.center)}
        share[f.name] = round(float((logit - _defect_logit(centred) >= 1.0).mean()), 4)
    return share


@pytest.mark.slow
@pytest.mark.parametrize(
    "seed",
    [11, pytest.param(7, marks=pytest.mark.extended), pytest.param(5, marks=pytest.mark.extended)],
)
def test_every_hint_ranks_the_drifted_parameter_first(tmp_path: Path, seed: int) -> None:
    """Three consortia (data seeds), each with its own 40-round FedAvg model; in each, every
    harmful parameter drifted at every supplier (64 logs of 800 shots, the recent half drifted
    by 1.5 schema scales), and every log whose defect rate spikes explained by its recent half.

    Every spike the analysis offers as a root-cause hint (the model predicts at least
    ACCOUNTED_MIN of the rise) must rank the drifted parameter first, with the direction that
    undoes the drift, and moving it alone back to its reference distribution must lower the
    predicted defect rate; the contributions must add up to the predicted rise. Every other spike
    must carry the note that its ranking is no hint.

    How many are flagged (measured, docs/federated.md "Root-cause hints"): seed 11: 54 spikes,
    39 hinted, 15 flagged; seed 7: 57, 37, 20; seed 5: 56, 28, 28. Why: the model learnt from
    the lines' normal running, and a drift of 1.5 scales takes a parameter beyond where any line
    runs, so the model extrapolates; it extrapolates a mechanism well where the training shots
    show it clearly and badly where they rarely do (RARE: short cycle and hold times, mostly).
    So the flagged share is highest for the rarely shown mechanisms, which the test checks."""
    _, model = _fedavg(tmp_path, 40, seed)
    training = np.concatenate([load_partition(d).X for d in partition_dirs(tmp_path / "data")])
    exposure = _exposure(training)
    rare = {f for f, share in exposure.items() if share < RARE}
    ids = [f"SUP-{k:05d}" for k in range(1, SUPPLIERS + 1)]
    spikes: list[tuple[str, str]] = []
    flagged: list[tuple[str, str, float]] = []
    hinted: set[str] = set()
    for k, feature in enumerate(DRIFT_DIRECTIONS):
        for supplier in ids:
            drift = Drift.harmful(supplier, feature, 1.5)
            log = supplier_log(SUPPLIERS, seed, supplier, 800, log_seed=k, drift=drift)
            before, after = log.y[:400].mean(), log.y[400:].mean()
            if after - before < SPIKE:
                continue  # no spike: no 8D would be opened
            spikes.append((feature, supplier))
            analysis = explain_defects(model, log, recent=0.5)
            assert analysis.observed_rise == pytest.approx(after - before, abs=1e-6)
            assert analysis.accounted is not None and analysis.predicted_rise is not None
            # Efficiency: the contributions are the predicted rise, split among the players.
            total = sum(d.contribution for d in analysis.drivers) + analysis.other
            assert total == pytest.approx(analysis.predicted_gap, abs=1e-5)
            assert analysis.predicted_gap == pytest.approx(analysis.predicted_rise, abs=2e-3)
            if analysis.accounted < ACCOUNTED_MIN:
                assert "not a root-cause hint" in analysis.note
                flagged.append((feature, supplier, analysis.accounted))
                continue
            assert analysis.note == ""
            hinted.add(feature)
            first = analysis.drivers[0]
            assert first.feature == feature, (supplier, analysis.drivers)
            assert first.direction == ("lower" if drift.shift > 0 else "raise")
            assert first.risk_if_moved < first.risk_now
    print(
        f"seed {seed}: {len(spikes)} spikes, {len(spikes) - len(flagged)} hinted (each with the "
        f"drifted parameter first), {len(flagged)} flagged {flagged}; mechanism shown in "
        f"{exposure} of the training shots"
    )
    # Most spikes get a hint, over most parameters.
    assert len(spikes) >= 40 and len(spikes) - len(flagged) >= 25 and len(hinted) >= 5
    assert len(flagged) <= len(spikes) // 2
    # The rarely shown mechanisms' spikes are flagged more often than the others'.
    rare_spikes = [s for s in spikes if s[0] in rare]
    rare_flagged = [f for f in flagged if f[0] in rare]
    assert rare_spikes, exposure
    assert len(rare_flagged) / len(rare_spikes) > (len(flagged) - len(rare_flagged)) / (
        len(spikes) - len(rare_spikes)
    )


def test_one_spike_end_to_end_and_what_the_analysis_holds(
    consortium: tuple[Path, FLModel],
) -> None:
    _, model = consortium
    drift = Drift.harmful("SUP-00003", "vibration_mm_s", 1.5)
    log = supplier_log(SUPPLIERS, SEED, "SUP-00003", 800, log_seed=1, drift=drift)
    analysis = explain_defects(model, log, recent=0.5)
    first = analysis.drivers[0]
    assert first.feature == "vibration_mm_s" and first.direction == "lower"
    assert first.risk_if_moved < first.risk_now
    assert analysis.accounted is not None and analysis.accounted >= ACCOUNTED_MIN
    assert analysis.model_hash == model.hash_hex and analysis.supplier_id == "SUP-00003"
    assert analysis.reference == "shots before the spike window"
    assert analysis.explained == 400 and analysis.reference_shots == 400
    assert {d.feature for d in analysis.drivers} == set(DRIFT_DIRECTIONS) | {"humidity_pct"}
    # The contributions add up to the rise the model predicts, which is mostly vibration's.
    total = sum(d.contribution for d in analysis.drivers) + analysis.other
    assert total == pytest.approx(analysis.predicted_gap, abs=1e-5)
    assert analysis.predicted_gap == pytest.approx(analysis.predicted_rise, abs=2e-3)
    assert first.share > 0.8
    # The analysis is deterministic: same data, same model, same bytes and hash.
    again = explain_defects(model, log, recent=0.5)
    assert again.to_json() == analysis.to_json() and again.sha256 == analysis.sha256
    assert json.loads(analysis.to_json())["format"] == "qledger.fl-explain/2"
    # The undrifted log of the same supplier explains its defective shots against its good ones;
    # whatever ranks there, moving vibration back lowers predicted risk less than undoing the
    # drift does.
    clean = supplier_log(SUPPLIERS, SEED, "SUP-00003", 800, log_seed=1)
    base = explain_defects(model, clean)
    assert base.reference == "good shots" and base.explained == base.defective
    vib = next(d for d in base.drivers if d.feature == "vibration_mm_s")
    assert vib.risk_now - vib.risk_if_moved < first.risk_now - first.risk_if_moved


def test_a_chronic_cause_does_not_take_the_drifts_place(consortium: tuple[Path, FLModel]) -> None:
    """The case DeepExplainer got wrong: a line that vibrates strongly all along (most of its
    defects are vibration's), whose hold pressure then drifts low. The spike is the hold
    pressure's; vibration did not change. Explaining the spike's defective shots selects shots
    that vibrate (the first version ranked vibration first here, 1.54 against 0.55 log-odds); the
    exact Shapley values of the window against the shots before give vibration only what its
    sample happened to differ by. Asked instead what sets the line's defective shots apart from
    its good ones before the drift, the same method names vibration: it is the chronic cause."""
    _, model = consortium
    profile = next(p for p in make_profiles(SUPPLIERS, SEED) if p.supplier_id == "SUP-00001")
    shaky = dataclasses.replace(profile, vibration_median=4.0)  # the line's own is 2.1 mm/s
    drift = Drift.harmful("SUP-00001", "hold_pressure_bar", 1.5)
    log = sample_supplier(shaky, 800, np.random.default_rng([SEED, 2, 0xD1]), drift)
    assert log.y[400:].mean() - log.y[:400].mean() >= SPIKE
    analysis = explain_defects(model, log, recent=0.5)
    ranked = {d.feature: d for d in analysis.drivers}
    assert analysis.drivers[0].feature == "hold_pressure_bar"
    assert analysis.drivers[0].direction == "raise"
    assert ranked["vibration_mm_s"].contribution < 0.5 * analysis.drivers[0].contribution
    # This short run's model predicts about a third of the rise (the 40-round model of the slow
    # test, over half): the analysis says its ranking is no hint, even though it is right.
    assert analysis.accounted is not None
    assert (analysis.accounted < ACCOUNTED_MIN) == ("not a root-cause hint" in analysis.note)
    before = Partition(log.supplier_id, log.X[:400], log.y[:400])
    chronic = explain_defects(model, before)
    assert chronic.drivers[0].feature == "vibration_mm_s"
    assert chronic.drivers[0].direction == "lower"


def test_the_shapley_values_are_exact(consortium: tuple[Path, FLModel]) -> None:
    """Against an independent implementation: shap's ExactExplainer with the reference shots as
    an independent masker computes, for each explained shot, the Shapley value of the
    interventional game averaged over every reference shot; their mean is what coalition_values
    + shapley give when every explained shot is paired with every reference shot. The material
    and machine columns are held equal on both sides (so shap, which sees the nine process
    parameters only, and the "other" player agree: it gets exactly nothing)."""
    shap = pytest.importorskip("shap")
    _, model = consortium
    drift = Drift.harmful("SUP-00006", "tool_wear_pct", 1.5)
    log = supplier_log(SUPPLIERS, SEED, "SUP-00006", 800, log_seed=6, drift=drift)
    numeric = [FEATURE_NAMES.index(f.name) for f in NUMERIC_FEATURES]
    template = log.X[0].copy()
    explained, reference = log.X[-6:].copy(), log.X[:16].copy()
    for rows in (explained, reference):
        rows[:, [i for i in range(len(FEATURE_NAMES)) if i not in numeric]] = np.delete(
            template, numeric
        )

    def proba(z: np.ndarray) -> np.ndarray:
        x = np.tile(template, (len(z), 1))
        x[:, numeric] = z
        return predict_proba(model.module, x)

    masker = shap.maskers.Independent(reference[:, numeric], max_samples=len(reference))
    expected = shap.explainers.Exact(proba, masker)(explained[:, numeric]).values.mean(axis=0)
    pair_explained = np.repeat(np.arange(len(explained)), len(reference))
    pair_reference = np.tile(np.arange(len(reference)), len(explained))
    values = coalition_values(model.module, explained, reference, pair_explained, pair_reference)
    phi = shapley(values)
    assert PLAYERS[-1] == "other" and phi[-1] == 0.0
    np.testing.assert_allclose(phi[:-1], expected, atol=1e-9)
    # Efficiency: the full and the empty coalition are the two sides' mean predictions.
    assert values[-1] == pytest.approx(proba(explained[:, numeric]).mean(), abs=1e-7)
    assert values[0] == pytest.approx(proba(reference[:, numeric]).mean(), abs=1e-7)
    assert phi.sum() == pytest.approx(values[-1] - values[0], abs=1e-12)
    # A game of the wrong size is refused rather than read as another.
    with pytest.raises(ValueError, match="2\\^n"):
        shapley(values[:-1])


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
