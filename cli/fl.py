"""``qledger fl``: run the federated defect model in either Flower engine.

    qledger fl simulate --suppliers 5 --rounds 10 [--secagg] [--dp sample|client]
    qledger fl simulate --rpc URL --key admin.json [--data-dir D] [--url SERVICE]
    qledger fl deploy-local --suppliers 3 --rounds 3 [--secagg]
    qledger fl explain --model final.qlm --model-hash 0x... --data SUP-00001/

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


class DpLevel(StrEnum):
    none = "none"
    client = "client"
    sample = "sample"


# Noise multiplier and clipping norm when --dp is given without them (docs/federated.md,
# "Defaults for 8-20 suppliers"): sample-level z = 1.0 and per-shot gradient norm 1.0 (ε 5.4 after
# 10 rounds: moderate); client-level z = 1.0 and update norm 0.5 (ε 19 after 10 rounds: no
# meaningful guarantee at any useful accuracy with 8-20 suppliers, and the reading says so).
DP_DEFAULTS = {DpLevel.sample: (1.0, 1.0), DpLevel.client: (1.0, 0.5)}


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
    if rec.sample_epsilon is not None:
        eps = f"{rec.sample_epsilon:.2f}s"  # "s": sample-level
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
    dp_noise: float | None,
    dp_clip: float | None,
    min_fit: int | None,
    suppliers: int,
    round_timeout: float,
    local_epochs: int,
    seed: int,
    aggregation: str = "fedavg",
    dp: DpLevel = DpLevel.none,
) -> ServerSettings:
    if secagg and suppliers < 3:
        # With two, each could subtract its own update from the aggregate to get the other's.
        raise typer.BadParameter("SecAgg+ needs at least 3 suppliers", param_hint="--suppliers")
    min_fit_clients = min_fit if min_fit is not None else max(2, (suppliers + 1) // 2)
    if dp is DpLevel.none and dp_noise:
        dp = DpLevel.client  # --dp-noise alone: client-level, as before --dp existed
    noise, clip = DP_DEFAULTS.get(dp, (0.0, 0.5))
    noise = noise if dp_noise is None else dp_noise
    clip = clip if dp_clip is None else dp_clip
    client, sample = dp is DpLevel.client, dp is DpLevel.sample
    return ServerSettings(
        rounds=rounds,
        secagg=secagg,
        dp_noise=noise if client else 0.0,
        dp_clip=clip if client else 0.5,
        sample_dp_noise=noise if sample else 0.0,
        sample_dp_clip=clip if sample else 1.0,
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
    if result.sample_epsilon is not None and result.delta is not None:
        eps = result.sample_epsilon
        console.print(
            f"privacy      ε = {eps:.3f} at δ = {result.delta:g} (sample-level, opacus RDP)"
        )
        console.print(f"             {epsilon_reading(eps, result.delta, level='sample')}")
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
Dp = Annotated[
    DpLevel,
    typer.Option(
        "--dp",
        help="Differential privacy: sample (each supplier's DP-SGD, one shot is the unit) or "
        "client (central noise, one supplier is the unit); docs/federated.md.",
    ),
]
DpNoise = Annotated[
    float | None,
    typer.Option("--dp-noise", min=0.0, help="DP noise multiplier (default: the level's; 0: off)."),
]
DpClip = Annotated[
    float | None,
    typer.Option(
        "--dp-clip",
        min=1e-6,
        help="DP clipping norm: of a round's update (client) or of a shot's gradient (sample).",
    ),
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
    dp: Dp = DpLevel.none,
    dp_noise: DpNoise = None,
    dp_clip: DpClip = None,
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
            dp,
        ),
    )
    anchor = _chain(chain, rpc, deployment, data_dir)
    title = f"simulation engine: {suppliers} suppliers, {rounds} rounds" + (
        ", SecAgg+" if secagg else ""
    )
    settings = config.server
    privacy = (f", client DP z={settings.dp_noise}" if settings.dp else "") + (
        f", sample DP z={settings.sample_dp_noise}" if settings.sample_dp else ""
    )
    progress = None if as_json else _Progress(title + privacy)
    with _run_errors():
        result = run_simulate(config, anchor, on_round=progress)
    _finish(result, as_json)
    _report(result, url, key, anchored_to_rpc=bool(rpc) and anchor is not None)


@app.command("deploy-local")
def deploy_local(
    suppliers: Suppliers = 3,
    rounds: Rounds = 3,
    secagg: SecAgg = False,
    dp: Dp = DpLevel.none,
    dp_noise: DpNoise = None,
    dp_clip: DpClip = None,
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
            dp,
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


@app.command()
def explain(
    model: Annotated[Path, typer.Option("--model", help="The anchored model file (.qlm).")],
    data: Annotated[Path, typer.Option("--data", help="This supplier's own partition directory.")],
    model_hash: Annotated[
        str | None,
        typer.Option(
            "--model-hash",
            help="The hash anchored for the model (ModelRegistry / GET /v1/models).",
        ),
    ] = None,
    rpc: Rpc = None,
    deployment: DeploymentFile = None,
    run_id: Annotated[
        str | None, typer.Option("--run-id", help="Run id whose anchored round to check against.")
    ] = None,
    round_: Annotated[
        int | None,
        typer.Option("--round", min=0, help="Anchored round (default: the run's latest)."),
    ] = None,
    recent: Annotated[
        float,
        typer.Option(
            "--recent",
            min=0.01,
            max=1.0,
            help="Fraction of the log (its end) where the defect rate rose; its defective "
            "shots are compared with the shots before it (1: every defective vs good shots).",
        ),
    ] = 1.0,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Analysis JSON (default: fl-explain-<supplier>.json here)."),
    ] = None,
    attach: Annotated[
        Path | None,
        typer.Option(
            "--attach", help="8D draft (corrective_action JSON) to add the analysis's hash to."
        ),
    ] = None,
    top: Annotated[int, typer.Option("--top", min=1, help="Drivers to show.")] = 5,
    as_json: AsJson = False,
) -> None:
    """Root-cause hints for an 8D's D4, at the supplier on its own shots: exact Shapley values of
    the anchored model's predicted defect rate rank the process parameters behind a spike (or
    behind its defective shots) and the way to move each. Nothing leaves the machine; --attach
    puts only the analysis's SHA-256 into the 8D draft."""
    from federated.data import load_partition
    from federated.explain import ExplainError, attach_to_draft, explain_defects
    from federated.model import load_model
    from federated.provenance import load_anchored_model
    from ledger.errors import LedgerError

    try:
        if model_hash is not None:
            flmodel = load_model(model, expected_hash=model_hash)
        elif rpc and deployment and run_id:
            from ledger.chain import ChainClient, Deployment

            chain = ChainClient.connect(rpc, deployment=Deployment.load(deployment))
            run = bytes.fromhex(run_id.removeprefix("0x"))
            flmodel = load_anchored_model(chain, run, model, round_)
        else:
            raise typer.BadParameter(
                "give the anchored hash (--model-hash) or where to read it (--rpc, --deployment, "
                "--run-id): an unanchored model is not explained"
            )
        partition = load_partition(data)
        analysis = explain_defects(flmodel, partition, recent=recent)
        target = out or Path(f"fl-explain-{partition.supplier_id}.json")
        draft = None
        if attach is not None:
            draft = attach_to_draft(json.loads(attach.read_text()), analysis, target.name)
    except (ValueError, OSError, KeyError, LedgerError) as exc:  # hash, files, chain, refusals
        kind = "refused" if isinstance(exc, ExplainError) else "error"
        console.print(f"[red]{kind}:[/] {exc}")
        raise typer.Exit(1) from None
    target.write_bytes(analysis.to_json())
    if draft is not None and attach is not None:
        attach.write_text(json.dumps(draft, indent=2) + "\n")
    if as_json:
        typer.echo(json.dumps({**analysis.to_dict(), "sha256": analysis.sha256}, indent=2))
        return
    console.print(
        f"[bold]{partition.supplier_id}[/]: {analysis.defective} defective of {analysis.shots} "
        f"shots; {analysis.explained} {analysis.explained_shots} explained against "
        f"{analysis.reference_shots} {analysis.reference}; model {analysis.model_hash[:18]}… "
        "(anchored hash checked)"
    )
    if analysis.observed_rise is not None:
        accounted = "" if analysis.accounted is None else f" ({analysis.accounted:.0%} of it)"
        console.print(
            f"spike: defect rate {analysis.observed_rise:+.3f} in the last {recent:.0%} of the "
            f"log; the model predicts {analysis.predicted_rise:+.3f}{accounted}"
        )
    if analysis.note:
        console.print(f"[yellow]note:[/] {analysis.note}")
    console.print(
        f"predicted defect rate {analysis.drivers[0].risk_now:.3f} against "
        f"{analysis.drivers[0].risk_now - analysis.predicted_gap:.3f} for the reference: "
        f"{analysis.predicted_gap:+.3f}, split below (material and machine: "
        f"{analysis.other:+.3f}); each parameter's part, and its mean in the explained and the "
        "reference shots"
    )
    console.print(
        f"{'#':>2}  {'parameter':<18} {'part':>7} {'share':>6} {'explained':>10} "
        f"{'reference':>10}  {'move':<6} predicted defect rate if moved back",
        highlight=False,
    )
    for i, d in enumerate(analysis.drivers[:top], 1):
        console.print(
            f"{i:>2}  {d.feature:<18} {d.contribution:>+7.3f} {d.share:>6.1%} "
            f"{d.explained_mean:>10.4g} {d.reference_mean:>10.4g}  {d.direction:<6} "
            f"{d.risk_now:.3f} -> {d.risk_if_moved:.3f}",
            highlight=False,
        )
    console.print(f"analysis     {target}  sha256 {analysis.sha256}")
    if attach is not None:
        console.print(f"attached to  {attach} (hash only; the analysis stays here)")
