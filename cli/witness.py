"""``qledger witness``: an independent witness of the ledger's transparency log.

Run by an auditor or another OEM with its own Ed25519 key. Each round it fetches the latest
checkpoint, checks the log's signature, checks that it extends the last checkpoint this witness
cosigned (fetching the RFC 9162 consistency proof), optionally checks that the chain holds at
least as many entries, then cosigns (C2SP tlog-cosignature/v1) and posts the cosignature.

It refuses to cosign a split view: two different roots at one size, a smaller tree, or a
history the proof says does not extend. It then writes a report with the evidence (both signed
checkpoints and the failing proof) and exits non-zero. The state file is written *before* a
cosignature leaves, so a crash can never make it cosign two views of one size.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from cli._common import DataDir, console, fail, print_json, settings
from ledger.errors import ChainError
from ledger.tlog import (
    COSIGNATURE_V1,
    Checkpoint,
    LogError,
    Signer,
    Verifier,
    open_checkpoint,
    parse_note,
    verify_consistency,
)

if TYPE_CHECKING:
    import httpx

app = typer.Typer(no_args_is_help=True, add_completion=False)


class WitnessRefusal(Exception):
    """The log showed something a witness must not cosign; ``evidence`` says what."""

    def __init__(self, check: str, message: str, evidence: dict[str, Any]) -> None:
        super().__init__(f"{check}: {message}")
        self.check = check
        self.evidence = {"check": check, "reason": message, **evidence}


@dataclass
class WitnessOutcome:
    status: str  # "cosigned" | "refused"
    size: int | None = None
    cosignature: str | None = None
    report: Path | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def load_witness_key(path: Path) -> Signer:
    try:
        signer = Signer.decode(path.read_text())
    except OSError as exc:
        fail(f"cannot read witness key {path}: {exc.strerror}")
    except LogError as exc:
        fail(f"{path}: {exc}")
    if signer.sig_type != COSIGNATURE_V1:
        fail(f"{path} is not a cosignature/v1 (0x04) key")
    return signer


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.chmod(0o600)
    tmp.replace(path)


def _save_state(path: Path, log_key: Verifier, note_text: str) -> None:
    _write_private(
        path, json.dumps({"log": log_key.vkey, "checkpoint": note_text}, indent=2) + "\n"
    )


def _load_state(path: Path, log_key: Verifier) -> str | None:
    """The last checkpoint note this witness cosigned for ``log_key`` (None: first run)."""
    if not path.exists():
        return None
    state = json.loads(path.read_text())
    if state.get("log") != log_key.vkey:
        raise WitnessRefusal(
            "witness_state",
            "the state file is for another log key: use one state file per log",
            {"stateLog": state.get("log"), "logKey": log_key.vkey},
        )
    return str(state["checkpoint"])


def _get(http: httpx.Client, path: str, **params: Any) -> httpx.Response:
    import httpx

    response = http.get(path, params=params or None)
    if response.status_code != 200:
        raise httpx.HTTPStatusError(
            f"GET {path}: {response.status_code} {response.text[:300]}",
            request=response.request,
            response=response,
        )
    return response


def chain_entry_total(rpc: str, ledger: str, commitment_log: str) -> int:
    """Entries the chain backs: record leaves anchored + commitment roots committed."""
    from ledger.chain import ChainClient

    client = ChainClient.connect_ledger(rpc, ledger)
    return client.checkpoint().leaf_total + client.commitment_count(commitment_log)


def witness_once(
    http: httpx.Client,
    signer: Signer,
    log_key: Verifier,
    state_path: Path,
    *,
    report_path: Path,
    chain_total: int | None = None,
    submit: bool = True,
    now: int | None = None,
) -> WitnessOutcome:
    """One round: fetch, check, cosign, post. ``chain_total`` (from the chain, when the witness
    has RPC) bounds the tree size. Refusals write ``report_path`` and return "refused"."""
    try:
        return _round(http, signer, log_key, state_path, chain_total, submit, now)
    except WitnessRefusal as refusal:
        report = {
            "witness": signer.verifier.vkey,
            "log": log_key.vkey,
            "time": int(time.time()),
            **refusal.evidence,
        }
        _write_private(report_path, json.dumps(report, indent=2) + "\n")
        return WitnessOutcome("refused", report=report_path, detail=report)


def _round(
    http: httpx.Client,
    signer: Signer,
    log_key: Verifier,
    state_path: Path,
    chain_total: int | None,
    submit: bool,
    now: int | None,
) -> WitnessOutcome:
    served = _get(http, "/v1/log/checkpoint").text
    try:
        new = open_checkpoint(served, log_key).checkpoint
    except LogError as exc:
        raise WitnessRefusal(exc.code, str(exc), {"newCheckpoint": served}) from exc
    previous = _load_state(state_path, log_key)
    evidence: dict[str, Any] = {"cosignedCheckpoint": previous, "newCheckpoint": served}
    if previous is not None:
        old = Checkpoint.parse(parse_note(previous).text)
        if new.size < old.size:
            raise WitnessRefusal(
                "consistency_proof",
                f"the log shrank from {old.size} to {new.size} entries",
                evidence,
            )
        if new.size == old.size and new.root != old.root:
            raise WitnessRefusal("split_view", f"two different roots at size {new.size}", evidence)
        if new.size > old.size:
            body = _get(http, "/v1/log/consistency", **{"from": old.size, "to": new.size}).json()
            proof_hex = body.get("proof", [])
            evidence["consistencyProof"] = {"from": old.size, "to": new.size, "proof": proof_hex}
            try:
                verify_consistency(
                    old.size,
                    new.size,
                    [bytes.fromhex(h[2:]) for h in proof_hex],
                    old.root,
                    new.root,
                )
            except (LogError, ValueError) as exc:
                raise WitnessRefusal(
                    "consistency_proof",
                    f"the new checkpoint does not extend the one cosigned: {exc}",
                    evidence,
                ) from exc
    if chain_total is not None and chain_total < new.size:
        raise WitnessRefusal(
            "chain_backing",
            f"the checkpoint claims {new.size} entries, the chain holds {chain_total}",
            {**evidence, "chainEntries": chain_total},
        )
    text = parse_note(served).text
    cosignature = signer.cosign(text, now)
    _save_state(state_path, log_key, served)  # before the cosignature leaves this process
    line = cosignature.line()
    if submit:
        response = http.post(
            "/v1/log/cosignatures",
            json={"size": new.size, "vkey": signer.verifier.vkey, "cosignature": line},
        )
        if response.status_code not in (200, 201):
            import httpx

            raise httpx.HTTPStatusError(
                f"POST /v1/log/cosignatures: {response.status_code} {response.text[:300]}",
                request=response.request,
                response=response,
            )
    return WitnessOutcome("cosigned", size=new.size, cosignature=line)


# -- commands --------------------------------------------------------------------------------


def init(
    name: str = typer.Option(..., "--name", help="key name, a schema-less URL: example.com/w1"),
    key: Path = typer.Option(Path("witness.key"), "--key", help="where to write the key"),
    force: bool = typer.Option(False, "--force", help="replace an existing key"),
) -> None:
    """Make a witness key (Ed25519, cosignature/v1); prints its vkey for the log's users."""
    if key.exists() and not force:
        fail(f"{key} exists (--force replaces it, and loses the old identity)")
    try:
        signer = Signer.generate(name, COSIGNATURE_V1)
    except LogError as exc:
        fail(str(exc))
    _write_private(key, signer.encode() + "\n")
    print_json({"key": str(key), "vkey": signer.verifier.vkey})


def vkey(key: Path = typer.Option(Path("witness.key"), "--key")) -> None:
    """Print the witness key's vkey."""
    typer.echo(load_witness_key(key).verifier.vkey)


def once(
    url: str = typer.Option("http://127.0.0.1:8700", "--url", envvar="QLEDGER_URL"),
    key: Path = typer.Option(Path("witness.key"), "--key"),
    log_key: str = typer.Option(..., "--log-key", help="the log's vkey (pinned, never fetched)"),
    state: Path = typer.Option(Path("witness-state.json"), "--state"),
    report: Path = typer.Option(Path("witness-report.json"), "--report"),
    rpc: str | None = typer.Option(None, "--rpc", help="JSON-RPC: also check chain backing"),
    ledger: str | None = typer.Option(None, "--ledger", help="QualityLedger address (with --rpc)"),
    commitment_log: str | None = typer.Option(
        None, "--commitment-log", help="CommitmentLog address (with --rpc)"
    ),
    loop: bool = typer.Option(False, "--loop", help="keep witnessing"),
    interval: float = typer.Option(30.0, "--interval", min=1.0, help="seconds between rounds"),
) -> None:
    """Witness the log: cosign its latest checkpoint if it extends the last one cosigned.
    Exit 2 (and a report with the evidence) on a split view or a rewritten history."""
    import httpx

    signer = load_witness_key(key)
    try:
        log = Verifier.parse(log_key, expect_type=0x01)
    except LogError as exc:
        fail(f"--log-key: {exc}")
    if rpc and not (ledger and commitment_log):
        fail("--rpc needs --ledger and --commitment-log (the pinned contract addresses)")
    with httpx.Client(base_url=url, timeout=30) as http:
        while True:
            try:
                total = chain_entry_total(rpc, ledger, commitment_log) if rpc else None  # type: ignore[arg-type]
                outcome = witness_once(
                    http, signer, log, state, report_path=report, chain_total=total
                )
            except (httpx.HTTPError, ChainError, ValueError) as exc:
                if not loop:
                    fail(f"witness round failed: {exc}")
                console.print(f"[yellow]round failed[/]: {exc}")
            else:
                if outcome.status == "refused":
                    console.print(
                        f"[bold red]REFUSED[/]: {outcome.detail.get('check')}: "
                        f"{outcome.detail.get('reason')} (evidence in {outcome.report})"
                    )
                    raise typer.Exit(2)
                console.print(f"cosigned checkpoint of size {outcome.size}")
            if not loop:
                return
            time.sleep(interval)


def log_key(data_dir: Path | None = DataDir) -> None:
    """Print the ledger log's vkey (from the service's data dir): what auditors and witnesses
    pin. The service makes the key at its first start; GET /v1/log/key serves the same."""
    from api.tlog_service import LOG_KEY_FILE

    path = settings(data_dir).data_dir / LOG_KEY_FILE
    try:
        signer = Signer.decode(path.read_text())
    except OSError:
        fail(f"no log key at {path}: start the service once (qledger serve) to make it")
    except LogError as exc:
        fail(f"{path}: {exc}")
    typer.echo(signer.verifier.vkey)


app.command("init")(init)
app.command("vkey")(vkey)
app.command("once")(once)

__all__ = ["WitnessOutcome", "WitnessRefusal", "app", "witness_once"]
