"""Sample-level DP: each supplier's local DP-SGD (opacus), its ε and the reading of that ε.

The adversary is the OEM, who knows the run's seed and each supplier's id: the noise must be
there (the update differs from the non-DP one trained from the same seed) and must not be
reproducible from what the OEM knows (two runs from the same seed differ).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.fl import DpLevel, _settings
from cli.fl import app as fl_cli
from federated.client_app import local_update
from federated.config import ServerSettings
from federated.data import Partition, generate_partitions, load_partition, partition_dirs
from federated.model import get_arrays, new_model, parse_model_bytes
from federated.privacy import epsilon_reading, sample_level_epsilon
from federated.server_app import sample_epsilon, train_config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fl-dp-data")
    generate_partitions(3, 3, root)
    return root


def _norm(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return math.sqrt(sum(float(((x - y) ** 2).sum()) for x, y in zip(a, b, strict=True)))


def _config(s: ServerSettings, rnd: int = 1) -> dict[str, object]:
    return {**dict(train_config(s)), "server-round": rnd}


def test_noise_is_applied_and_the_oem_cannot_regenerate_it(data_dir: Path) -> None:
    part = load_partition(partition_dirs(data_dir)[0])
    s = ServerSettings(hidden=(8, 4), sample_dp_noise=1.0, sample_dp_clip=1.0)
    start = get_arrays(new_model(s.hidden, seed=3))
    plain_cfg = _config(ServerSettings(hidden=(8, 4)))
    plain, _ = local_update(part, start, plain_cfg)
    again, _ = local_update(part, start, plain_cfg)
    assert _norm(plain, again) == 0.0  # without DP, the same seed gives the same update

    dp_a, metrics = local_update(part, start, _config(s))
    dp_b, _ = local_update(part, start, _config(s))
    assert all(np.isfinite(x).all() for x in dp_a)
    assert math.isfinite(metrics["train-loss"])
    # The DP update is not the plain one, and the same seed does not give the same noise:
    # the OEM, who knows the seed and the supplier id, cannot subtract it.
    assert _norm(dp_a, plain) > 1e-3
    assert _norm(dp_a, dp_b) > 1e-3
    # The noise scales with the multiplier: at z = 20 the update is dominated by it.
    loud = ServerSettings(hidden=(8, 4), sample_dp_noise=20.0, sample_dp_clip=1.0)
    dp_loud, _ = local_update(part, start, _config(loud))
    assert _norm(dp_loud, start) > 3 * _norm(dp_a, start)


def test_too_few_shots_for_the_sampling_rate_are_refused(data_dir: Path) -> None:
    full = load_partition(partition_dirs(data_dir)[0])
    tiny = Partition(full.supplier_id, full.X[:5], full.y[:5])
    s = ServerSettings(hidden=(8, 4), sample_dp_noise=1.0, sample_dp_steps=20)
    with pytest.raises(ValueError, match="at least 20 shots"):
        local_update(tiny, get_arrays(new_model(s.hidden, seed=3)), _config(s))


def test_sample_level_epsilon_is_finite_and_composes() -> None:
    one = sample_level_epsilon(1.0, 20, 20, 1e-5)
    ten = sample_level_epsilon(1.0, 20, 200, 1e-5)
    assert 0 < one < ten < 10 and math.isfinite(ten)
    # More noise, less ε; a higher sampling rate (fewer steps an epoch), more ε per epoch.
    assert sample_level_epsilon(2.0, 20, 200, 1e-5) < ten < sample_level_epsilon(1.0, 10, 100, 1e-5)
    assert sample_level_epsilon(1.0, 20, 0, 1e-5) == 0.0
    # The documented defaults: z = 1.0, 20 steps an epoch, 1 local epoch, δ = 1e-5.
    s = ServerSettings(sample_dp_noise=1.0)
    assert sample_epsilon(s, 10) == pytest.approx(5.37, abs=0.01)
    assert sample_epsilon(s, 20) == pytest.approx(7.42, abs=0.01)
    # Every round a supplier trained in counts, and local epochs multiply the steps.
    two_epochs = ServerSettings(sample_dp_noise=1.0, local_epochs=2)
    assert sample_epsilon(two_epochs, 5) == pytest.approx(sample_epsilon(s, 10))


@pytest.mark.parametrize(
    ("epsilon", "band"),
    [
        (0.3, "strong"),
        (1.0, "strong"),
        (1.01, "moderate"),
        (5.37, "moderate"),
        (10.0, "moderate"),
        (10.01, "no meaningful formal guarantee"),
        (244.0, "no meaningful formal guarantee"),
    ],
)
def test_reading_thresholds_for_both_units(epsilon: float, band: str) -> None:
    client = epsilon_reading(epsilon, 1e-5)
    sample = epsilon_reading(epsilon, 1e-5, level="sample")
    assert band in client and band in sample
    if band == "no meaningful formal guarantee":
        assert "individual supplier" in client and "individual shot record" in sample
    else:
        assert "one supplier's participation" in client
        assert "one shot record" in sample
        assert f"{math.exp(epsilon):,.3g}x" in sample
    with pytest.raises(ValueError, match="level"):
        epsilon_reading(epsilon, 1e-5, level="supplier")  # type: ignore[arg-type]


def test_cli_dp_levels_and_defaults() -> None:
    def settings(dp: DpLevel, noise: float | None = None, clip: float | None = None) -> object:
        return _settings(2, False, noise, clip, None, 8, 60.0, 1, 7, "fedavg", dp)

    sample = settings(DpLevel.sample)
    assert isinstance(sample, ServerSettings)
    assert (sample.sample_dp_noise, sample.sample_dp_clip, sample.dp_noise) == (1.0, 1.0, 0.0)
    client = settings(DpLevel.client)
    assert isinstance(client, ServerSettings)
    assert (client.dp_noise, client.dp_clip, client.sample_dp_noise) == (1.0, 0.5, 0.0)
    # --dp-noise alone keeps its old meaning (client-level); no option, no DP.
    old = settings(DpLevel.none, 0.8)
    assert isinstance(old, ServerSettings) and old.dp_noise == 0.8 and not old.sample_dp
    off = settings(DpLevel.none)
    assert isinstance(off, ServerSettings) and not off.dp and not off.sample_dp
    tuned = settings(DpLevel.sample, 1.5, 0.7)
    assert isinstance(tuned, ServerSettings)
    assert (tuned.sample_dp_noise, tuned.sample_dp_clip) == (1.5, 0.7)
    with pytest.raises(ValueError):
        ServerSettings(sample_dp_noise=1.0, sample_dp_steps=0)


@pytest.mark.slow
def test_simulated_sample_dp_run_reports_epsilon_and_its_reading(tmp_path: Path) -> None:
    out = CliRunner().invoke(
        fl_cli,
        [
            "simulate",
            "--suppliers",
            "3",
            "--rounds",
            "2",
            "--dp",
            "sample",
            "--partitions-dir",
            str(tmp_path / "data"),
            "--out-dir",
            str(tmp_path / "run"),
            "--chain",
            "none",
            "--json",
        ],
    )
    assert out.exit_code == 0, out.output
    result = json.loads(out.output[out.output.index("{") :])
    privacy = result["summary"]["sample_privacy"]
    s = ServerSettings(sample_dp_noise=1.0)
    assert result["sample_epsilon"] == pytest.approx(sample_epsilon(s, 2))
    assert math.isfinite(result["sample_epsilon"]) and result["epsilon"] is None
    assert privacy["reading"] == epsilon_reading(privacy["epsilon"], 1e-5, level="sample")
    assert "moderate" in privacy["reading"]
    eps = [r["sample_epsilon"] for r in result["rounds"][1:]]
    assert eps == pytest.approx([sample_epsilon(s, 1), sample_epsilon(s, 2)])
    # Noise was applied inside the run: round 1's model is not the FedAvg of the suppliers'
    # non-DP updates from the same start and seed (recomputed here).
    run = tmp_path / "run"
    start = parse_model_bytes((run / "models" / "round-0000.qlm").read_bytes())[1]
    got = parse_model_bytes((run / "models" / "round-0001.qlm").read_bytes())[1]
    plain_cfg = _config(ServerSettings(seed=7))
    updates, weights = [], []
    for d in partition_dirs(tmp_path / "data"):
        arrays, metrics = local_update(load_partition(d), start, plain_cfg)
        updates.append(arrays)
        weights.append(metrics["weight"])
    plain_mean = [
        sum(w * u[i] for w, u in zip(weights, updates, strict=True)) / sum(weights)
        for i in range(len(start))
    ]
    assert _norm(got, plain_mean) > 1e-3
    assert _norm(got, start) > 0  # and it did train
