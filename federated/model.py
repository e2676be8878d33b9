"""The defect model (torch MLP), local training/evaluation, and the canonical model file.

Model file (``.qlm``), which is also the exact byte string that is hashed and anchored::

    b"QLFLMDL1"                        8-byte magic
    uint32 little-endian               length H of the header
    header                             H bytes of UTF-8 JSON, keys sorted, separators "," ":",
                                       ASCII only: {"arch", "features", "format", "schema",
                                       "tensors": [{"name", "shape", "dtype": "<f4"}, ...]}
    tensor data                        each tensor in header order, float32 little-endian,
                                       C order, no padding

    model_hash = keccak256(whole file)

So anyone holding the file recomputes the hash with any keccak256 implementation and compares it
with the registry entry on chain; and anyone holding only the arrays (e.g. a Flower ArrayRecord)
rebuilds the file with :func:`serialize` and gets the same bytes. The header carries the feature
schema and the fixed input scaling, so the hash also pins how raw features are interpreted.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from eth_hash.auto import keccak
from torch import nn

from federated.data import FEATURE_NAMES, FEATURES, N_FEATURES, SCHEMA_VERSION, encode_rows

MAGIC = b"QLFLMDL1"
FORMAT = "qledger.fl-model/1"
_CENTER = np.array([f.center for f in FEATURES], dtype=np.float32)
_SCALE = np.array([f.scale for f in FEATURES], dtype=np.float32)


class DefectMLP(nn.Module):
    """Tabular MLP: fixed schema scaling -> [Linear, ReLU]* -> defect logit."""

    # Registered as buffers in __init__; declared so their type is a Tensor, not a Module.
    center: torch.Tensor
    scale: torch.Tensor

    def __init__(self, n_features: int = N_FEATURES, hidden: Sequence[int] = (64, 32)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)
        self.hidden = tuple(int(h) for h in hidden)
        # Buffers, not parameters: never exchanged, never averaged (SecAgg+ would also clip
        # them to its +-8 quantisation range). They are pinned by the schema in the file header.
        self.register_buffer("center", torch.from_numpy(_CENTER.copy()), persistent=False)
        self.register_buffer("scale", torch.from_numpy(_SCALE.copy()), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.center) / self.scale).squeeze(-1)


def param_names(model: DefectMLP) -> list[str]:
    return [name for name, _ in model.named_parameters()]


def get_arrays(model: nn.Module) -> list[np.ndarray]:
    """Trainable parameters in ``named_parameters()`` order, as float32 arrays (copies)."""
    return [p.detach().cpu().numpy().astype(np.float32, copy=True) for p in model.parameters()]


def set_arrays(model: nn.Module, arrays: Sequence[np.ndarray]) -> None:
    params = list(model.parameters())
    if len(params) != len(arrays):
        raise ValueError(f"expected {len(params)} arrays, got {len(arrays)}")
    with torch.no_grad():
        for p, a in zip(params, arrays, strict=True):
            if tuple(p.shape) != tuple(a.shape):
                raise ValueError(f"shape mismatch {tuple(p.shape)} vs {tuple(a.shape)}")
            p.copy_(torch.from_numpy(np.asarray(a, dtype=np.float32)))


def new_model(hidden: Sequence[int], seed: int) -> DefectMLP:
    torch.manual_seed(seed)
    return DefectMLP(N_FEATURES, hidden)


def train_epochs(
    model: DefectMLP,
    X: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
) -> float:
    """Minibatch SGD with momentum on BCE; returns the mean loss of the last epoch.

    Used identically by a supplier's ClientApp, the centralised upper bound and the
    each-supplier-alone baseline, so the benchmark compares aggregation, not training code.
    SGD rather than Adam: Adam's moments restart with every round's fresh optimiser and its
    first steps have a fixed size whatever the gradient, which made non-IID clients drift apart
    (FedAvg plateaued ~3 points under centralised in our runs; with SGD+momentum it closes).
    """
    gen = torch.Generator().manual_seed(seed)
    xt = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
    yt = torch.from_numpy(y.astype(np.float32))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    loss_fn = nn.BCEWithLogitsLoss()
    model.train()
    last = float("nan")
    for _ in range(epochs):
        order = torch.randperm(len(yt), generator=gen)
        total, count = 0.0, 0
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            opt.zero_grad()
            loss = loss_fn(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        last = total / max(count, 1)
    return last


def train_epochs_dp(
    model: DefectMLP,
    X: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    steps_per_epoch: int,
    lr: float,
    noise_multiplier: float,
    max_grad_norm: float,
) -> tuple[float, int]:
    """Local DP-SGD (opacus): the sample-level counterpart of :func:`train_epochs`.

    Each step draws a Poisson sample of the shots at rate ``1 / steps_per_epoch`` (a shot is in
    a step's batch with that probability, independently), clips every shot's gradient to
    ``max_grad_norm`` and adds Gaussian noise of std ``noise_multiplier * max_grad_norm`` to the
    sum; ``epochs * steps_per_epoch`` steps in all. Returns the mean loss of the last epoch's
    batches and the number of steps taken (what :func:`federated.privacy.sample_level_epsilon`
    composes).

    The sampling and the noise draw from a generator seeded with fresh OS randomness, never from
    the run's seed: the OEM knows the run's seed and the supplier id, so noise derived from
    them could be regenerated and subtracted. (Opacus's ``secure_mode`` would also harden the
    noise against floating-point attacks; it needs torchcsprng, which is not installed; see
    docs/federated.md.)
    """
    import secrets
    import warnings

    from opacus import PrivacyEngine
    from opacus.data_loader import DPDataLoader
    from torch.utils.data import TensorDataset

    if len(y) < steps_per_epoch:
        # Opacus scales the noisy sum by the expected batch size len(y) / steps_per_epoch,
        # which must be at least one shot.
        raise ValueError(
            f"sample-level DP needs at least {steps_per_epoch} shots (one per step), got {len(y)}"
        )
    model.train()
    secret = torch.Generator().manual_seed(secrets.randbits(63))
    dataset = TensorDataset(
        torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)),
        torch.from_numpy(y.astype(np.float32)),
    )
    loader = DPDataLoader(dataset, sample_rate=1.0 / steps_per_epoch, generator=secret)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    # The loader above already samples (Poisson, at our rate): opacus keeps it as it is, and
    # derives the expected batch size from it for the noise scale of the mean.
    with warnings.catch_warnings():
        # It warns that secure_mode is off, which docs/federated.md states.
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        engine = PrivacyEngine(accountant="rdp")
    dp_model, dp_opt, dp_loader = engine.make_private(
        module=model,
        optimizer=opt,
        data_loader=loader,
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        poisson_sampling=False,
        noise_generator=secret,
    )
    loss_fn = nn.BCEWithLogitsLoss()
    steps = 0
    last = float("nan")
    try:
        for _ in range(epochs):
            total, count = 0.0, 0
            for xb, yb in dp_loader:
                dp_opt.zero_grad()
                # An empty Poisson batch still takes its step (zero per-shot gradients, pure
                # noise): skipping it would show the batch was empty, and the accountant counts
                # every step.
                loss = loss_fn(dp_model(xb), yb)
                with warnings.catch_warnings():
                    # opacus's per-shot hooks on a module whose input needs no gradient.
                    warnings.filterwarnings("ignore", message="Full backward hook is firing")
                    loss.backward()
                dp_opt.step()
                if len(yb):
                    total += float(loss.detach()) * len(yb)
                    count += len(yb)
                steps += 1
            last = total / max(count, 1)
    finally:
        # make_private wraps the module in place (hooks); leave the caller a plain DefectMLP.
        dp_model.to_standard_module()
    return last, steps


def predict_proba(model: DefectMLP, X: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)))
    return torch.sigmoid(logits).numpy().astype(np.float64)


def roc_auc(y: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) identity, ties counted half."""
    y = np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    # Average ranks over runs of equal scores.
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(scores)]])
    for s, e in zip(starts, ends, strict=True):
        ranks[order[s:e]] = (s + e + 1) / 2.0
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def evaluate(model: DefectMLP, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
    p = predict_proba(model, X)
    eps = 1e-7
    loss = float(-np.mean(y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps)))
    return {
        "loss": loss,
        "accuracy": float(np.mean((p >= 0.5) == (y == 1))),
        "auc": roc_auc(y, p),
    }


# --- canonical file ---------------------------------------------------------------------------


def _header(hidden: Sequence[int], names: Sequence[str], arrays: Sequence[np.ndarray]) -> bytes:
    header = {
        "format": FORMAT,
        "arch": {"kind": "mlp", "n_features": N_FEATURES, "hidden": [int(h) for h in hidden]},
        "schema": SCHEMA_VERSION,
        "features": [
            {"name": f.name, "unit": f.unit, "center": f.center, "scale": f.scale} for f in FEATURES
        ],
        "tensors": [
            {"name": n, "shape": [int(d) for d in a.shape], "dtype": "<f4"}
            for n, a in zip(names, arrays, strict=True)
        ],
    }
    return json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def serialize(arrays: Sequence[np.ndarray], hidden: Sequence[int]) -> bytes:
    """Canonical bytes of a model given its parameter arrays (see the module docstring)."""
    names = param_names(DefectMLP(N_FEATURES, hidden))
    if len(names) != len(arrays):
        raise ValueError(
            f"an MLP with hidden={list(hidden)} has {len(names)} tensors, got {len(arrays)}"
        )
    header = _header(hidden, names, arrays)
    body = b"".join(np.ascontiguousarray(a, dtype="<f4").tobytes() for a in arrays)
    return MAGIC + struct.pack("<I", len(header)) + header + body


def model_hash(arrays: Sequence[np.ndarray], hidden: Sequence[int]) -> bytes:
    return keccak(serialize(arrays, hidden))


def save_model(path: Path | str, arrays: Sequence[np.ndarray], hidden: Sequence[int]) -> bytes:
    """Write the canonical file; return its keccak256 (the model hash)."""
    data = serialize(arrays, hidden)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)  # readers (the round follower) never see a half-written model
    return keccak(data)


@dataclass(frozen=True)
class FLModel:
    """A loaded model file: the module, its hash, and where it came from."""

    module: DefectMLP
    model_hash: bytes
    header: dict[str, Any]
    path: Path | None = None

    @property
    def hash_hex(self) -> str:
        return "0x" + self.model_hash.hex()


def parse_model_bytes(data: bytes) -> tuple[dict[str, Any], list[np.ndarray]]:
    if data[:8] != MAGIC:
        raise ValueError("not a qledger FL model file (bad magic)")
    (hlen,) = struct.unpack("<I", data[8:12])
    header = json.loads(data[12 : 12 + hlen])
    if header.get("format") != FORMAT:
        raise ValueError(f"unsupported model format {header.get('format')!r}")
    if header.get("schema") != SCHEMA_VERSION:
        raise ValueError(f"model was trained on feature schema {header.get('schema')!r}")
    arrays: list[np.ndarray] = []
    offset = 12 + hlen
    for t in header["tensors"]:
        count = int(np.prod(t["shape"])) if t["shape"] else 1
        nbytes = count * 4
        chunk = data[offset : offset + nbytes]
        if len(chunk) != nbytes:
            raise ValueError("truncated model file")
        arrays.append(np.frombuffer(chunk, dtype="<f4").reshape(t["shape"]).astype(np.float32))
        offset += nbytes
    if offset != len(data):
        raise ValueError("trailing bytes after the last tensor")
    return header, arrays


def load_model(path: Path | str, expected_hash: bytes | str | None = None) -> FLModel:
    """Load a ``.qlm`` file; with ``expected_hash`` (e.g. read from the chain) refuse a mismatch."""
    path = Path(path)
    data = path.read_bytes()
    digest = keccak(data)
    if expected_hash is not None:
        want = (
            bytes.fromhex(expected_hash.removeprefix("0x"))
            if isinstance(expected_hash, str)
            else expected_hash
        )
        if want != digest:
            raise ValueError(f"{path}: hash 0x{digest.hex()} != expected 0x{want.hex()}")
    header, arrays = parse_model_bytes(data)
    module = DefectMLP(header["arch"]["n_features"], header["arch"]["hidden"])
    set_arrays(module, arrays)
    module.eval()
    return FLModel(module=module, model_hash=digest, header=header, path=path)


def predict_defect_risk(
    model: FLModel | DefectMLP, features: np.ndarray | Sequence[Mapping[str, object]]
) -> np.ndarray:
    """Defect probability per row.

    ``features`` is either a float array [n, F] in :data:`federated.data.FEATURE_NAMES` order
    or a sequence of named rows (see :func:`federated.data.encode_rows`). Report the model's
    ``hash_hex`` alongside the risks so the prediction can be traced to the anchored model.
    """
    module = model.module if isinstance(model, FLModel) else model
    if isinstance(features, np.ndarray):
        X = features.astype(np.float32, copy=False)
        if X.ndim == 1:
            X = X[None, :]
        if X.shape[1] != N_FEATURES:
            raise ValueError(f"expected {N_FEATURES} features ({', '.join(FEATURE_NAMES)})")
    else:
        X = encode_rows(list(features))
    return predict_proba(module, X)
