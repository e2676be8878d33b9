"""A qledger service with demo data, for the dashboard tests.

``build_demo`` fills a fresh service (in-process py-evm chain, SQLite) the way the real one
fills up: 8 simulated suppliers, an OEM and an auditor registered on chain; twelve months of
their signed evidence (~2,000 records) submitted through intake month by month, each month
anchored in its own batch and the suppliers' scores published after it (so score history has
points); one field incident with its responsibility matrix; a federated run of three rounds
anchored in the ModelRegistry; every published artefact committed on chain.

Run as a script it serves that service with uvicorn (the e2e test's subprocess) and writes
``ready.json`` (URL, key files) into the data dir once the service answers::

    python -m tests.ui.demo_service DATA_DIR [--port 0]
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from api.anchorer import Anchorer
from api.context import ServiceContext
from api.credit_service import publish_matrix, publish_scores
from api.intake import submit_many
from api.settings import Settings
from api.store.models import Incident, ModelRound, Participant
from federated.provenance import participants_root
from ledger.chain import ChainClient, run_id
from ledger.keys import Signer, save_key
from ledger.signing import resign
from simulator.population import AUDITOR_ID, MONTH, OEM_ID, simulate_population

N_SUPPLIERS = 8
MONTHS = 12
SEED = 11
TOKEN_SECRET = "dashboard-demo-secret-" + "0" * 32
KEYSTORE_PASSPHRASE = "demo-passphrase"
INCIDENT_ID = "INC-2025-0042"
FL_RUN = "defect-model-demo"


@dataclass
class Demo:
    ctx: ServiceContext
    signers: dict[str, Signer]
    suppliers: list[str]
    records: int
    struct_hashes: dict[str, list[str]] = field(default_factory=dict)  # subject -> own records
    incident_id: str = INCIDENT_ID


def _settings(data_dir: Path, host: str, port: int) -> Settings:
    return Settings(
        data_dir=data_dir,
        confirmations=0,
        batch_max_seconds=0.01,
        token_secret=TOKEN_SECRET,
        # Twelve months of history are filed at once, signed now: the eventTime bound (30 days
        # in production) is widened for this import.
        max_event_age_seconds=400 * 86_400,
        host=host,
        port=port,
    )


def build_demo(
    data_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8700,
    n_suppliers: int = N_SUPPLIERS,
    months: int = MONTHS,
    seed: int = SEED,
) -> Demo:
    chain = ChainClient.in_process()
    chain.deploy()
    ctx = ServiceContext.create(_settings(data_dir, host, port), chain=chain)
    now = int(time.time())
    pop = simulate_population(
        n_suppliers, months=months, seed=seed, start=now - months * MONTH, domain=ctx.domain
    )
    with ctx.sessions() as s, s.begin():
        for org, signer in pop.signers.items():
            tx = chain.register_participant(signer.address, pop.roles[org], org)
            s.add(
                Participant(
                    address=signer.address,
                    org_id=org,
                    role=pop.roles[org].value,
                    name=f"{org} (demo)",
                    tx_hash=tx,
                )
            )
    ctx.follower.sync()  # registered on chain directly: mirror the roles
    suppliers = sorted(t.supplier_id for t in pop.suppliers)
    by_address = {s.address: o for o, s in pop.signers.items()}
    # A backlog produced offline is signed at submission time (roles are checked at signedAt).
    # The simulator runs a few follow-ups (late deliveries, complaints) past its last month;
    # evidence dated in the future has no place in a live demo.
    signed = [
        resign(r, pop.signers[by_address[r.record.signer]], signed_at=now)
        for r in pop.records
        if r.record.eventTime <= now
    ]
    demo = Demo(ctx=ctx, signers=pop.signers, suppliers=suppliers, records=0)
    anchorer = Anchorer(ctx)
    _federated_run(ctx, suppliers)
    for month in range(months):
        lo, hi = pop.start + month * MONTH, pop.start + (month + 1) * MONTH
        chunk = [
            r
            for r in signed
            if lo <= r.record.eventTime < hi
            or (month == months - 1 and r.record.eventTime >= hi)
            or (month == 0 and r.record.eventTime < lo)
        ]
        for i in range(0, len(chunk), 1000):
            part = chunk[i : i + 1000]
            outcomes = submit_many(ctx, [r.model_dump(mode="json") for r in part])
            rejected = [o for o in outcomes if o.status == "rejected"]
            if rejected:
                raise RuntimeError(f"demo record rejected: {rejected[0].error}")
            for r, o in zip(part, outcomes, strict=True):
                # The supplier's own records (the OEM's specs and receipts about it are not).
                if r.record.signer == pop.signers[r.record.subject].address:
                    demo.struct_hashes.setdefault(r.record.subject, []).append(o.struct_hash)
            demo.records += len(part)
        anchorer.run_once(force=True)
        # What the purchasing team would have seen after this month's evidence was anchored.
        publish_scores(ctx, suppliers, trigger="anchor")
    _incident(ctx, pop, suppliers)
    anchorer.run_once(force=True)  # commit the published scores and the matrix on chain
    return demo


def _federated_run(ctx: ServiceContext, suppliers: list[str]) -> None:
    run = run_id(FL_RUN)
    for rnd in range(1, 4):
        taking_part = suppliers[: max(2, len(suppliers) - rnd)]
        model_hash = Signer.generate().private_key  # stands in for the global model's hash
        ctx.chain.record_model_round(
            run, rnd, model_hash, len(taking_part), participants_root(taking_part)
        )
        onchain = ctx.chain.model_round(run, rnd)
        assert onchain is not None
        with ctx.sessions() as s, s.begin():
            s.add(
                ModelRound(
                    run_id="0x" + run.hex(),
                    round=rnd,
                    model_hash="0x" + onchain["model_hash"].hex(),
                    participants=sorted(taking_part),
                    metrics={
                        "auc": round(0.71 + 0.03 * rnd, 3),
                        "loss": round(0.52 - 0.04 * rnd, 3),
                    },
                    timestamp=onchain["timestamp"],
                )
            )


def _incident(ctx: ServiceContext, pop: Any, suppliers: list[str]) -> None:
    lots = []
    for sid in suppliers[:3]:
        rec = next(
            r
            for r in reversed(pop.records)
            if r.record.subject == sid and r.record.kind.value == "inspection"
        )
        lots.append(
            {"supplier_id": sid, "part_number": rec.record.partNumber, "lot_id": rec.record.lotId}
        )
    body = {
        "incident_id": INCIDENT_ID,
        "product": "BATTERY-PACK-7",
        "occurred_at": int(time.time()) - 86_400,
        "lots": lots,
        "description": "cell swelling found at end-of-line test",
    }
    with ctx.sessions() as s, s.begin():
        s.add(Incident(incident_id=INCIDENT_ID, body=body, opened_by=pop.signers[OEM_ID].address))
    publish_matrix(ctx, INCIDENT_ID)


def write_keys(demo: Demo, out: Path) -> dict[str, str]:
    """Key files as participants hold them: plain dev keys (``qledger keys new --plain``) for
    the OEM and two suppliers, and for the auditor a V3 keystore exactly as ``qledger keys
    new`` writes it (scrypt at eth-account's standard cost: ~2 s to decrypt in a browser)."""
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, str] = {}
    for name, org in (
        ("oem", OEM_ID),
        ("supplier", demo.suppliers[0]),
        ("supplier2", demo.suppliers[1]),
    ):
        signer = demo.signers[org]
        path = out / f"{name}.json"
        path.write_text(
            json.dumps({"address": signer.address, "private_key": "0x" + signer.private_key.hex()})
        )
        paths[name] = str(path)
    path = out / "auditor.json"
    save_key(demo.signers[AUDITOR_ID], path, KEYSTORE_PASSPHRASE)
    paths["auditor"] = str(path)
    return paths


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    from api.main import create_app

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    args = parser.parse_args(argv)
    port = args.port or _free_port()
    started = time.perf_counter()
    demo = build_demo(args.data_dir, port=port)
    built = time.perf_counter() - started
    keys = write_keys(demo, args.data_dir / "keys")
    config = uvicorn.Config(
        create_app(ctx=demo.ctx),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        ws="none",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            print("uvicorn did not start", file=sys.stderr)
            return 1
        time.sleep(0.05)
    ready = {
        "url": f"http://127.0.0.1:{port}",
        "keys": keys,
        "keystorePassphrase": KEYSTORE_PASSPHRASE,
        "suppliers": demo.suppliers,
        "supplier": demo.suppliers[0],
        "otherSupplier": demo.suppliers[1],
        "incident": demo.incident_id,
        "records": demo.records,
        "recordOfSupplier": demo.struct_hashes[demo.suppliers[0]][0],
        "recordOfOther": demo.struct_hashes[demo.suppliers[1]][0],
        "buildSeconds": round(built, 2),
    }
    tmp = args.data_dir / "ready.json.tmp"
    tmp.write_text(json.dumps(ready))
    tmp.replace(args.data_dir / "ready.json")
    print(
        f"demo service on {ready['url']} ({demo.records} records, built in {built:.1f} s)",
        flush=True,
    )
    try:
        thread.join()
    except KeyboardInterrupt:
        server.should_exit = True
        thread.join(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
