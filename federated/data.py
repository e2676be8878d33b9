"""Supplier process data: the feature schema, a population simulator, and partition files.

Each supplier's *sensitive layer* (docs/domain.md: process recipes, equipment parameters) is one
injection-moulding line's shot log: mould and melt temperature, hold pressure and time, cycle
time, hall humidity, vibration amplitude, tool wear, the material lot's moisture and grade, and
the machine family -> defective part or not.

The simulator is deliberately non-IID. Every supplier shares one physical defect mechanism
(:func:`_defect_logit`, e.g. the DOMAIN example "vibration spike -> mould micro-deformation ->
flash"), but each runs its own machine family, its own operating window (means and spreads),
its own maintenance discipline (how worn tools get before replacement), its own climate and
material lots, and has its own data volume. So defect rates differ several-fold between
suppliers, and a model trained on one supplier's window extrapolates badly to another's: this is
what makes federating worth it.

On disk a partition is a directory holding ``process.npz`` (``X`` float32 [n, F], ``y`` uint8)
and ``supplier.json``; the OEM's pooled held-out set has the same layout under ``holdout/``.
Files are read with ``allow_pickle=False``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import SupportsFloat

import numpy as np

SCHEMA_VERSION = "qledger.process-features/1"


@dataclass(frozen=True)
class Feature:
    name: str
    unit: str
    # Fixed, schema-defined scaling (x - center) / scale. It is part of the schema, not fitted on
    # data: no party has pooled data to fit it on, and it must be identical at every supplier.
    center: float
    scale: float


MATERIAL_GRADES = ("A", "B", "C")
MACHINE_FAMILIES = ("hydraulic", "electric", "hybrid")

NUMERIC_FEATURES: tuple[Feature, ...] = (
    Feature("mold_temp_c", "Cel", 82.0, 4.0),
    Feature("melt_temp_c", "Cel", 235.0, 8.0),
    Feature("hold_pressure_bar", "bar", 600.0, 50.0),
    Feature("hold_time_s", "s", 3.0, 0.4),
    Feature("cycle_time_s", "s", 30.0, 4.0),
    Feature("humidity_pct", "%", 45.0, 12.0),
    Feature("vibration_mm_s", "mm/s", 2.5, 1.5),
    Feature("tool_wear_pct", "%", 50.0, 30.0),
    Feature("lot_moisture_pct", "%", 0.11, 0.05),
)
FEATURES: tuple[Feature, ...] = (
    NUMERIC_FEATURES
    + tuple(Feature(f"material_grade_{g}", "1", 0.0, 1.0) for g in MATERIAL_GRADES)
    + tuple(Feature(f"machine_{m}", "1", 0.0, 1.0) for m in MACHINE_FAMILIES)
)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
N_FEATURES = len(FEATURES)

PARTITION_FILE = "process.npz"
META_FILE = "supplier.json"
HOLDOUT_DIR = "holdout"


@dataclass(frozen=True)
class Partition:
    supplier_id: str
    X: np.ndarray  # float32 [n, N_FEATURES], raw units (scaling happens in the model)
    y: np.ndarray  # uint8 [n], 1 = defective

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def defect_rate(self) -> float:
        return float(self.y.mean()) if len(self) else 0.0


@dataclass(frozen=True)
class SupplierProfile:
    """How one supplier's line runs; the source of the non-IID split."""

    supplier_id: str
    machine: str
    n_samples: int
    mold_temp: tuple[float, float]  # (mean, sd)
    melt_temp: tuple[float, float]
    hold_pressure: tuple[float, float]
    hold_time: tuple[float, float]
    cycle_time: tuple[float, float]
    humidity: tuple[float, float]
    vibration_median: float
    max_tool_wear: float
    lot_moisture_mean: float
    grade_mix: tuple[float, float, float]


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def _defect_logit(cols: Mapping[str, np.ndarray]) -> np.ndarray:
    """The shared physics: log-odds of a defective shot given its process signals."""
    z = 0.7 * ((cols["mold_temp_c"] - 82.0) / 2.0) ** 2  # sink marks / flash off-window
    z = z + 0.5 * ((cols["melt_temp_c"] - 235.0) / 5.0) ** 2  # degradation or short shot
    z = z + 2.6 * _relu(cols["vibration_mm_s"] - 3.2)  # mould micro-deformation -> flash
    z = z + 3.2 * _relu(cols["tool_wear_pct"] - 70.0) / 15.0  # worn tool -> burrs
    z = z + 2.2 * _relu((560.0 - cols["hold_pressure_bar"]) / 30.0)  # short shot
    z = z + 1.8 * _relu((2.8 - cols["hold_time_s"]) / 0.2)  # sink marks
    # Wet resin splays, and the more so in a humid hall.
    z = z + 4.0 * _relu(cols["lot_moisture_pct"] - 0.14) / 0.04 * (cols["humidity_pct"] / 45.0)
    z = z + 1.6 * _relu((27.0 - cols["cycle_time_s"]) / 2.0)  # too little cooling time
    z = z + 1.0 * cols["material_grade_C"] - 0.4 * cols["material_grade_A"]
    z = z + 0.7 * cols["machine_hydraulic"] - 0.5 * cols["machine_electric"]
    return z - 6.5


def make_profiles(n_suppliers: int, seed: int) -> list[SupplierProfile]:
    """Process profiles of the same suppliers that :mod:`simulator.population` draws for ``seed``.

    Supplier ids and latent traits come from the credit simulator's population (same seed, same
    per-supplier random streams), so the participation evidence of a federated run names the
    suppliers the credit model scores, and a line's process data agrees with its latent truth:
    a capable process (high Cpk) runs a tighter window, a drifting one with long maintenance
    intervals lets tools wear further, and a strong quality culture keeps resin drier. The
    operating window's position, the machine and the data volume are drawn per supplier on top.
    """
    # Imported here: the ClientApp (which imports this module from the FAB) never needs it.
    from simulator.population import draw_truth

    if n_suppliers < 1:
        raise ValueError("need at least one supplier")
    streams = np.random.SeedSequence(seed).spawn(n_suppliers)
    profiles = []
    for k, stream in enumerate(streams):
        truth = draw_truth(np.random.default_rng(stream), f"SUP-{k + 1:05d}")
        rng = np.random.default_rng(np.random.SeedSequence([seed, k, 0xF1]))
        tight = 1.4 / truth.capability  # spreads scale with 1/Cpk
        machine = MACHINE_FAMILIES[int(rng.integers(len(MACHINE_FAMILIES)))]
        # Data volume spans 5x between suppliers (log-uniform 300..1500 shots).
        n = int(math.exp(rng.uniform(math.log(300), math.log(1500))))
        grade = rng.dirichlet(np.array([2.0, 1.5, 1.0]) * 2)
        wear = 50.0 + 4.0 * truth.reset_months + 60.0 * truth.drift_per_month
        profiles.append(
            SupplierProfile(
                supplier_id=truth.supplier_id,
                machine=machine,
                n_samples=n,
                mold_temp=(rng.uniform(78.5, 86.0), rng.uniform(0.8, 2.0) * tight),
                melt_temp=(rng.uniform(227.0, 243.0), rng.uniform(2.0, 4.0) * tight),
                hold_pressure=(rng.uniform(545.0, 660.0), rng.uniform(12.0, 28.0) * tight),
                hold_time=(rng.uniform(2.65, 3.4), rng.uniform(0.08, 0.2) * tight),
                cycle_time=(rng.uniform(26.0, 34.0), rng.uniform(0.6, 1.4) * tight),
                humidity=(rng.uniform(30.0, 65.0), rng.uniform(4.0, 10.0)),
                vibration_median=rng.uniform(1.4, 3.3),
                max_tool_wear=float(np.clip(wear, 55.0, 100.0)),
                lot_moisture_mean=float(
                    np.clip(0.115 - 0.02 * truth.culture + rng.normal(0, 0.015), 0.06, 0.18)
                ),
                grade_mix=(float(grade[0]), float(grade[1]), float(grade[2])),
            )
        )
    return profiles


# The way each process parameter drifts when it goes wrong, in the direction the shared defect
# mechanism (_defect_logit) punishes: hotter mould or melt, lower hold pressure, shorter hold or
# cycle, stronger vibration, longer tool life, wetter resin. Humidity is absent: it matters only
# through wet resin, so drifting it alone barely moves the defect rate.
DRIFT_DIRECTIONS: dict[str, float] = {
    "mold_temp_c": +1.0,
    "melt_temp_c": +1.0,
    "hold_pressure_bar": -1.0,
    "hold_time_s": -1.0,
    "cycle_time_s": -1.0,
    "vibration_mm_s": +1.0,
    "tool_wear_pct": +1.0,
    "lot_moisture_pct": +1.0,
}


@dataclass(frozen=True)
class Drift:
    """One process parameter of one supplier drifting: from shot ``start`` (a fraction of the
    log, the recent end) every shot's ``feature`` is moved by ``shift`` (in its own unit) before
    the shot's outcome is drawn, so the defects that follow are caused by it (the known cause)."""

    supplier_id: str
    feature: str
    shift: float
    start: float = 0.5

    def __post_init__(self) -> None:
        if self.feature not in {f.name for f in NUMERIC_FEATURES}:
            raise ValueError(f"unknown process parameter {self.feature!r}")
        if not 0.0 <= self.start < 1.0:
            raise ValueError("start must be in [0, 1)")

    @classmethod
    def harmful(cls, supplier_id: str, feature: str, scales: float, start: float = 0.5) -> Drift:
        """``scales`` schema scales (Feature.scale) in the direction that raises defects."""
        if feature not in DRIFT_DIRECTIONS:
            raise ValueError(
                f"{feature!r} has no harmful direction; one of {list(DRIFT_DIRECTIONS)}"
            )
        scale = next(f.scale for f in NUMERIC_FEATURES if f.name == feature)
        return cls(supplier_id, feature, DRIFT_DIRECTIONS[feature] * scales * scale, start)


def sample_supplier(
    profile: SupplierProfile, n: int, rng: np.random.Generator, drift: Drift | None = None
) -> Partition:
    """Draw ``n`` shots from one supplier's line (the last shots drifted, if ``drift``)."""
    cols: dict[str, np.ndarray] = {}
    cols["mold_temp_c"] = rng.normal(*profile.mold_temp, n)
    cols["melt_temp_c"] = rng.normal(*profile.melt_temp, n)
    cols["hold_pressure_bar"] = rng.normal(*profile.hold_pressure, n)
    cols["hold_time_s"] = rng.normal(*profile.hold_time, n)
    cols["cycle_time_s"] = rng.normal(*profile.cycle_time, n)
    cols["humidity_pct"] = np.clip(rng.normal(*profile.humidity, n), 5.0, 95.0)
    # Vibration is log-normal around the line's median, with occasional spikes.
    cols["vibration_mm_s"] = profile.vibration_median * np.exp(rng.normal(0.0, 0.35, n))
    # Tool wear cycles from a fresh tool up to the supplier's replacement point.
    cols["tool_wear_pct"] = rng.uniform(0.0, profile.max_tool_wear, n)
    # Material arrives in lots of ~60 shots; moisture is a property of the lot.
    n_lots = max(1, n // 60)
    lot_of_shot = rng.integers(n_lots, size=n)
    lot_moisture = np.clip(rng.normal(profile.lot_moisture_mean, 0.03, n_lots), 0.02, None)
    lot_grade = rng.choice(len(MATERIAL_GRADES), size=n_lots, p=np.array(profile.grade_mix))
    cols["lot_moisture_pct"] = lot_moisture[lot_of_shot]
    for g_index, grade in enumerate(MATERIAL_GRADES):
        cols[f"material_grade_{grade}"] = (lot_grade[lot_of_shot] == g_index).astype(np.float64)
    for family in MACHINE_FAMILIES:
        cols[f"machine_{family}"] = np.full(n, 1.0 if family == profile.machine else 0.0)
    if drift is not None and drift.supplier_id == profile.supplier_id:
        drifted = cols[drift.feature].copy()
        drifted[int(n * drift.start) :] += drift.shift
        cols[drift.feature] = np.clip(drifted, 0.0, None)  # no negative pressure or moisture
    p = 1.0 / (1.0 + np.exp(-_defect_logit(cols)))
    y = (rng.random(n) < p).astype(np.uint8)
    X = np.stack([cols[name] for name in FEATURE_NAMES], axis=1).astype(np.float32)
    return Partition(profile.supplier_id, X, y)


def save_partition(partition: Partition, directory: Path, extra_meta: Mapping[str, object]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    np.savez(directory / PARTITION_FILE, X=partition.X, y=partition.y)
    meta = {
        "supplier_id": partition.supplier_id,
        "schema": SCHEMA_VERSION,
        "features": list(FEATURE_NAMES),
        "n": len(partition),
        "defect_rate": round(partition.defect_rate, 6),
        **extra_meta,
    }
    (directory / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return directory


def load_partition(directory: Path | str) -> Partition:
    directory = Path(directory)
    meta = json.loads((directory / META_FILE).read_text())
    if meta.get("schema") != SCHEMA_VERSION:
        raise ValueError(
            f"{directory}: feature schema {meta.get('schema')!r} is not {SCHEMA_VERSION}"
        )
    with np.load(directory / PARTITION_FILE, allow_pickle=False) as npz:
        X = npz["X"].astype(np.float32, copy=False)
        y = npz["y"].astype(np.uint8, copy=False)
    if X.ndim != 2 or X.shape[1] != N_FEATURES or y.shape != (X.shape[0],):
        raise ValueError(f"{directory}: malformed partition X{X.shape} y{y.shape}")
    return Partition(str(meta["supplier_id"]), X, y)


def generate_partitions(
    n_suppliers: int,
    seed: int,
    out_dir: Path | str,
    holdout_fraction: float = 0.25,
    drift: Drift | None = None,
) -> list[Path]:
    """Write one partition directory per supplier under ``out_dir``; return them in order.

    Also writes the pooled held-out set to ``out_dir/holdout`` (``holdout_fraction`` of each
    supplier's volume, drawn from the same line). Only the OEM's ServerApp and the benchmark read
    it; in production the OEM would validate on its own incoming-inspection data. ``drift``
    drifts one parameter in one supplier's partition (not in the hold-out).
    """
    out = Path(out_dir)
    profiles = make_profiles(n_suppliers, seed)
    rng = np.random.default_rng(seed + 1)
    paths: list[Path] = []
    holdout_parts: list[Partition] = []
    for profile in profiles:
        part = sample_supplier(profile, profile.n_samples, rng, drift)
        meta: dict[str, object] = {"machine": profile.machine}
        if drift is not None and drift.supplier_id == profile.supplier_id:
            meta["drift"] = {"feature": drift.feature, "shift": drift.shift, "start": drift.start}
        paths.append(save_partition(part, out / profile.supplier_id, meta))
        holdout_parts.append(
            sample_supplier(profile, max(20, int(profile.n_samples * holdout_fraction)), rng)
        )
    holdout = Partition(
        "holdout",
        np.concatenate([p.X for p in holdout_parts]),
        np.concatenate([p.y for p in holdout_parts]),
    )
    save_partition(holdout, out / HOLDOUT_DIR, {"suppliers": [p.supplier_id for p in profiles]})
    return paths


def supplier_log(
    n_suppliers: int, seed: int, supplier_id: str, n: int, log_seed: int, drift: Drift | None = None
) -> Partition:
    """A fresh stretch of ``n`` shots from one supplier's line (of the population drawn for
    ``seed``), e.g. the weeks after the model was trained, with ``drift`` if given."""
    profile = next(
        (p for p in make_profiles(n_suppliers, seed) if p.supplier_id == supplier_id), None
    )
    if profile is None:
        raise ValueError(f"no supplier {supplier_id!r} among {n_suppliers}")
    return sample_supplier(profile, n, np.random.default_rng([seed, log_seed, 0xD1]), drift)


def partition_dirs(data_dir: Path | str) -> list[Path]:
    """Supplier partition directories under ``data_dir`` (sorted; the hold-out excluded)."""
    root = Path(data_dir)
    return sorted(
        p
        for p in root.iterdir()
        if p.is_dir() and p.name != HOLDOUT_DIR and (p / META_FILE).is_file()
    )


def encode_rows(rows: Sequence[Mapping[str, object]]) -> np.ndarray:
    """Feature matrix from named rows (``material_grade`` / ``machine`` as category strings).

    This is the form the service passes in: ``{"mold_temp_c": 83.1, ..., "material_grade": "B",
    "machine": "electric"}``. A row may instead carry the one-hot columns directly.
    """
    X = np.zeros((len(rows), N_FEATURES), dtype=np.float32)
    index = {name: i for i, name in enumerate(FEATURE_NAMES)}
    for r, row in enumerate(rows):
        for key, value in row.items():
            if key == "material_grade":
                if value not in MATERIAL_GRADES:
                    raise ValueError(f"unknown material grade {value!r}")
                X[r, index[f"material_grade_{value}"]] = 1.0
            elif key == "machine":
                if value not in MACHINE_FAMILIES:
                    raise ValueError(f"unknown machine family {value!r}")
                X[r, index[f"machine_{value}"]] = 1.0
            elif key in index:
                if not isinstance(value, str | SupportsFloat):
                    raise TypeError(f"feature {key!r} is not a number: {type(value).__name__}")
                X[r, index[key]] = float(value)
            else:
                raise ValueError(f"unknown feature {key!r}")
        missing = [f.name for f in NUMERIC_FEATURES if f.name not in row]
        if missing:
            raise ValueError(f"row {r} lacks {missing}")
    return X
