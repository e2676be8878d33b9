"""Fast checks of the federated package's parts (no Flower engine started)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from eth_hash.auto import keccak

from federated.client_app import local_update
from federated.config import ServerSettings, secagg_plan, server_settings_from_run_config
from federated.data import (
    FEATURE_NAMES,
    HOLDOUT_DIR,
    N_FEATURES,
    NUMERIC_FEATURES,
    generate_partitions,
    load_partition,
    partition_dirs,
)
from federated.model import (
    MAGIC,
    get_arrays,
    load_model,
    model_hash,
    new_model,
    parse_model_bytes,
    predict_defect_risk,
    roc_auc,
    save_model,
    serialize,
)
from federated.provenance import (
    participants_root,
    participation_proof,
    verify_participation,
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fl-data")
    generate_partitions(4, 3, root)
    return root


def test_partitions_are_separate_and_non_iid(data_dir: Path) -> None:
    dirs = partition_dirs(data_dir)
    assert [d.name for d in dirs] == ["SUP-00001", "SUP-00002", "SUP-00003", "SUP-00004"]
    parts = [load_partition(d) for d in dirs]
    # Each supplier's directory holds its own data only, under its own id.
    assert [p.supplier_id for p in parts] == [d.name for d in dirs]
    assert all(p.X.shape[1] == N_FEATURES for p in parts)
    # Non-IID: volumes, defect rates and operating windows differ between suppliers.
    assert len({len(p) for p in parts}) == 4
    rates = [p.defect_rate for p in parts]
    assert max(rates) > 1.5 * min(rates)
    mold = FEATURE_NAMES.index("mold_temp_c")
    means = [float(p.X[:, mold].mean()) for p in parts]
    assert max(means) - min(means) > 1.0
    holdout = load_partition(data_dir / HOLDOUT_DIR)
    assert len(holdout) > 0 and 0 < holdout.defect_rate < 1


def test_generation_is_seeded(tmp_path: Path) -> None:
    a = load_partition(generate_partitions(2, 5, tmp_path / "a")[1])
    b = load_partition(generate_partitions(2, 5, tmp_path / "b")[1])
    assert np.array_equal(a.X, b.X) and np.array_equal(a.y, b.y)


def test_model_file_is_canonical_and_hash_recomputable(tmp_path: Path) -> None:
    arrays = get_arrays(new_model((8, 4), seed=1))
    path = tmp_path / "m.qlm"
    digest = save_model(path, arrays, (8, 4))
    data = path.read_bytes()
    # The hash is keccak256 of the file, and of the canonical serialisation of the arrays.
    assert digest == keccak(data) == model_hash(arrays, (8, 4))
    assert data[:8] == MAGIC
    (hlen,) = struct.unpack("<I", data[8:12])
    header = json.loads(data[12 : 12 + hlen])
    assert [t["name"] for t in header["tensors"]][:2] == ["net.0.weight", "net.0.bias"]
    assert header["tensors"][0] == {
        "name": "net.0.weight",
        "shape": [8, N_FEATURES],
        "dtype": "<f4",
    }
    # Tensor bytes are float32 little-endian, in header order, right after the header.
    first = np.frombuffer(data[12 + hlen : 12 + hlen + 8 * N_FEATURES * 4], dtype="<f4")
    assert np.array_equal(first.reshape(8, N_FEATURES), arrays[0])
    # Round trip.
    _, back = parse_model_bytes(data)
    assert all(np.array_equal(x, y) for x, y in zip(arrays, back, strict=True))
    assert serialize(back, (8, 4)) == data


def test_load_model_checks_expected_hash_and_predicts(tmp_path: Path, data_dir: Path) -> None:
    arrays = get_arrays(new_model((8, 4), seed=2))
    path = tmp_path / "m.qlm"
    digest = save_model(path, arrays, (8, 4))
    model = load_model(path, expected_hash="0x" + digest.hex())
    assert model.model_hash == digest
    with pytest.raises(ValueError, match="expected"):
        load_model(path, expected_hash=bytes(32))
    part = load_partition(partition_dirs(data_dir)[0])
    risks = predict_defect_risk(model, part.X[:5])
    assert risks.shape == (5,) and np.all((risks > 0) & (risks < 1))
    # Named rows (the service's form) give the same risk as the matrix.
    row = {f.name: float(part.X[0, FEATURE_NAMES.index(f.name)]) for f in NUMERIC_FEATURES}
    grade = next(g for g in "ABC" if part.X[0, FEATURE_NAMES.index(f"material_grade_{g}")] == 1)
    machine = next(
        m
        for m in ("hydraulic", "electric", "hybrid")
        if part.X[0, FEATURE_NAMES.index(f"machine_{m}")] == 1
    )
    named = predict_defect_risk(model, [{**row, "material_grade": grade, "machine": machine}])
    assert named[0] == pytest.approx(risks[0], rel=1e-5)
    with pytest.raises(ValueError, match="unknown feature"):
        predict_defect_risk(model, [{**row, "colour": 1.0}])
    # Tampering with one byte changes the hash the registry would hold.
    tampered = bytearray(path.read_bytes())
    tampered[-1] ^= 1
    (tmp_path / "t.qlm").write_bytes(bytes(tampered))
    with pytest.raises(ValueError):
        load_model(tmp_path / "t.qlm", expected_hash=digest)


def test_roc_auc_matches_the_rank_definition() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.random(300) + 0.3 * y, 2)  # rounding makes ties
    pos, neg = s[y == 1], s[y == 0]
    pairwise = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert roc_auc(y, s) == pytest.approx(pairwise, abs=1e-12)


def test_local_update_is_deterministic_and_clipped(data_dir: Path) -> None:
    part = load_partition(partition_dirs(data_dir)[0])
    start = get_arrays(new_model((8, 4), seed=3))
    config = {
        "hidden": "8,4",
        "server-round": 1,
        "seed": 7,
        "local-epochs": 1,
        "batch-size": 32,
        "lr": 0.05,
    }
    a, metrics = local_update(part, start, config)
    b, _ = local_update(part, start, config)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert metrics["weight"] == len(part) and metrics["num-examples"] == len(part)
    clipped, dp_metrics = local_update(
        part, start, {**config, "clipping_norm": 0.01, "uniform-weights": True}
    )
    norm = np.sqrt(sum(float(((c - s) ** 2).sum()) for c, s in zip(clipped, start, strict=True)))
    assert norm == pytest.approx(0.01, rel=1e-3)
    assert dp_metrics["weight"] == 1.0


def test_settings_round_trip_through_run_config() -> None:
    s = ServerSettings(rounds=4, hidden=(16, 8), secagg=True, dp_noise=0.7, round_timeout=5.5)
    assert server_settings_from_run_config(s.to_run_config()) == s


@pytest.mark.parametrize(
    ("n", "shares", "threshold", "expected"),
    [(3, 0, 0, (3, 2)), (4, 0, 0, (4, 3)), (5, 3, 0, (3, 2)), (8, 0, 0, (8, 5))],
)
def test_secagg_plan(n: int, shares: int, threshold: int, expected: tuple[int, int]) -> None:
    s = ServerSettings(secagg=True, secagg_shares=shares, secagg_threshold=threshold)
    assert secagg_plan(n, s) == expected


def test_secagg_plan_refuses_what_fails_silently_in_flower() -> None:
    with pytest.raises(ValueError, match="even"):
        secagg_plan(5, ServerSettings(secagg=True, secagg_shares=4))
    with pytest.raises(ValueError, match="at least 3"):
        secagg_plan(2, ServerSettings(secagg=True))


def test_minimum_clients_are_validated() -> None:
    with pytest.raises(ValueError):
        ServerSettings(min_fit_clients=3, min_available_clients=2)
    with pytest.raises(ValueError):
        ServerSettings(secagg=True, min_fit_clients=1, min_available_clients=1)
    with pytest.raises(ValueError):
        ServerSettings(dp_noise=1.0, fraction_fit=0.5)


def test_participants_root_and_membership_proofs() -> None:
    ids = ["SUP-00003", "SUP-00001", "SUP-00002"]
    root = participants_root(ids)
    assert root == participants_root(sorted(ids))  # order does not matter
    for sid in ids:
        assert verify_participation(root, sid, participation_proof(sid, ids))
    assert not verify_participation(root, "SUP-00009", participation_proof("SUP-00001", ids))
    assert participants_root([]) == bytes(32)


def test_cli_refuses_secagg_with_two_suppliers() -> None:
    from typer.testing import CliRunner

    from cli.fl import app

    out = CliRunner().invoke(app, ["simulate", "--suppliers", "2", "--secagg", "--chain", "none"])
    assert out.exit_code == 2
    assert "SecAgg+ needs at least 3 suppliers" in out.output


def test_patch_pull_backoff_sets_defaults_once_and_keeps_explicit_ones() -> None:
    import types

    from federated.flower_compat import (
        PULL_BACKOFF_CAP,
        PULL_INITIAL_BACKOFF,
        patch_pull_backoff,
    )

    calls: list[dict[str, object]] = []

    def pull(ids: list[str], **kwargs: object) -> list[str]:
        calls.append(kwargs)
        return ids

    module = types.ModuleType("fake_flower_module")
    module.pull_objects = pull  # type: ignore[attr-defined]
    assert patch_pull_backoff(module, "pull_objects")
    wrapped = module.pull_objects  # type: ignore[attr-defined]
    patch_pull_backoff(module, "pull_objects")  # idempotent: not wrapped twice
    assert module.pull_objects is wrapped  # type: ignore[attr-defined]

    assert wrapped(["a"]) == ["a"]
    assert calls[-1] == {"initial_backoff": PULL_INITIAL_BACKOFF, "backoff_cap": PULL_BACKOFF_CAP}
    wrapped(["b"], initial_backoff=2.0)
    assert calls[-1] == {"initial_backoff": 2.0, "backoff_cap": PULL_BACKOFF_CAP}


def test_flower_pull_functions_still_take_the_backoff_keywords() -> None:
    # patch_pull_backoff relies on these keyword arguments; a Flower upgrade that drops them must
    # fail here rather than at the first retry of a real run.
    import inspect

    import flwr.superlink.grid.http_grid as http_grid
    import flwr.supernode.runtime.run_clientapp as run_clientapp
    import flwr.supernode.start_client_internal as supernode_loop

    for fn in (
        http_grid.pull_objects,
        run_clientapp.pull_and_inflate_object_from_tree,
        supernode_loop.pull_objects,
    ):
        params = inspect.signature(fn).parameters
        assert {"initial_backoff", "backoff_cap"} <= set(params), fn


def test_simulation_dispatch_replacements_match_the_flower_functions_they_replace() -> None:
    import inspect

    import flwr.server.superlink.fleet.vce.vce_api as vce_api

    from federated import flower_tuning

    replaced = {
        "add_messages_to_queue": (
            flower_tuning._add_messages_to_queue,
            ("get_message_ins(node_id=node_id, limit=1)", "f_stop.wait(0.1)"),
        ),
        "put_message_into_state": (
            flower_tuning._put_message_into_state,
            ("queue.get(timeout=1.0)", "state.store_message_res(message_reply)"),
        ),
    }
    originals = {name: getattr(vce_api, name) for name in replaced}
    for name, (ours, copied) in replaced.items():
        original = originals[name]
        if original is not ours:
            # What we copy: same parameters, same calls into the link state and the queue.
            source = inspect.getsource(original)
            assert all(line in source for line in copied), name
            assert list(inspect.signature(original).parameters) == list(
                inspect.signature(ours).parameters
            )
        assert name in vce_api.run_api.__code__.co_names  # looked up at run time
    try:
        flower_tuning.shorten_simulation_dispatch()
        for name, (ours, _) in replaced.items():
            assert getattr(vce_api, name) is ours
        wakeups = flower_tuning.simulation_wakeups()
        assert wakeups is not None
        assert wakeups.pushed is flower_tuning.MESSAGES_PUSHED
        assert wakeups.replied is flower_tuning.REPLIES_STORED
    finally:
        for name, original in originals.items():
            setattr(vce_api, name, original)


def test_simulation_dispatcher_drains_a_backlog_and_wakes_on_a_push() -> None:
    import queue
    import threading

    from federated import flower_tuning

    class State:
        def __init__(self) -> None:
            self.pending: dict[int, list[str]] = {1: ["m1", "m2"], 2: ["m3"]}
            self.lock = threading.Lock()

        def get_message_ins(self, node_id: int, limit: int) -> list[str]:
            with self.lock:
                taken, self.pending[node_id] = (
                    self.pending[node_id][:limit],
                    self.pending[node_id][limit:],
                )
            return taken

    state = State()
    out: queue.Queue[str] = queue.Queue()
    stop = threading.Event()
    tick = flower_tuning.SIMULATION_DISPATCH_TICK
    flower_tuning.SIMULATION_DISPATCH_TICK = 60.0  # only a push can wake it within the test
    worker = threading.Thread(
        target=flower_tuning._add_messages_to_queue, args=(state, out, {1: 0, 2: 1}, stop)
    )
    try:
        worker.start()
        # Two messages for one node: Flower takes one per look, the second look is immediate.
        assert sorted(out.get(timeout=5) for _ in range(3)) == ["m1", "m2", "m3"]
        with state.lock:
            state.pending[2].append("m4")
        flower_tuning.MESSAGES_PUSHED.set()
        assert out.get(timeout=5) == "m4"
    finally:
        stop.set()
        flower_tuning.MESSAGES_PUSHED.set()
        worker.join(5)
        flower_tuning.SIMULATION_DISPATCH_TICK = tick
    assert not worker.is_alive()


def test_simulation_reply_writer_stores_then_signals() -> None:
    import queue
    import threading

    from federated import flower_tuning

    stored: list[str] = []

    class State:
        def store_message_res(self, message: str) -> None:
            assert not flower_tuning.REPLIES_STORED.is_set()  # signalled only once it is stored
            stored.append(message)

    replies: queue.Queue[str] = queue.Queue()
    stop = threading.Event()
    flower_tuning.REPLIES_STORED.clear()
    writer = threading.Thread(
        target=flower_tuning._put_message_into_state, args=(State(), replies, stop)
    )
    writer.start()
    try:
        replies.put("r1")
        assert flower_tuning.REPLIES_STORED.wait(5)
        assert stored == ["r1"]
    finally:
        stop.set()
        writer.join(5)
    assert not writer.is_alive()


def test_polling_grid_is_woken_by_a_stored_reply_not_its_poll() -> None:
    """With simulation wake-ups a reply is picked up when stored, whatever the poll interval."""
    import threading
    from types import SimpleNamespace

    from federated.flower_tuning import SimulationWakeups
    from federated.server_app import PollingGrid

    wakeups = SimulationWakeups(threading.Event(), threading.Event())
    stored: list[SimpleNamespace] = []

    class Inner:
        def push_messages(self, messages: list[str]) -> list[str]:
            return list(messages)

        def pull_messages(self, ids: set[str]) -> list[SimpleNamespace]:
            return [r for r in stored if r.metadata.reply_to_message_id in ids]

    def reply_later() -> None:
        assert wakeups.pushed.wait(5)  # the grid says it pushed
        stored.append(SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id="m1")))
        wakeups.replied.set()

    grid = PollingGrid(Inner(), interval=60.0, wakeups=wakeups)  # type: ignore[arg-type]
    replier = threading.Thread(target=reply_later, daemon=True)
    replier.start()
    got: list[object] = []
    caller = threading.Thread(
        target=lambda: got.extend(grid.send_and_receive(["m1"])),
        daemon=True,  # type: ignore[list-item]
    )
    caller.start()
    caller.join(10)  # a 60 s poll would still be asleep
    replier.join(5)
    assert not caller.is_alive() and len(got) == 1


def _shares_from_pycryptodome(secret: bytes, threshold: int, num: int) -> list[bytes]:
    """Flower's share layout built chunk by chunk, in order, from pycryptodome's own split."""
    from Crypto.Protocol.SecretSharing import Shamir
    from Crypto.Util.Padding import pad

    padded = pad(secret, 16)
    shares = [bytearray(i.to_bytes(4, "little")) for i in range(1, num + 1)]
    for start in range(0, len(padded), 16):
        for index, share in Shamir.split(threshold, num, padded[start : start + 16], ssss=False):
            shares[index - 1] += share
    return [bytes(s) for s in shares]


def _replay(draws: list[bytes]):  # type: ignore[no-untyped-def]
    """A random-bytes source that hands out ``draws`` in order (16 bytes each)."""
    it = iter(draws)

    def next_draw(n: int) -> bytes:
        draw = next(it)
        assert len(draw) == n
        return draw

    return next_draw


def test_fast_field_arithmetic_matches_pycryptodome() -> None:
    from Crypto.Protocol.SecretSharing import _Element

    from federated import shamir

    rng = np.random.default_rng(5)
    for _ in range(200):
        a, b = (int.from_bytes(rng.bytes(16), "big") for _ in range(2))
        assert shamir._mul(a, b) == int(_Element(a) * _Element(b))
        assert shamir._inverse(a) == int(_Element(a).inverse())
        assert shamir._mul(a, shamir._inverse(a)) == 1
    with pytest.raises(ValueError, match="zero"):
        shamir._inverse(0)


def test_fast_shares_are_pycryptodomes_given_the_same_random_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import Crypto.Protocol.SecretSharing as pycryptodome

    from federated import shamir

    secret = bytes(range(50))  # 4 chunks once padded
    for threshold, num in ((5, 8), (2, 3), (1, 1), (8, 8)):
        stream = np.random.default_rng(threshold * 100 + num)
        draws = [stream.bytes(16) for _ in range(4 * (threshold - 1))]
        monkeypatch.setattr(pycryptodome, "rng", _replay(draws))
        expected = _shares_from_pycryptodome(secret, threshold, num)
        monkeypatch.setattr(shamir, "random_bytes", _replay(draws))
        assert shamir.create_shares(secret, threshold, num) == expected
    with pytest.raises(ValueError, match="threshold"):
        shamir.create_shares(secret, 4, 3)


def test_fast_and_flower_shares_recombine_each_other() -> None:
    from flwr.common.secure_aggregation.crypto import shamir as flower

    from federated import shamir

    rng = np.random.default_rng(9)
    for length, threshold, num in ((32, 5, 8), (306, 3, 4), (0, 2, 2), (15, 11, 20)):
        secret = rng.bytes(length)
        theirs, ours = (
            flower.create_shares(secret, threshold, num),
            shamir.create_shares(secret, threshold, num),
        )
        picked = sorted(rng.choice(num, threshold, replace=False))
        assert shamir.combine_shares(theirs) == secret  # all of them, as the workflow passes
        assert shamir.combine_shares([theirs[i] for i in picked]) == secret
        assert flower.combine_shares([ours[i] for i in picked]) == secret
        assert shamir.combine_shares([ours[i] for i in picked]) == secret
    shares = shamir.create_shares(b"seed" * 8, 3, 5)
    with pytest.raises(ValueError, match="Duplicate"):
        shamir.combine_shares([shares[0], shares[1], shares[0]])
    with pytest.raises(ValueError, match="too short"):
        shamir.combine_shares([shares[0], shares[1][:20], shares[2]])
    with pytest.raises(ValueError, match="no shares"):
        shamir.combine_shares([])


def test_fast_shamir_reaches_the_functions_flower_secagg_calls() -> None:
    """What counts is the name each SecAgg+ step looks up at run time, in its own globals."""
    from flwr.client.mod import secaggplus_mod
    from flwr.server.workflow import SecAggPlusWorkflow

    from federated import shamir
    from federated.secagg_primitives import use_secagg_primitives

    use_secagg_primitives()
    share_keys = secaggplus_mod.__globals__["_share_keys"]
    assert share_keys.__globals__["create_shares"] is shamir.create_shares
    unmask = SecAggPlusWorkflow.unmask_stage
    assert unmask.__globals__["combine_shares"] is shamir.combine_shares
    assert "create_shares" in share_keys.__code__.co_names
    assert "combine_shares" in unmask.__code__.co_names


@pytest.mark.parametrize(("operator_setting", "expected"), [(None, "0"), ("1", "1")])
def test_flower_and_ray_telemetry_are_off_unless_the_operator_turns_them_on(
    operator_setting: str | None, expected: str
) -> None:
    """Importing qledger's federated package switches Flower's telemetry and Ray's usage stats
    off, even when Flower was imported first; an explicit setting is left as the operator set it."""
    import os
    import subprocess
    import sys

    names = ("FLWR_TELEMETRY_ENABLED", "RAY_USAGE_STATS_ENABLED")
    env = {k: v for k, v in os.environ.items() if k not in names}
    if operator_setting is not None:
        env.update(dict.fromkeys(names, operator_setting))
    code = (
        "import flwr.supercore.telemetry as t, federated, os\n"
        "from ray._common.usage import usage_lib\n"
        "print(t.FLWR_TELEMETRY_ENABLED, os.environ['FLWR_TELEMETRY_ENABLED'],"
        " int(usage_lib.usage_stats_enabled()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.stdout.split() == [expected, expected, expected]
