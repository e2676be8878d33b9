"""``qledger fl``: run the federated defect model in either Flower engine.

    qledger fl simulate --suppliers 5 --rounds 10 [--secagg] [--dp-noise 0.8]
    qledger fl simulate --rpc URL --key admin.json [--data-dir D] [--url SERVICE]
    qledger fl deploy-local --suppliers 3 --rounds 3 [--secagg]

``--rpc`` anchors the rounds to a running chain (the deployment in the service's ``--data-dir``)
and, with an admin ``--key``, reports them to the service, so they show under /ui/models.

Each prints one progress row per round (hold-out accuracy/AUC, participants, seconds, model
hash, anchoring transaction) and ends with the final model's path and hash.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from federated.config import FLConfig, ServerSettings
from federated.privacy import epsilon_reading

if TYPE_CHECKING:  # the CLI is mounted in `qledger`; torch and flwr load only when a run starts
    from federated.provenance import ModelAnchor, RoundRecord
    from federated.run import FLRunResult

app = typer.Typer(
    help="Federated defect model (Flower): simulate or deploy locally.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold keys (never print them)
)
console = Console(soft_wrap=True)  # long hashes stay on one line in logs


class ChainMode(StrEnum):
    in_process = "in-process"
    rpc = "rpc"
    none = "none"


def _chain(
    mode: ChainMode | None, rpc: str | None, deployment: Path | None, data_dir: Path | None
) -> ModelAnchor | None:
    """Where rounds are anchored: ``--rpc URL`` (a running chain, the service's deployment
    from ``--data-dir``), a throwaway in-process chain, or nowhere."""
    if mode is None:
        mode = ChainMode.rpc if rpc else ChainMode.in_process
    if mode is ChainMode.none:
        return None
    from ledger.chain import ChainClient, Deployment

    if mode is ChainMode.in_process:
        if rpc:
            raise typer.BadParameter("--rpc anchors to a running chain; drop --chain in-process")
        client = ChainClient.in_process()
        client.deploy()
        console.print(
            "[dim]anchoring to a fresh in-process chain (gone when this command exits; "
            "--rpc URL anchors to a running one, whose service then shows the rounds)[/]"
        )
        return client
    if not rpc:
        raise typer.BadParameter("--chain rpc needs --rpc URL")
    # The deployment is the service's, found as every command finds it: in --data-dir.
    from cli._common import settings as cli_settings

    settings = cli_settings(data_dir)
    path = deployment or settings.deployment_path
    if not path.exists():
        raise typer.BadParameter(
            f"no deployment file at {path}: give the service's --data-dir (or --deployment)"
        )
    # The anchorer's key comes from the environment, never from argv (visible in ps).
    return ChainClient.connect(
        rpc, private_key=settings.anchorer_private_key(), deployment=Deployment.load(path)
    )


def _report(result: FLRunResult, url: str, key: Path | None, anchored_to_rpc: bool) -> None:
    """Tell the running service about the rounds just anchored (participants are credit
    evidence; the rounds then show under /ui/models) and hand it the final model, as the demo
    does. The service checks every round against the chain; an admin key signs in."""
    if not anchored_to_rpc:
        return
    if key is None:
        console.print(
            "[yellow]rounds anchored on the chain but not reported to the service:[/] give "
            "--key ADMIN_KEY (and --url) to have them under /ui/models"
        )
        return
    from cli._common import load_signer
    from client.service import QledgerClient, ServiceError

    run_id = "0x" + result.run_id.hex()
    reported = 0
    with QledgerClient(url) as client:
        try:
            client.login(load_signer(key))
            for rec in result.rounds:
                if rec.anchored and rec.participants:
                    client.post(
                        "/v1/models/rounds",
                        {
                            "runId": run_id,
                            "round": rec.round,
                            "participants": rec.participants,
                            "metrics": {k: float(v) for k, v in rec.metrics.items()},
                        },
                    )
                    reported += 1
            client.put_bytes(f"/v1/models/{run_id}/file", result.final_model_path.read_bytes())
        except ServiceError as exc:
            console.print(f"[red]error:[/] reporting to {url}: {exc}")
            raise typer.Exit(1) from None
    console.print(f"reported     {reported} rounds and the final model to {url} (/ui/models)")


_HEADER = (
    f"{'round':>5}  {'status':<10} {'acc':>6} {'AUC':>6} {'suppliers':>9} {'s':>6} {'eps':>7}"
    f"  {'model hash':<18}  anchor tx"
)


@contextmanager
def _run_errors() -> Iterator[None]:
    """A run that cannot start or finish ends the command with its reason, not a traceback."""
    from federated.deploy import DeployError
    from federated.run import FLRunError

    try:
        yield
    except (FLRunError, DeployError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None


def _line(rec: RoundRecord) -> str:
    m = rec.metrics
    who = (
        f"{len(rec.participants)}" + (f"-{rec.dropped}" if rec.dropped else "")
        if rec.round
        else f"{len(rec.roster)}"
    )
    eps = "" if rec.epsilon is None else f"{rec.epsilon:.2f}"
    tx = rec.tx_hash[:16] if rec.tx_hash else "-"
    acc, auc = m.get("accuracy", float("nan")), m.get("auc", float("nan"))
    line = (
        f"{rec.round:>5}  {rec.status:<10} {acc:>6.4f} {auc:>6.4f}"
        f" {who:>9} {rec.seconds:>6.2f} {eps:>7}  {rec.model_hash[:18]}  {tx}"
    )
    return line + (f"  ({rec.note})" if rec.note else "")


class _Progress:
    """Prints a header, then one line per round as the round follower reports it."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.started = False

    def __call__(self, rec: RoundRecord) -> None:
        if not self.started:
            console.print(f"[bold]{self.title}[/]")
            console.print(_HEADER, highlight=False)
            self.started = True
        console.print(_line(rec), highlight=False)


def _settings(
    rounds: int,
    secagg: bool,
    dp_noise: float,
    dp_clip: float,
    min_fit: int | None,
    suppliers: int,
    round_timeout: float,
    local_epochs: int,
    seed: int,
    aggregation: str = "fedavg",
) -> ServerSettings:
    if secagg and suppliers < 3:
        # With two, each could subtract its own update from the aggregate to get the other's.
        raise typer.BadParameter("SecAgg+ needs at least 3 suppliers", param_hint="--suppliers")
    min_fit_clients = min_fit if min_fit is not None else max(2, (suppliers + 1) // 2)
    return ServerSettings(
        rounds=rounds,
        secagg=secagg,
        dp_noise=dp_noise,
        dp_clip=dp_clip,
        min_fit_clients=min_fit_clients,
        # Start with everyone: a SecAgg+ or DP round planned on a half-connected federation
        # would be planned for the wrong population.
        min_available_clients=max(min_fit_clients, suppliers),
        round_timeout=round_timeout,
        local_epochs=local_epochs,
        seed=seed,
        aggregation=aggregation,
    )


def _finish(result: FLRunResult, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    console.print(f"final model  {result.final_model_path}")
    console.print(f"model hash   {result.final_model_hash}  (keccak256 of the file)")
    console.print(f"run id       0x{result.run_id.hex()}  ({result.run_name})")
    console.print(f"anchored     {result.anchored}")
    if result.epsilon is not None and result.delta is not None:
        console.print(
            f"privacy      ε = {result.epsilon:.3f} at δ = {result.delta:g} (client-level, RDP)"
        )
        console.print(f"             {epsilon_reading(result.epsilon, result.delta)}")
    shares = ", ".join(
        f"{sid} {p['rounds_participated']}/{p['rounds_aggregated']}"
        for sid, p in result.participation.items()
    )
    console.print(f"participation {shares}")
    console.print(f"run files    {result.run_dir}")


Suppliers = Annotated[
    int, typer.Option("--suppliers", "-n", min=2, help="Number of suppliers (SuperNodes).")
]
Rounds = Annotated[int, typer.Option("--rounds", "-r", min=1)]
SecAgg = Annotated[
    bool, typer.Option("--secagg/--no-secagg", help="SecAgg+: the server sees only the sum.")
]
DpNoise = Annotated[
    float, typer.Option("--dp-noise", min=0.0, help="DP noise multiplier (0: no DP).")
]
DpClip = Annotated[
    float, typer.Option("--dp-clip", min=1e-6, help="DP clipping norm of a round's update.")
]
MinFit = Annotated[
    int | None, typer.Option("--min-fit", help="Fewest replies that still make a round.")
]
Timeout = Annotated[
    float, typer.Option("--round-timeout", help="Seconds to wait for replies per round.")
]
Chain = Annotated[
    ChainMode | None,
    typer.Option(
        "--chain", help="Where to anchor round hashes (default: rpc with --rpc, else in-process)."
    ),
]
Rpc = Annotated[
    str | None,
    typer.Option("--rpc", help="A running chain's JSON-RPC URL: anchor the rounds there."),
]
DeploymentFile = Annotated[
    Path | None,
    typer.Option("--deployment", help="Deployment JSON (default: the data dir's, with --rpc)."),
]
# --data-dir means what it means in every other command: the service's data dir.
DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar="QLEDGER_DATA_DIR",
        help="The service's data dir (its deployment.json, with --rpc; default ./.qledger).",
    ),
]
PartitionsDir = Annotated[
    Path | None,
    typer.Option(
        "--partitions-dir", help="Suppliers' training partitions (generated here if empty)."
    ),
]
ServiceUrl = Annotated[
    str,
    typer.Option(
        "--url", envvar="QLEDGER_URL", help="The service that records the rounds (with --rpc)."
    ),
]
AdminKey = Annotated[
    Path | None,
    typer.Option(
        "--key", help="Admin key file: report the anchored rounds to the service (with --rpc)."
    ),
]
OutDir = Annotated[
    Path | None, typer.Option("--out-dir", help="Run directory (default: a new temp dir).")
]
Epochs = Annotated[int, typer.Option("--local-epochs", min=1)]
Seed = Annotated[int, typer.Option("--seed")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
Aggregation = Annotated[
    str,
    typer.Option(
        "--aggregation",
        help="fedavg | trimmed-mean | median | multikrum: a robust rule resists a poisoning "
        "supplier (not with --secagg or DP; docs/federated.md).",
    ),
]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Show Flower's and Ray's logs.")]


@app.command()
def simulate(
    suppliers: Suppliers = 5,
    rounds: Rounds = 10,
    secagg: SecAgg = False,
    dp_noise: DpNoise = 0.0,
    dp_clip: DpClip = 0.5,
    min_fit: MinFit = None,
    round_timeout: Timeout = 60.0,
    chain: Chain = None,
    rpc: Rpc = None,
    deployment: DeploymentFile = None,
    data_dir: DataDir = None,
    partitions_dir: PartitionsDir = None,
    url: ServiceUrl = "http://127.0.0.1:8700",
    key: AdminKey = None,
    out_dir: OutDir = None,
    local_epochs: Epochs = 1,
    seed: Seed = 7,
    aggregation: Aggregation = "fedavg",
    as_json: AsJson = False,
    verbose: Verbose = False,
) -> None:
    """Train with Flower's simulation engine (all suppliers in one process, Ray backend)."""
    from federated.run import simulate as run_simulate

    config = FLConfig(
        suppliers=suppliers,
        data_dir=partitions_dir,
        out_dir=out_dir,
        verbose=verbose,
        server=_settings(
            rounds,
            secagg,
            dp_noise,
            dp_clip,
            min_fit,
            suppliers,
            round_timeout,
            local_epochs,
            seed,
            aggregation,
        ),
    )
    anchor = _chain(chain, rpc, deployment, data_dir)
    title = f"simulation engine: {suppliers} suppliers, {rounds} rounds" + (
        ", SecAgg+" if secagg else ""
    )
    progress = None if as_json else _Progress(title + (f", DP z={dp_noise}" if dp_noise else ""))
    with _run_errors():
        result = run_simulate(config, anchor, on_round=progress)
    _finish(result, as_json)
    _report(result, url, key, anchored_to_rpc=bool(rpc) and anchor is not None)


@app.command("deploy-local")
def deploy_local(
    suppliers: Suppliers = 3,
    rounds: Rounds = 3,
    secagg: SecAgg = False,
    dp_noise: DpNoise = 0.0,
    dp_clip: DpClip = 0.5,
    min_fit: MinFit = None,
    round_timeout: Timeout = 120.0,
    chain: Chain = None,
    rpc: Rpc = None,
    deployment: DeploymentFile = None,
    data_dir: DataDir = None,
    partitions_dir: PartitionsDir = None,
    url: ServiceUrl = "http://127.0.0.1:8700",
    key: AdminKey = None,
    out_dir: OutDir = None,
    local_epochs: Epochs = 1,
    seed: Seed = 7,
    aggregation: Aggregation = "fedavg",
    node_poll: Annotated[
        float, typer.Option("--node-poll", help="SuperNode idle poll, s (Flower's own: 3).")
    ] = 0.2,
    keep_workdir: Annotated[
        bool, typer.Option("--keep-workdir", help="Keep certificates, keys, Flower home.")
    ] = False,
    as_json: AsJson = False,
) -> None:
    """Train with Flower's deployment engine: SuperLink + one SuperNode per supplier on 127.0.0.1
    (TLS, SuperNode authentication); stops them and cleans up afterwards."""
    from federated.run import deploy_local as run_deploy

    config = FLConfig(
        suppliers=suppliers,
        data_dir=partitions_dir,
        out_dir=out_dir,
        server=_settings(
            rounds,
            secagg,
            dp_noise,
            dp_clip,
            min_fit,
            suppliers,
            round_timeout,
            local_epochs,
            seed,
            aggregation,
        ),
    )
    anchor = _chain(chain, rpc, deployment, data_dir)
    title = (
        f"deployment engine: SuperLink + {suppliers} SuperNodes (TLS, node auth), {rounds} rounds"
    )
    progress = None if as_json else _Progress(title + (", SecAgg+" if secagg else ""))
    if progress is not None:
        console.print("[dim]starting SuperLink and SuperNodes…[/]")
    with _run_errors():
        result = run_deploy(
            config, anchor, on_round=progress, keep_workdir=keep_workdir, node_poll=node_poll
        )
    _finish(result, as_json)
    _report(result, url, key, anchored_to_rpc=bool(rpc) and anchor is not None)
