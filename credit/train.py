"""Train the default credit model on simulated history, deterministically.

    python -m credit.train                 # writes credit/model_data/{model.json,meta.json}
    python -m credit.train --out /tmp/m    # elsewhere

Rows are (supplier, window end) pairs: features over the 180 days before the window end, label =
a field incident caused by that supplier in the next 90 days. Suppliers (not rows) are split into
train / validation / test so no supplier's history leaks across the split. One thread, fixed
seeds: the same command gives the same model file and therefore the same model version.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from credit.features import (
    DEFAULT_WINDOW_DAYS,
    FEATURE_NAMES,
    FEATURE_SCHEMA_VERSION,
    compute_features,
    feature_matrix,
)
from credit.model import BANDS, MODEL_DIR, CreditModel, band_of, risk_constraints
from simulator.population import MONTH, simulate_history

HORIZON_DAYS = 90  # "the next period": one quarter, the usual supplier-review cadence
WINDOW_MONTHS = (6, 9, 12, 15, 18)  # quarterly snapshots once a full window of history exists
SIM_MONTHS = 21  # last snapshot + the 3-month label horizon
DEFAULT_SUPPLIERS = 2000
DEFAULT_SEED = 20_250_101
PARAMS: dict[str, Any] = {
    "objective": "binary:logistic",
    "eval_metric": "logloss",
    "tree_method": "hist",
    "max_depth": 3,  # shallow trees: interactions of <= 3 features, explanations stay readable
    "eta": 0.05,
    "min_child_weight": 5.0,
    "subsample": 0.8,
    "lambda": 1.0,
    "nthread": 1,  # one thread: histogram sums in a fixed order, so training is reproducible
    "seed": 7,
}
MAX_ROUNDS = 600
EARLY_STOP = 40


@dataclass(frozen=True)
class Dataset:
    x: np.ndarray
    y: np.ndarray
    suppliers: np.ndarray  # supplier id per row, for grouped splits


def build_dataset(
    n_suppliers: int,
    seed: int,
    window_months: tuple[int, ...] = WINDOW_MONTHS,
    months: int = SIM_MONTHS,
) -> Dataset:
    """Simulate history and turn it into (features, next-period incident) rows."""
    pop = simulate_history(n_suppliers, months, seed)
    by_supplier = defaultdict(list)
    for it in pop.items:
        by_supplier[it.subject].append(it)
    vectors, labels, owners = [], [], []
    for truth in pop.suppliers:
        sid = truth.supplier_id
        for m in window_months:
            end = pop.start + m * MONTH
            vectors.append(
                compute_features(
                    by_supplier[sid],
                    sid,
                    end,
                    DEFAULT_WINDOW_DAYS,
                    fl_participation=pop.fl_participation(sid, end, DEFAULT_WINDOW_DAYS),
                )
            )
            labels.append(pop.incident_label(sid, end, HORIZON_DAYS))
            owners.append(sid)
    return Dataset(
        feature_matrix(vectors), np.asarray(labels, dtype=np.float64), np.asarray(owners)
    )


def fingerprint(data: Dataset, config: dict[str, Any]) -> str:
    """sha256 over the training matrix, labels and the config that produced them."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(data.x, dtype="<f8").tobytes())
    h.update(np.ascontiguousarray(data.y, dtype="<f8").tobytes())
    h.update(json.dumps(config, sort_keys=True).encode())
    return "sha256:" + h.hexdigest()


def split(data: Dataset, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row masks for train (70%), validation (15%), test (15%) by supplier."""
    ids = np.unique(data.suppliers)
    order = np.random.default_rng(seed).permutation(len(ids))
    n_train, n_valid = int(0.7 * len(ids)), int(0.15 * len(ids))
    groups = (
        ids[order[:n_train]],
        ids[order[n_train : n_train + n_valid]],
        ids[order[n_train + n_valid :]],
    )
    train, valid, test = (np.isin(data.suppliers, g) for g in groups)
    return train, valid, test


def calibration(y: np.ndarray, p: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """Expected calibration error and a reliability table over equal-count bins."""
    order = np.argsort(p, kind="stable")
    table = []
    ece = 0.0
    for chunk in np.array_split(order, bins):
        if len(chunk) == 0:
            continue
        predicted, observed = float(p[chunk].mean()), float(y[chunk].mean())
        ece += len(chunk) / len(y) * abs(predicted - observed)
        table.append(
            {"n": len(chunk), "predicted": round(predicted, 4), "observed": round(observed, 4)}
        )
    return {"ece": ece, "reliability": table}


def evaluate(model: CreditModel, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Held-out discrimination, calibration and incident rate per score band."""
    explained = model.explain(x)
    p = explained.probability
    bands = []
    for name, _ in BANDS:
        mask = np.array([band_of(s) == name for s in explained.scores])
        bands.append(
            {
                "band": name,
                "n": int(mask.sum()),
                "incident_rate": float(y[mask].mean()) if mask.any() else None,
            }
        )
    return {
        "n": len(y),
        "positive_rate": float(y.mean()),
        "auc": float(roc_auc_score(y, p)),
        "brier": float(brier_score_loss(y, p)),
        "log_loss": float(log_loss(y, p)),
        **calibration(y, p),
        "bands": bands,
        "score_quantiles": {
            q: float(np.percentile(explained.scores, q)) for q in (1, 10, 25, 50, 75, 90, 99)
        },
    }


def train(n_suppliers: int = DEFAULT_SUPPLIERS, seed: int = DEFAULT_SEED) -> CreditModel:
    data = build_dataset(n_suppliers, seed)
    train_rows, valid_rows, test_rows = split(data, seed)
    names = list(FEATURE_NAMES)
    params = {**PARAMS, "monotone_constraints": "(" + ",".join(map(str, risk_constraints())) + ")"}
    dtrain = xgb.DMatrix(data.x[train_rows], label=data.y[train_rows], feature_names=names)
    dvalid = xgb.DMatrix(data.x[valid_rows], label=data.y[valid_rows], feature_names=names)
    booster = xgb.train(
        params,
        dtrain,
        num_boost_round=MAX_ROUNDS,
        evals=[(dvalid, "valid")],
        early_stopping_rounds=EARLY_STOP,
        verbose_eval=False,
    )
    booster = booster[: booster.best_iteration + 1]
    config = {
        "n_suppliers": n_suppliers,
        "seed": seed,
        "months": SIM_MONTHS,
        "window_months": list(WINDOW_MONTHS),
        "window_days": DEFAULT_WINDOW_DAYS,
        "horizon_days": HORIZON_DAYS,
        "params": params,
    }
    meta: dict[str, Any] = {
        "schema_version": FEATURE_SCHEMA_VERSION,
        "feature_names": names,
        "training_fingerprint": fingerprint(data, config),
        "training": config,
        "rows": {
            "train": int(train_rows.sum()),
            "valid": int(valid_rows.sum()),
            "test": int(test_rows.sum()),
        },
        "trees": booster.num_boosted_rounds(),
        "nthread": 1,
    }
    model = CreditModel.from_booster(booster, meta)
    meta["test_metrics"] = evaluate(model, data.x[test_rows], data.y[test_rows])
    meta["score_scale"] = {
        "margin_best": model.margin_best,
        "margin_worst": model.margin_worst,
        "points_per_logit": model.factor,
        "base_points": model.base_points,
    }
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suppliers", type=int, default=DEFAULT_SUPPLIERS)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--out", type=Path, default=MODEL_DIR)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    model = train(args.suppliers, args.seed)
    model.save(args.out)
    saved = CreditModel.load(args.out)
    metrics = model.meta["test_metrics"]
    print(
        f"model {saved.version}: {model.meta['trees']} trees, "
        f"{sum(model.meta['rows'].values())} rows, held-out AUC {metrics['auc']:.3f}, "
        f"Brier {metrics['brier']:.4f}, ECE {metrics['ece']:.4f} "
        f"({time.perf_counter() - started:.1f} s) -> {args.out}"
    )


if __name__ == "__main__":
    main()
