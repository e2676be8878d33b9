"""Provenance of a federated run: round records, participant roots, anchoring, verification.

Per round the ModelRegistry (contracts/ModelRegistry.sol) stores ``(model_hash, participants,
participants_root)`` under ``(run_id, round)``:

- ``model_hash``: keccak256 of the canonical model file (see :mod:`federated.model`).
- ``participants``: how many suppliers' updates are inside the aggregate.
- ``participants_root``: root of an OpenZeppelin ``StandardMerkleTree`` (leaf type ``bytes32``,
  as used for evidence batches, :mod:`ledger.merkle`) whose values are
  ``keccak256(utf8(supplier_id))`` of the participants. A supplier proves it took part in a
  round with a Merkle proof against the anchored root, without the list being published.
- ``run_id``: ``keccak256(run_name)`` (:func:`ledger.chain.run_id`).

Only aggregated rounds are anchored (the contract refuses a round without participants; a
skipped round did not change the model). Without a chain client the same records are produced,
hashes included, with ``anchored = False``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from eth_hash.auto import keccak

from federated.model import FLModel, load_model
from ledger.merkle import StandardMerkleTree, verify_proof


class ModelAnchor(Protocol):
    """What provenance needs of :class:`ledger.chain.ChainClient`."""

    def record_model_round(
        self,
        run_id: bytes,
        round: int,
        model_hash: bytes,
        participants: int,
        participants_root: bytes,
    ) -> str: ...

    def model_round(self, run_id: bytes, round: int) -> dict[str, Any] | None: ...


def supplier_leaf(supplier_id: str) -> bytes:
    return keccak(supplier_id.encode())


def participants_tree(supplier_ids: Iterable[str]) -> StandardMerkleTree:
    return StandardMerkleTree.of(sorted({supplier_leaf(s) for s in supplier_ids}))


def participants_root(supplier_ids: Iterable[str]) -> bytes:
    ids = list(supplier_ids)
    return participants_tree(ids).root if ids else bytes(32)


def participation_proof(supplier_id: str, supplier_ids: Iterable[str]) -> list[bytes]:
    return participants_tree(supplier_ids).proof(supplier_leaf(supplier_id))


def verify_participation(root: bytes, supplier_id: str, proof: Sequence[bytes]) -> bool:
    return verify_proof(root, supplier_leaf(supplier_id), proof)


def file_hash(path: Path) -> bytes:
    return keccak(path.read_bytes())


@dataclass
class RoundRecord:
    round: int
    status: str  # "initial" | "aggregated" | "skipped"
    model_hash: str  # 0x-hex
    model_file: str  # relative to the run directory
    metrics: dict[str, float]
    participants: list[str] = field(default_factory=list)  # supplier ids inside the aggregate
    participants_root: str = "0x" + "00" * 32
    sampled: int = 0
    dropped: int = 0
    seconds: float = 0.0
    train_loss: float | None = None
    epsilon: float | None = None  # client-level DP spent so far
    sample_epsilon: float | None = None  # sample-level DP spent so far (upper bound)
    note: str = ""
    anchored: bool = False
    tx_hash: str | None = None
    roster: list[str] = field(default_factory=list)  # round 0: suppliers that answered roll call
    stage_seconds: dict[str, float] = field(default_factory=dict)  # SecAgg+: seconds per stage

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def round_record(raw: dict[str, Any], run_dir: Path) -> RoundRecord:
    """Round record from one ``rounds.jsonl`` line, after checking the model file's hash."""
    model_path = run_dir / raw["model_file"]
    actual = "0x" + file_hash(model_path).hex()
    if actual != raw["model_hash"]:
        raise ValueError(
            f"round {raw['round']}: {model_path} hashes to {actual},"
            f" the record says {raw['model_hash']}"
        )
    suppliers = sorted(p["supplier_id"] for p in raw.get("participants", []))
    return RoundRecord(
        round=int(raw["round"]),
        status=str(raw["status"]),
        model_hash=raw["model_hash"],
        model_file=raw["model_file"],
        metrics=dict(raw.get("metrics", {})),
        participants=suppliers,
        participants_root="0x" + participants_root(suppliers).hex(),
        sampled=len(raw.get("sampled", [])),
        dropped=len(raw.get("dropped", [])),
        seconds=float(raw.get("seconds", 0.0)),
        train_loss=raw.get("train_loss"),
        epsilon=raw.get("epsilon"),
        sample_epsilon=raw.get("sample_epsilon"),
        note=str(raw.get("note", "")),
        roster=sorted(r["supplier_id"] for r in raw.get("roster", [])),
        stage_seconds={str(k): float(v) for k, v in raw.get("stage_seconds", {}).items()},
    )


def anchor_round(chain: ModelAnchor, run_id: bytes, record: RoundRecord) -> None:
    """Record an aggregated round in the ModelRegistry (in place: sets tx_hash/anchored)."""
    if record.status != "aggregated" or not record.participants:
        return
    record.tx_hash = chain.record_model_round(
        run_id,
        record.round,
        bytes.fromhex(record.model_hash[2:]),
        len(record.participants),
        bytes.fromhex(record.participants_root[2:]),
    )
    record.anchored = True


class RoundFollower(threading.Thread):
    """Tails a run's ``rounds.jsonl`` while the run goes on: checks, anchors, reports.

    The ServerApp only writes files (it may run in a process the launcher does not control, as
    in the deployment engine); the launcher follows them. This keeps anchoring and the progress
    display identical for both engines.
    """

    def __init__(
        self,
        run_dir: Path,
        run_id: bytes,
        chain: ModelAnchor | None,
        on_round: Callable[[RoundRecord], None] | None = None,
        poll: float = 0.05,
    ) -> None:
        super().__init__(name="fl-round-follower", daemon=True)
        self.path = run_dir / "rounds.jsonl"
        self.run_dir = run_dir
        self.run_id = run_id
        self.chain = chain
        self.on_round = on_round
        self.poll = poll
        self.records: list[RoundRecord] = []
        self.error: BaseException | None = None
        self._stop_event = threading.Event()
        self._offset = 0

    def _drain(self) -> None:
        if not self.path.exists():
            return
        with self.path.open() as fh:
            fh.seek(self._offset)
            while True:
                line = fh.readline()
                if not line.endswith("\n"):
                    break  # a partial line: the writer is mid-append, read it next time
                self._offset = fh.tell()
                record = round_record(json.loads(line), self.run_dir)
                if self.chain is not None:
                    anchor_round(self.chain, self.run_id, record)
                self.records.append(record)
                if self.on_round is not None:
                    self.on_round(record)

    def run(self) -> None:
        try:
            while not self._stop_event.is_set():
                self._drain()
                time.sleep(self.poll)
            self._drain()
        except BaseException as exc:  # surfaced by finish()
            self.error = exc

    def finish(self) -> list[RoundRecord]:
        self._stop_event.set()
        self.join()
        if self.error is not None:
            raise self.error
        return self.records


@dataclass
class VerificationIssue:
    round: int
    problem: str


def verify_run(
    chain: ModelAnchor,
    run_id: bytes,
    records: Sequence[RoundRecord],
    run_dir: Path,
    final_model: Path,
) -> list[VerificationIssue]:
    """Re-check a finished run against the chain; an empty list means everything matches.

    For every aggregated round: the model file still hashes to the anchored hash, and the
    anchored participant count and root match the record. The final model must be the model
    of the last anchored round.
    """
    issues: list[VerificationIssue] = []
    last_anchored: RoundRecord | None = None
    for rec in records:
        if rec.status != "aggregated":
            continue
        onchain = chain.model_round(run_id, rec.round)
        if onchain is None:
            issues.append(VerificationIssue(rec.round, "not anchored"))
            continue
        if "0x" + onchain["model_hash"].hex() != rec.model_hash:
            issues.append(VerificationIssue(rec.round, "anchored hash differs from the record"))
        if "0x" + file_hash(run_dir / rec.model_file).hex() != "0x" + onchain["model_hash"].hex():
            issues.append(
                VerificationIssue(rec.round, "model file does not match the anchored hash")
            )
        if onchain["participants"] != len(rec.participants):
            issues.append(VerificationIssue(rec.round, "participant count differs"))
        if "0x" + onchain["participants_root"].hex() != rec.participants_root:
            issues.append(VerificationIssue(rec.round, "participants root differs"))
        last_anchored = rec
    if (
        last_anchored is not None
        and "0x" + file_hash(final_model).hex() != last_anchored.model_hash
    ):
        issues.append(
            VerificationIssue(last_anchored.round, "final model is not the last anchored model")
        )
    return issues


def participation(records: Sequence[RoundRecord], run_id: bytes) -> dict[str, dict[str, Any]]:
    """Per-supplier participation evidence (feeds credit's data-sharing feature).

    For each supplier on the roster or in any round: how many aggregated rounds it was in, out
    of how many, and per round the anchored root, the Merkle proof of its membership and the
    transaction, so the credit side can verify each claim against the chain.
    """
    aggregated = [r for r in records if r.status == "aggregated"]
    suppliers = {s for r in records for s in (*r.roster, *r.participants)}
    out: dict[str, dict[str, Any]] = {}
    for sid in sorted(suppliers):
        rounds = []
        for rec in aggregated:
            if sid in rec.participants:
                rounds.append(
                    {
                        "round": rec.round,
                        "model_hash": rec.model_hash,
                        "participants_root": rec.participants_root,
                        "proof": [
                            "0x" + p.hex() for p in participation_proof(sid, rec.participants)
                        ],
                        "tx_hash": rec.tx_hash,
                    }
                )
        out[sid] = {
            "supplier_id": sid,
            "run_id": "0x" + run_id.hex(),
            "rounds_participated": len(rounds),
            "rounds_aggregated": len(aggregated),
            "share": (len(rounds) / len(aggregated)) if aggregated else 0.0,
            "rounds": rounds,
        }
    return out


def load_anchored_model(
    chain: ModelAnchor, run_id: bytes, path: Path | str, round: int | None = None
) -> FLModel:
    """Load a model file only if it is the model anchored for ``run_id`` (latest round by default).

    What the service and the responsibility matrix should call: a prediction then names a model
    whose hash anyone can look up in the ModelRegistry.
    """
    if round is None:
        latest = getattr(chain, "latest_model_round", None)
        round = latest(run_id) if latest is not None else None
        if round is None:
            raise ValueError(f"run 0x{run_id.hex()} has no anchored round")
    entry = chain.model_round(run_id, round)
    if entry is None:
        raise ValueError(f"round {round} of run 0x{run_id.hex()} is not anchored")
    return load_model(path, expected_hash=entry["model_hash"])
