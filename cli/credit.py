from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.table import Table

from cli._common import console, fail, logged_in

app = typer.Typer(no_args_is_help=True, pretty_exceptions_show_locals=False)
URL = typer.Option("http://127.0.0.1:8700", "--url", envvar="QLEDGER_URL")
KEY = typer.Option(..., "--key", help="key file of an OEM, auditor, admin (or the supplier)")


@app.command("show")
def show(
    supplier: str,
    key: Path = KEY,
    url: str = URL,
    plot: Path | None = typer.Option(None, help="write the SHAP waterfall PNG here"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """A supplier's score with its exact SHAP contributions, reason codes, gate and what-if."""
    from client.service import ServiceError

    client = logged_in(url, key)
    try:
        credit = client.get(f"/v1/suppliers/{supplier}/credit")
        if plot is not None and credit["score"] is not None:
            response = client.http.get(
                f"/v1/suppliers/{supplier}/credit/waterfall.png",
                headers={"Authorization": f"Bearer {client.token}"},
            )
            response.raise_for_status()
            plot.write_bytes(response.content)
    except ServiceError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(credit, indent=2))
        return
    gate = credit["gate"] or {}
    if credit["score"] is None:
        # A thin file (issue 16): no number, the gate fails for that reason.
        console.print(
            f"[bold]{supplier}[/]: [bold]insufficient evidence[/]; {gate.get('policy')}: "
            f"[bold]{gate.get('outcome')}[/]"
        )
        for r in credit["reason_codes"]:
            console.print(f"  {r['code']}: {r['text']}")
        if plot is not None:
            console.print("no waterfall: insufficient evidence, there is no score to explain")
        return
    console.print(
        f"[bold]{supplier}[/]: score [bold]{credit['score']:.1f}[/] band "
        f"{credit['band']}; {gate.get('policy')}: [bold]{gate.get('outcome')}[/] "
        f"(distance {gate.get('distance', 0):+.1f}); model {credit['model_version']}"
    )
    table = Table(
        "feature",
        "value",
        "unit",
        "points",
        title=f"base value {credit['base_value']:.1f} + contributions = {credit['score']:.1f}",
    )
    for c in sorted(credit["contributions"], key=lambda c: -abs(c["points"])):
        table.add_row(
            c["feature"],
            f"{c['value']:.4g}" + ("" if c["observed"] else " (missing)"),
            c["unit"],
            f"{c['points']:+.2f}",
        )
    console.print(table)
    for r in credit["reason_codes"]:
        console.print(f"  [yellow]{r['code']}[/] {r['text']} ({r['points']:+.1f} pts)")
    for w in credit["what_if"]:
        console.print(
            f"  what-if: {w['feature']} {w['comparison']} {w['threshold']:.4g} "
            f"{w['unit']} -> score {w['score_after']:.1f}"
        )
    console.print(
        f"response {credit['responseHash']} commitment {credit['commitment']['status']}",
        style="dim",
    )
    if plot is not None:
        console.print(f"waterfall written to {plot}")


@app.command("rank")
def rank(key: Path = KEY, url: str = URL) -> None:
    """All suppliers by score, with band and trial-gate outcome."""
    from client.service import ServiceError

    try:
        rows = logged_in(url, key).get("/v1/suppliers", sort="score")["suppliers"]
    except ServiceError as exc:
        fail(str(exc))
    table = Table("supplier", "score", "band", "gate", "distance", "reason codes")
    for r in rows:
        distance = r["gate"]["distance"]
        table.add_row(
            r["supplierId"],
            f"{r['score']:.1f}" if r["score"] is not None else "insufficient evidence",
            r["band"],
            r["gate"]["outcome"],
            f"{distance:+.1f}" if distance is not None else "-",
            ", ".join(r["reasonCodes"]),
        )
    console.print(table)


def simulate(
    suppliers: int = typer.Option(8, min=1, max=10_000),
    months: int = typer.Option(6, min=1, max=60),
    seed: int = typer.Option(0),
    out: Path = typer.Option(Path("evidence.jsonl"), help="signed records, one per line"),
    chain_id: int = typer.Option(31337),
    contract: str = typer.Option(
        "0x5FbDB2315678afecb367f032d93F642f64180aa3", help="domain verifyingContract (the ledger)"
    ),
    keys_dir: Path | None = typer.Option(None, help="also write each org's key file"),
) -> None:
    """Simulate a supplier population (latent capability and drift -> measurements,
    deliveries, complaints, 8Ds, audits) and write its evidence signed with each org's
    key, ending now."""
    from ledger.records import Domain
    from simulator.population import MONTH, simulate_population

    started = time.monotonic()
    pop = simulate_population(
        suppliers,
        months=months,
        seed=seed,
        start=int(time.time()) - months * MONTH,
        domain=Domain(chainId=chain_id, verifyingContract=contract),
    )
    now = int(time.time())
    # Events the simulation ran past its horizon (now) would be evidence from the future.
    records = [r for r in pop.records if r.record.eventTime <= now]
    with out.open("w") as handle:
        for record in records:
            handle.write(json.dumps(record.model_dump(mode="json")) + "\n")
    if keys_dir is not None:
        keys_dir.mkdir(parents=True, exist_ok=True)
        for org, signer in pop.signers.items():
            path = keys_dir / f"{org}.json"
            path.write_text(
                json.dumps(
                    {
                        "address": signer.address,
                        "role": pop.roles[org].value,
                        "org": org,
                        "private_key": "0x" + signer.private_key.hex(),
                    }
                )
            )
            path.chmod(0o600)
    console.print(
        f"{len(records)} signed records from {suppliers} suppliers over "
        f"{months} months -> {out} ({time.monotonic() - started:.1f} s); "
        f"{len(pop.field_incidents)} field incidents in the latent truth"
    )
