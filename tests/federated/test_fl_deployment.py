"""The deployment engine for real: flower-superlink + 2 flower-supernode processes on 127.0.0.1
with TLS and SuperNode authentication, the app submitted with ``flwr run``."""

from __future__ import annotations

from pathlib import Path

import pytest

from federated.config import FLConfig, ServerSettings
from federated.model import load_model
from federated.provenance import verify_run
from federated.run import deploy_local
from ledger.chain import ChainClient

pytestmark = pytest.mark.slow


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(int(proc.name))
    return found


@pytest.mark.timeout(240)
def test_deployment_engine_with_two_supernodes(
    tmp_path: Path, inprocess_chain: ChainClient
) -> None:
    settings = ServerSettings(
        rounds=2,
        min_available_clients=2,
        min_fit_clients=2,
        round_timeout=90.0,
        connect_timeout=90.0,
    )
    config = FLConfig(
        suppliers=2, data_dir=tmp_path / "data", out_dir=tmp_path / "run", server=settings
    )
    seen = []
    result = deploy_local(config, chain=inprocess_chain, on_round=seen.append)

    assert result.engine == "deployment"
    assert [r.round for r in seen] == [0, 1, 2]
    assert seen[0].roster == ["SUP-00001", "SUP-00002"]
    for rec in result.rounds[1:]:
        assert rec.status == "aggregated" and rec.participants == ["SUP-00001", "SUP-00002"]
        assert rec.anchored
    assert result.final_metrics["auc"] > result.rounds[0].metrics["auc"]
    # Each SuperNode was registered by its own key; deploy_local has checked that every
    # participant's node id is the one registered for the supplier it claimed to be.
    node_ids = result.summary["node_ids"]
    assert sorted(node_ids) == ["SUP-00001", "SUP-00002"] and len(set(node_ids.values())) == 2
    assert (
        verify_run(
            inprocess_chain, result.run_id, result.rounds, result.run_dir, result.final_model_path
        )
        == []
    )
    onchain = inprocess_chain.model_round(result.run_id, 2)
    assert onchain is not None
    assert (
        load_model(result.final_model_path, expected_hash=onchain["model_hash"]).hash_hex
        == result.final_model_hash
    )
    # Each supplier's tasks ran through its own warm SuperExec (process isolation), one forked
    # ClientApp process per message, not through a freshly started flwr-clientapp program.
    logs = result.run_dir / "logs"
    for sid in ("SUP-00001", "SUP-00002"):
        log = (logs / f"superexec-{sid}.log").read_text()
        assert "Starting Flower SuperExec" in log
        assert log.count("started in warm process") == settings.rounds
    # Everything it started is gone, and so are certificates, keys and the Flower home.
    assert _processes_mentioning(str(tmp_path)) == []
    assert _processes_mentioning("superexec_main.py") == []
    assert (logs / "superlink.log").exists()


@pytest.mark.timeout(300)
def test_deployment_secagg_survives_a_supernode_killed_mid_run(tmp_path: Path) -> None:
    """SecAgg+ in the deployment engine, and one supplier's SuperNode (with its SuperExec and any
    ClientApp process) SIGKILLed after round 1: round 2 still aggregates the other three within
    the round timeout, and the killed supplier is recorded as sampled but not participating."""
    settings = ServerSettings(
        rounds=2,
        secagg=True,
        min_available_clients=3,
        min_fit_clients=3,
        round_timeout=15.0,
        connect_timeout=90.0,
    )
    config = FLConfig(
        suppliers=4, data_dir=tmp_path / "data", out_dir=tmp_path / "run", server=settings
    )
    result = deploy_local(config, kill_after_round=("SUP-00004", 1))

    first, second = result.rounds[1], result.rounds[2]
    assert first.status == "aggregated"
    assert first.participants == ["SUP-00001", "SUP-00002", "SUP-00003", "SUP-00004"]
    assert second.status == "aggregated", second.note
    assert second.participants == ["SUP-00001", "SUP-00002", "SUP-00003"]
    assert second.sampled == 4 and second.dropped == 1
    assert result.participation["SUP-00004"]["rounds_participated"] == 1
    assert _processes_mentioning(str(tmp_path)) == []
