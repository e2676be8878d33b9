"""The federated defect model inside the service: only a file whose keccak256 is the model
hash anchored in ModelRegistry is accepted, and every prediction names that hash."""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import select

from api.context import ServiceContext
from api.errors import ApiError
from api.store.models import ModelRound
from federated.model import FLModel, load_model
from ledger._hash import keccak

_cache: dict[str, FLModel] = {}
_lock = threading.Lock()


def model_path(ctx: ServiceContext, model_hash: str) -> Path:
    return ctx.settings.data_dir / "models" / f"{model_hash.lower()}.qlm"


def store_model_file(ctx: ServiceContext, run_id: str, body: bytes) -> dict[str, object]:
    """Keep ``body`` as the model of ``run_id``'s latest anchored round, if it is that model."""
    run = bytes.fromhex(run_id[2:])
    latest = ctx.chain.latest_model_round(run)
    entry = ctx.chain.model_round(run, latest) if latest is not None else None
    if entry is None:
        raise ApiError(404, "round_not_anchored", "this run has no anchored round", got=run_id)
    digest = keccak(body)
    if digest != entry["model_hash"]:
        raise ApiError(
            422,
            "model_hash_mismatch",
            "file is not the model anchored for the run's latest round",
            expected="0x" + entry["model_hash"].hex(),
            got="0x" + digest.hex(),
        )
    path = model_path(ctx, "0x" + digest.hex())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(body)
    try:
        load_model(tmp, expected_hash=digest)  # parses: refuse a hash-matching non-model
    except (ValueError, KeyError) as exc:
        tmp.unlink()
        raise ApiError(422, "invalid_model_file", f"not a qledger model file: {exc}") from exc
    tmp.replace(path)
    return {"runId": run_id, "round": latest, "modelHash": "0x" + digest.hex()}


def current_model(ctx: ServiceContext) -> tuple[FLModel, ModelRound] | None:
    """The newest reported round whose model file the service holds (hash re-checked)."""
    with ctx.sessions() as s:
        rounds = list(
            s.scalars(
                select(ModelRound).order_by(ModelRound.timestamp.desc(), ModelRound.round.desc())
            )
        )
    for row in rounds:
        path = model_path(ctx, row.model_hash)
        if not path.exists():
            continue
        with _lock:
            model = _cache.get(row.model_hash)
            if model is None:
                model = load_model(path, expected_hash=row.model_hash)
                _cache[row.model_hash] = model
        return model, row
    return None
