"""Library API: run the federated training in either Flower engine and collect the result.

    from federated.config import FLConfig
    from federated.run import simulate, deploy_local
    result = simulate(FLConfig(suppliers=5).with_server(rounds=10, secagg=True), chain=chain)
    result.final_model_path, result.final_model_hash, result.participation, result.epsilon

Both functions run the same ServerApp/ClientApp code (:mod:`federated.server_app`,
:mod:`federated.client_app`); they differ only in how the processes are arranged. While the run
goes on a :class:`federated.provenance.RoundFollower` anchors each aggregated round (when a
chain client is given) and calls ``on_round`` (the CLI's progress display).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flwr.clientapp.typing import Mod

from federated.config import FLConfig, ServerSettings
from federated.data import HOLDOUT_DIR, generate_partitions, load_partition, partition_dirs
from federated.provenance import ModelAnchor, RoundFollower, RoundRecord, participation
from federated.server_app import ERROR_FILE, FINAL_MODEL, RESULT_FILE, ROUNDS_FILE, ReplyObserver

RESULT_JSON = "fl_run.json"
PARTICIPATION_JSON = "participation.json"


class FLRunError(RuntimeError):
    pass


@dataclass
class FLRunResult:
    run_name: str
    run_id: bytes  # ModelRegistry run id = keccak256(run_name)
    engine: str  # "simulation" | "deployment"
    run_dir: Path
    rounds: list[RoundRecord]  # round 0 (initial model) first
    final_model_path: Path
    final_model_hash: str
    summary: dict[str, Any]
    seconds: float
    participation: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def anchored(self) -> bool:
        return any(r.anchored for r in self.rounds)

    @property
    def epsilon(self) -> float | None:
        privacy = self.summary.get("privacy")
        return float(privacy["epsilon"]) if privacy else None

    @property
    def delta(self) -> float | None:
        privacy = self.summary.get("privacy") or self.summary.get("sample_privacy")
        return float(privacy["delta"]) if privacy else None

    @property
    def sample_epsilon(self) -> float | None:
        """Sample-level ε (one shot record; each supplier's DP-SGD), if the run used it."""
        privacy = self.summary.get("sample_privacy")
        return float(privacy["epsilon"]) if privacy else None

    @property
    def final_metrics(self) -> dict[str, float]:
        return self.rounds[-1].metrics

    def round_seconds(self) -> list[float]:
        """Wall time of each federated round (sampling, training, aggregation), round 1 on."""
        return [r.seconds for r in self.rounds if r.round > 0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_name": self.run_name,
            "run_id": "0x" + self.run_id.hex(),
            "engine": self.engine,
            "run_dir": str(self.run_dir),
            "final_model_path": str(self.final_model_path),
            "final_model_hash": self.final_model_hash,
            "anchored": self.anchored,
            "epsilon": self.epsilon,
            "sample_epsilon": self.sample_epsilon,
            "delta": self.delta,
            "seconds": self.seconds,
            "rounds": [r.to_dict() for r in self.rounds],
            "summary": self.summary,
        }


def _run_id(name: str) -> bytes:
    from ledger.chain import run_id

    return run_id(name)


@dataclass
class _Prepared:
    run_name: str
    run_dir: Path
    data_dirs: list[Path]
    supplier_ids: list[str]
    settings: ServerSettings


def _prepare(config: FLConfig) -> _Prepared:
    run_name = f"qledger-fl-{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(4)}"
    run_dir = (
        Path(config.out_dir) if config.out_dir else Path(tempfile.mkdtemp(prefix="qledger-fl-"))
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    # Round records are appended as they come; another run's records in the same file would be
    # read (and anchored) as this run's.
    previous = [n for n in (ROUNDS_FILE, RESULT_FILE, ERROR_FILE) if (run_dir / n).exists()]
    if previous:
        raise FLRunError(
            f"{run_dir} already holds a run ({', '.join(previous)}); give an empty --out-dir"
        )
    data_dir = Path(config.data_dir) if config.data_dir else run_dir / "data"
    if not (data_dir.is_dir() and partition_dirs(data_dir)):
        generate_partitions(config.suppliers, config.data_seed, data_dir)
    dirs = partition_dirs(data_dir)
    if len(dirs) < config.suppliers:
        raise FLRunError(f"{data_dir} holds {len(dirs)} partitions, {config.suppliers} requested")
    dirs = dirs[: config.suppliers]
    if not (data_dir / HOLDOUT_DIR).is_dir():
        raise FLRunError(f"{data_dir} has no {HOLDOUT_DIR}/ (the OEM's evaluation set)")
    settings = dataclasses.replace(
        config.server,
        holdout_path=str((data_dir / HOLDOUT_DIR).resolve()),
        out_dir=str(run_dir.resolve()),
    )
    if settings.min_available_clients > len(dirs):
        raise FLRunError(
            f"min_available_clients={settings.min_available_clients} > {len(dirs)} suppliers"
        )
    return _Prepared(
        run_name, run_dir, dirs, [load_partition(d).supplier_id for d in dirs], settings
    )


def _collect(
    prep: _Prepared, engine: str, records: list[RoundRecord], started: float
) -> FLRunResult:
    error = prep.run_dir / ERROR_FILE
    if error.exists():
        raise FLRunError("ServerApp failed: " + json.loads(error.read_text())["error"])
    result_file = prep.run_dir / RESULT_FILE
    if not result_file.exists():
        raise FLRunError(f"the run ended without {result_file}")
    summary = json.loads(result_file.read_text())
    run_id = _run_id(prep.run_name)
    result = FLRunResult(
        run_name=prep.run_name,
        run_id=run_id,
        engine=engine,
        run_dir=prep.run_dir,
        rounds=records,
        final_model_path=prep.run_dir / FINAL_MODEL,
        final_model_hash=str(summary["final_hash"]),
        summary=summary,
        seconds=round(time.monotonic() - started, 3),
        participation=participation(records, run_id),
    )
    (prep.run_dir / PARTICIPATION_JSON).write_text(
        json.dumps(result.participation, indent=2) + "\n"
    )
    (prep.run_dir / RESULT_JSON).write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    return result


@contextmanager
def _quiet_flower(verbose: bool) -> Iterator[None]:
    logger = logging.getLogger("flwr")
    level = logger.level
    if not verbose:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def simulate(
    config: FLConfig,
    chain: ModelAnchor | None = None,
    on_round: Callable[[RoundRecord], None] | None = None,
    *,
    client_mods: Sequence[Mod] = (),
    inner_mods: Sequence[Mod] = (),
    observer: ReplyObserver | None = None,
) -> FLRunResult:
    """Run with Flower's simulation engine (Ray backend, one process).

    ``client_mods`` wrap every ClientApp and ``inner_mods`` sit inside its protocol mods,
    where a supplier's own code would be (fault injection, :mod:`federated.faults`);
    ``observer`` is called with every reply message the ServerApp receives.
    """
    from flwr.simulation import run_simulation

    from federated.client_app import build_client_app
    from federated.flower_tuning import shorten_simulation_dispatch
    from federated.server_app import build_server_app

    prep = _prepare(config)
    shorten_simulation_dispatch()
    follower = RoundFollower(prep.run_dir, _run_id(prep.run_name), chain, on_round)
    # Ray keeps sockets under its temp dir and fails on long paths (AF_UNIX limit ~107 bytes).
    ray_tmp = Path(tempfile.mkdtemp(prefix="qlr-", dir="/tmp"))
    backend_config: dict[str, Any] = {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {
            "num_cpus": config.sim_cpus,
            "num_gpus": 0,
            "include_dashboard": False,
            "logging_level": "INFO" if config.verbose else "ERROR",
            "log_to_driver": config.verbose,
            "object_store_memory": 80 * 1024 * 1024,
            "_temp_dir": str(ray_tmp),
        },
    }
    started = time.monotonic()
    follower.start()
    try:
        with _quiet_flower(config.verbose):
            run_simulation(
                server_app=build_server_app(prep.settings, observer),
                client_app=build_client_app(
                    {i: str(d) for i, d in enumerate(prep.data_dirs)}, client_mods, inner_mods
                ),
                num_supernodes=len(prep.data_dirs),
                backend_config=backend_config,
            )
    finally:
        records = follower.finish()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    return _collect(prep, "simulation", records, started)


def deploy_local(
    config: FLConfig,
    chain: ModelAnchor | None = None,
    on_round: Callable[[RoundRecord], None] | None = None,
    *,
    keep_workdir: bool = False,
    kill_after_round: tuple[str, int] | None = None,
    node_poll: float = 0.2,
) -> FLRunResult:
    """Run with Flower's deployment engine: a SuperLink and one SuperNode per supplier.

    Starts the processes on 127.0.0.1 (TLS, SuperNode authentication), submits the app with
    ``flwr run``, follows the rounds, then stops every process it started and deletes the
    federation's working files (certificates, keys, Flower home); logs are kept in
    ``run_dir/logs``. ``kill_after_round=(supplier_id, r)`` hard-kills that supplier's SuperNode
    once round ``r`` is recorded (a real mid-run dropout). ``node_poll`` is the SuperNodes' idle
    poll in seconds (Flower's stock value is 3, see :mod:`federated.supernode_main`).
    """
    from federated.deploy import LocalFederation, write_app

    prep = _prepare(config)
    prep.settings = dataclasses.replace(prep.settings, roll_call=False)
    workdir = Path(tempfile.mkdtemp(prefix="qlfd-", dir="/tmp"))
    run_id = _run_id(prep.run_name)
    federation = LocalFederation(
        workdir, prep.data_dirs, prep.supplier_ids, prep.run_dir / "logs", node_poll=node_poll
    )

    def follow(record: RoundRecord) -> None:
        if record.round == 0:
            # The roster is who was registered (each SuperNode's key, bound to its supplier).
            record.roster = sorted(federation.node_ids)
        if kill_after_round and record.round == kill_after_round[1]:
            federation.kill_node(kill_after_round[0])
        if on_round is not None:
            on_round(record)

    follower = RoundFollower(prep.run_dir, run_id, chain, follow, poll=0.1)
    s = prep.settings
    budget = s.connect_timeout * 2 + s.rounds * (s.round_timeout * (4 if s.secagg else 1) + 30) + 60
    started = time.monotonic()
    try:
        with federation:
            app_dir = write_app(workdir / "app", s.to_run_config())
            flwr_run = federation.submit(app_dir)
            follower.start()
            deadline = time.monotonic() + budget
            last_status_check = time.monotonic()
            while not (
                (prep.run_dir / RESULT_FILE).exists() or (prep.run_dir / ERROR_FILE).exists()
            ):
                if time.monotonic() > deadline:
                    raise FLRunError(
                        f"deployment run {flwr_run} did not finish within {budget:.0f} s"
                    )
                if time.monotonic() - last_status_check > 10:
                    # A ServerApp that dies before writing error.json (e.g. cannot import) shows
                    # up only in the SuperLink's run status.
                    status = federation.run_status(flwr_run)
                    if status.startswith("finished") and not (prep.run_dir / RESULT_FILE).exists():
                        time.sleep(0.5)
                        if not (prep.run_dir / RESULT_FILE).exists():
                            raise FLRunError(
                                f"run {flwr_run} ended as {status}; logs in {prep.run_dir / 'logs'}"
                            )
                    last_status_check = time.monotonic()
                time.sleep(0.1)
    finally:
        records = follower.finish() if follower.is_alive() or follower.records else []
        if not keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    result = _collect(prep, "deployment", records, started)
    result.summary["node_ids"] = dict(federation.node_ids)
    _check_node_identities(result, federation.node_ids)
    return result


def _check_node_identities(result: FLRunResult, registered: dict[str, int]) -> None:
    """Each participant's self-reported supplier id must be the one its key was registered for.

    The ServerApp learns supplier ids from the nodes' replies; under SuperNode authentication
    the node id is bound to the key registered for that supplier, so a mismatch means a node
    claimed someone else's participation.
    """
    raw = [json.loads(line) for line in (result.run_dir / "rounds.jsonl").read_text().splitlines()]
    by_node = {nid: sid for sid, nid in registered.items()}
    for rec in raw:
        for p in rec.get("participants", []) + rec.get("roster", []):
            if by_node.get(int(p["node_id"])) != p["supplier_id"]:
                raise FLRunError(
                    f"round {rec['round']}: node {p['node_id']} claimed {p['supplier_id']!r}, "
                    f"registered for {by_node.get(int(p['node_id']))!r}"
                )
