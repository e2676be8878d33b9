"""Root-cause hints for an 8D's D4, computed at the supplier on its own data.

A supplier whose defect rate rises asks the anchored federated model which of its process
parameters drive its defective shots, and which way to move them. Nothing leaves the supplier:
the model file is the one the consortium anchored (its keccak256 checked against the
ModelRegistry entry before use), the shots are the supplier's own log, and the result is a JSON
analysis the supplier keeps. What it may publish is that analysis's SHA-256, as an attachment of
its 8D (corrective_action) record: the hash is anchored with the record, so the supplier can
later show exactly what analysis it relied on, and the content stays with it unless it chooses
to share it.

Method. SHAP values (Lundberg & Lee 2017) of the model's defect log-odds for the supplier's
defective shots, against a *reference* of its own shots (shap's DeepExplainer, the DeepLIFT
rescale rule averaged over that reference). A shot's SHAP value for a parameter is how much
that parameter's value, compared with the reference, moves the shot's predicted log-odds; their
mean over the defective shots ranks the drivers. The reference is

- for the whole log (``recent`` = 1): the supplier's good shots;
- for a defect spike (``recent`` < 1: the last fraction of the log, where the rate rose): every
  shot before it, the line's normal running with its usual defects. The spike's defective shots
  are explained against that, so a chronic cause (present before and during the spike) cancels
  and what changed stands out. (In a trial on 28 simulated spikes with a centrally trained
  model, a chronic cause ranked above the drifted parameter in 5 against the good shots alone,
  in 2 against normal running.)

A spike's analysis also says how much of the observed rise the model itself predicts for the
same shots; below ``ACCOUNTED_MIN`` it carries a note that the ranking is not a root-cause hint.

For each driver the direction that lowers predicted defects is toward the reference median, and
the counterfactual is checked on the model: the explained shots' mean predicted defect
probability with that parameter set to the reference median. Only the process parameters are
ranked; the material grade and machine columns are reported together as "other" (the machine
is constant at one supplier).

It is a hint, not a proof: the model learnt associations across the consortium's lines; where
it did not learn a mechanism (too few shots anywhere in that regime) no explanation of it can
find that cause, and a parameter that moves together with the true cause can share its
attribution. tests/federated/test_fl_explain.py checks it on simulated drifts whose cause is
known.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from federated.data import FEATURE_NAMES, NUMERIC_FEATURES, Partition
from federated.model import FLModel, predict_proba

FORMAT = "qledger.fl-explain/1"
# Enough good shots to describe the supplier's normal window, and a bound on the work
# (DeepExplainer's cost grows with background x explained shots). Drawn with a fixed seed so the
# same data and model give the same analysis (and the same hash).
MAX_BACKGROUND = 100
MAX_EXPLAINED = 200
MIN_SHOTS = 10  # per class: fewer defective or good shots say nothing about a difference
# A spike's ranking is a hint only if the model itself predicts most of the spike: explaining a
# model that does not see the rise explains something else. On 54 simulated spikes
# (tests/federated/test_fl_explain.py) the drifted parameter ranked first in 37 of the 39 the
# model accounted for at least half of, and in 5 of the 15 below that.
ACCOUNTED_MIN = 0.5
_SEED = 20_240_822


class ExplainError(ValueError):
    """The supplier's data cannot support an analysis (too few defective or good shots)."""


@dataclass(frozen=True)
class Driver:
    feature: str
    unit: str
    mean_shap: float  # mean SHAP of the defective shots, log-odds, vs. the good shots
    share: float  # of the sum of the positive process-parameter contributions
    defective_median: float
    reference_median: float
    direction: str  # "lower" | "raise": toward reference_median, which lowers predicted defects
    risk_now: float  # mean predicted defect probability of the explained shots
    risk_if_moved: float  # ... with this parameter set to reference_median


@dataclass(frozen=True)
class Explanation:
    supplier_id: str
    model_hash: str
    data_sha256: str  # of the shots analysed (X, y as float32/uint8 bytes): which data it was
    shots: int
    defective: int
    recent: float  # the fraction of the log (its end) whose defective shots were explained
    reference: str  # what they were compared with
    # Spike only (recent < 1): the observed defect-rate rise of the window over the shots
    # before it, the rise the model predicts for the same shots, and their ratio.
    observed_rise: float | None
    predicted_rise: float | None
    accounted: float | None
    note: str  # why the ranking should not be read as a root-cause hint ("" if none)
    explained: int
    background: int
    drivers: list[Driver]  # every process parameter, strongest driver first
    other: float  # mean SHAP of material grade and machine columns together

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "method": "SHAP (shap.DeepExplainer) of the anchored model's defect log-odds",
            **asdict(self),
        }

    def to_json(self) -> bytes:
        """Canonical bytes (sorted keys, fixed separators): what the 8D attachment hashes."""
        return (
            json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
            + "\n"
        ).encode()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.to_json()).hexdigest()


class _Logit(nn.Module):
    """The model's defect log-odds as a [n, 1] output (the shape shap expects)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x).unsqueeze(-1)


def data_sha256(partition: Partition) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(partition.X, dtype="<f4").tobytes())
    h.update(np.ascontiguousarray(partition.y, dtype=np.uint8).tobytes())
    return h.hexdigest()


def _subset(rows: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    if len(rows) <= limit:
        return rows
    return rows[np.sort(rng.choice(len(rows), size=limit, replace=False))]


def explain_defects(model: FLModel, partition: Partition, recent: float = 1.0) -> Explanation:
    """Rank the process parameters that drive ``partition``'s defective shots (see module doc).

    ``recent`` is the fraction of the log (its end: shots are in time order) where the defect
    rate rose: its defective shots are explained against every shot before it (the line's
    normal running). 1.0 explains every defective shot against the good ones.
    """
    import shap  # heavy (numba, ...): only when an analysis is asked for

    if not 0.0 < recent <= 1.0:
        raise ExplainError(f"recent must be in (0, 1], got {recent}")
    y = partition.y.astype(bool)
    start = len(y) - round(len(y) * recent) if recent < 1.0 else 0
    window = np.arange(len(y)) >= start
    bad = partition.X[y & window]
    good = partition.X[~window] if start else partition.X[~y]
    reference = "shots before the spike window" if start else "good shots"
    if len(bad) < MIN_SHOTS or len(good) < MIN_SHOTS:
        raise ExplainError(
            f"{partition.supplier_id}: {len(bad)} defective shots to explain and {len(good)} "
            f"{reference} to compare with; need at least {MIN_SHOTS} of each"
        )
    rng = np.random.default_rng(_SEED)
    background = _subset(good, MAX_BACKGROUND, rng)
    explained = _subset(bad, MAX_EXPLAINED, rng)
    module = model.module
    module.eval()
    explainer = shap.DeepExplainer(_Logit(module), torch.from_numpy(background))
    values = np.asarray(
        explainer.shap_values(torch.from_numpy(explained), check_additivity=True), dtype=np.float64
    ).reshape(len(explained), len(FEATURE_NAMES))
    mean = values.mean(axis=0)

    numeric = [FEATURE_NAMES.index(f.name) for f in NUMERIC_FEATURES]
    other = float(sum(mean[i] for i in range(len(FEATURE_NAMES)) if i not in numeric))
    positive = float(sum(max(mean[i], 0.0) for i in numeric)) or 1.0
    risk_now = float(predict_proba(module, explained).mean())
    observed_rise = predicted_rise = accounted = None
    note = ""
    if start:
        predicted = predict_proba(module, partition.X)
        observed_rise = float(y[window].mean() - y[~window].mean())
        predicted_rise = float(predicted[window].mean() - predicted[~window].mean())
        accounted = predicted_rise / observed_rise if observed_rise > 0 else None
        if accounted is None:
            note = "the defect rate did not rise in the window: there is no spike to explain"
        elif accounted < ACCOUNTED_MIN:
            note = (
                f"the model predicts {predicted_rise:+.3f} of the observed {observed_rise:+.3f} "
                "rise: it does not account for this spike (a mechanism the consortium's model "
                "has not learnt?), so this ranking is not a root-cause hint"
            )
    drivers = []
    for feature, i in zip(NUMERIC_FEATURES, numeric, strict=True):
        bad_median = float(np.median(explained[:, i]))
        good_median = float(np.median(good[:, i]))
        moved = explained.copy()
        moved[:, i] = good_median
        drivers.append(
            Driver(
                feature=feature.name,
                unit=feature.unit,
                mean_shap=round(float(mean[i]), 6),
                share=round(max(float(mean[i]), 0.0) / positive, 6),
                defective_median=round(bad_median, 6),
                reference_median=round(good_median, 6),
                direction="lower" if bad_median > good_median else "raise",
                risk_now=round(risk_now, 6),
                risk_if_moved=round(float(predict_proba(module, moved).mean()), 6),
            )
        )
    drivers.sort(key=lambda d: d.mean_shap, reverse=True)
    return Explanation(
        supplier_id=partition.supplier_id,
        model_hash=model.hash_hex,
        data_sha256=data_sha256(partition),
        shots=len(partition),
        defective=int(y.sum()),
        recent=recent,
        reference=reference,
        observed_rise=None if observed_rise is None else round(observed_rise, 6),
        predicted_rise=None if predicted_rise is None else round(predicted_rise, 6),
        accounted=None if accounted is None else round(accounted, 6),
        note=note,
        explained=len(explained),
        background=len(background),
        drivers=drivers,
        other=round(other, 6),
    )


def attach_to_draft(draft: dict[str, Any], explanation: Explanation, name: str) -> dict[str, Any]:
    """``draft`` (an unsigned 8D corrective_action record) with the analysis attached by hash.

    Only the SHA-256 of the analysis's canonical bytes goes into the record (and so onto the
    ledger when the record is signed and anchored); the analysis itself stays with the supplier.
    An attachment of the same name is replaced (a re-run analysis), others are kept. Refused: a
    draft of another kind, or about another supplier than the one whose shots were analysed.
    """
    from ledger.records import Attachment, CorrectiveActionPayload, RecordKind

    if draft.get("kind") != RecordKind.CORRECTIVE_ACTION.value:
        raise ExplainError(
            f"the analysis goes into an 8D (kind {RecordKind.CORRECTIVE_ACTION.value!r}), "
            f"not a {draft.get('kind')!r} record"
        )
    if draft.get("subject") != explanation.supplier_id:
        raise ExplainError(
            f"the 8D is about {draft.get('subject')!r}, the analysis is of "
            f"{explanation.supplier_id!r}'s shots"
        )
    payload = dict(draft.get("payload") or {})
    attachment = Attachment(name=name, mediaType="application/json", sha256=explanation.sha256)
    kept = [a for a in payload.get("attachments", []) if a.get("name") != name]
    payload["attachments"] = [*kept, attachment.model_dump()]
    try:
        CorrectiveActionPayload.model_validate(payload)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise ExplainError(f"the 8D payload is not valid with the attachment: {exc}") from exc
    return {**draft, "payload": payload}
