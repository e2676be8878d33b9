"""Root-cause hints for an 8D's D4, computed at the supplier on its own data.

A supplier whose defect rate rises asks the anchored federated model which of its process
parameters drive its defective shots, and which way to move them. Nothing leaves the supplier:
the model file is the one the consortium anchored (its keccak256 checked against the
ModelRegistry entry before use), the shots are the supplier's own log, and the result is a JSON
analysis the supplier keeps. What it may publish is that analysis's SHA-256, as an attachment of
its 8D (corrective_action) record: the hash is anchored with the record, so the supplier can
later show exactly what analysis it relied on, and the content stays with it unless it chooses
to share it.

Method: exact Shapley values, interventional, of the model's predicted defect probability.
The question is why a set of *explained* shots is predicted worse than a *reference* set of the
supplier's own shots:

- for a defect spike (``recent`` < 1: the last fraction of the log, where the rate rose), the
  explained shots are every shot of that window and the reference is every shot before it, the
  line's normal running: what changed between the two;
- for the whole log (``recent`` = 1), the explained shots are the defective ones and the
  reference the good ones: what sets the defective shots apart.

The players are the nine process parameters and one more, "other" (material grade and machine
one-hot columns together: a shot has one grade and one machine, and the machine is constant at
one supplier). The value of a coalition S is the mean predicted defect probability over pairs
(explained shot, reference shot) of the shot built from the explained one's parameters in S and
the reference one's elsewhere (Janzing et al. 2020's interventional value; Sundararajan & Najmi
2020's "baseline Shapley" averaged over a reference distribution; for a shift between two
sets, Budhathoki et al. 2021). All 2^10 = 1024 coalitions are evaluated on the same pairs, so
the Shapley values are exact for that sample and:

- they add up (with "other") to the predicted gap, the mean predicted probability of the
  explained shots minus that of the paired reference shots; for a spike that is the rise the
  model predicts, so each parameter's value is its part of that rise;
- a parameter whose distribution did not change between the two sets gets nothing in
  expectation, however strongly it drives defects in general (it is drawn from the same
  distribution whether in the coalition or not): a chronic cause cancels and what changed
  stands out;
- each parameter's counterfactual is read off the same table: the explained shots' predicted
  defect rate with that parameter alone moved back to its reference distribution
  (``risk_if_moved``), i.e. the value of every player but it.

Why not SHAP's DeepExplainer, which the first version used (DeepLIFT's rescale rule, attributions
of each defective shot's log-odds averaged over a background): on 54 simulated spikes the
drifted parameter ranked first in 37 of the 39 hinted, second in 2 (hold pressure behind
vibration, at two lines that vibrate strongly). Two things caused that, measured on the same
spikes and model: DeepLIFT's rescale rule is an approximation of Shapley values for a ReLU
network that lets an interacting parameter take a share of another's effect (exact interventional
Shapley of the same log-odds of the same defective shots ranks all 39 first), and explaining only
the defective shots of the window selects on the outcome, which enriches them in whatever causes
defects at that line, chronic causes included (exact Shapley of the defective shots'
probability: 36 of 39). Explaining every window shot's probability against the shots before
fixes both, and the contributions then add up to the predicted rise. With ten players exact
enumeration is affordable (1024 coalitions x ``PAIRS`` pairs through a small MLP, about a
second on one core), so nothing is sampled but the pairs, with a fixed seed: the same data and
model give the same analysis and hash.

A spike's analysis also says how much of the observed rise the model itself predicts for the
same shots; below ``ACCOUNTED_MIN`` it carries a note that the ranking is not a root-cause hint.
For each driver the direction that lowers predicted defects is toward the reference: the sign of
the difference of the two sides' means (a mean, not a median: a parameter set per material lot,
such as moisture, can shift its upper tail with the same median on both sides).

It is a hint, not a proof: the model learnt associations across the consortium's lines; where
it did not learn a mechanism (too few shots anywhere in that regime) no explanation of it can
find that cause, and a parameter that moves together with the true cause can share its
attribution. tests/federated/test_fl_explain.py checks it on simulated drifts whose cause is
known, over several consortia.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from federated.data import FEATURE_NAMES, N_FEATURES, NUMERIC_FEATURES, Partition
from federated.model import FLModel, predict_proba

FORMAT = "qledger.fl-explain/2"
METHOD = (
    "exact interventional Shapley values of the anchored model's predicted defect probability "
    "(9 process parameters + other), explained shots paired with reference shots"
)
# The players: each process parameter alone, then the material grade and machine one-hot
# columns as one ("other"), so that a built shot always has exactly one grade and one machine.
_NUMERIC = tuple(FEATURE_NAMES.index(f.name) for f in NUMERIC_FEATURES)
PLAYERS: tuple[str, ...] = (*(f.name for f in NUMERIC_FEATURES), "other")
_GROUPS: tuple[tuple[int, ...], ...] = (
    *((i,) for i in _NUMERIC),
    tuple(i for i in range(N_FEATURES) if i not in _NUMERIC),
)
# Bounds on the work, drawn with a fixed seed so the same data and model give the same analysis
# (and the same hash). 400 shots on each side describe a window and its reference well (a
# mean's standard error is 5% of a standard deviation at n = 400). At least 2,048 pairs
# (each explained shot equally often: 2,400 for a 400-shot window): over 8 pairing seeds on four
# simulated spikes a contribution's sd was at most 0.002 probability (0.0022 at 1,024 pairs),
# against 0.07 for the smallest hinted drifted parameter's; 2^10 coalitions x 2,400 pairs through
# the MLP take 0.4-0.7 s on one loaded core.
MAX_EXPLAINED = 400
MAX_REFERENCE = 400
PAIRS = 2048
_CHUNK = 32  # coalitions per forward pass: 32 x 2,400 rows x 64 hidden floats ~ 20 MB
MIN_SHOTS = 10  # per side: fewer defective or reference shots say nothing about a difference
# A spike's ranking is a hint only if the model itself predicts most of the spike: explaining a
# model that does not see the rise explains something else. Half, as in the first version; what
# it flags on simulated consortia is measured in tests/federated/test_fl_explain.py and
# docs/federated.md ("Root-cause hints").
ACCOUNTED_MIN = 0.5
_SEED = 20_240_822


class ExplainError(ValueError):
    """The supplier's data cannot support an analysis (too few defective or reference shots)."""


@dataclass(frozen=True)
class Driver:
    feature: str
    unit: str
    # Exact Shapley value: this parameter's part of the predicted gap (probability, explained
    # shots minus reference), interactions shared fairly with the parameters they involve.
    contribution: float
    share: float  # of the sum of the positive process-parameter contributions
    explained_mean: float
    reference_mean: float
    direction: str  # "lower" | "raise": toward reference_mean, which lowers predicted defects
    risk_now: float  # mean predicted defect probability of the explained shots
    risk_if_moved: float  # ... with this parameter alone drawn from the reference shots


@dataclass(frozen=True)
class Explanation:
    supplier_id: str
    model_hash: str
    data_sha256: str  # of the shots analysed (X, y as float32/uint8 bytes): which data it was
    shots: int
    defective: int
    recent: float  # the fraction of the log (its end) that was explained
    explained_shots: str  # which shots were explained
    reference: str  # what they were compared with
    # Spike only (recent < 1): the observed defect-rate rise of the window over the shots
    # before it, the rise the model predicts for the same shots, and their ratio.
    observed_rise: float | None
    predicted_rise: float | None
    accounted: float | None
    note: str  # why the ranking should not be read as a root-cause hint ("" if none)
    explained: int  # explained shots used (at most MAX_EXPLAINED)
    reference_shots: int  # reference shots used (at most MAX_REFERENCE)
    pairs: int
    # Mean predicted defect probability of the explained shots minus that of their paired
    # reference shots: what the contributions (drivers and other) add up to.
    predicted_gap: float
    drivers: list[Driver]  # every process parameter, strongest driver first
    other: float  # contribution of material grade and machine together

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "method": METHOD, **asdict(self)}

    def to_json(self) -> bytes:
        """Canonical bytes (sorted keys, fixed separators): what the 8D attachment hashes."""
        return (
            json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
            + "\n"
        ).encode()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.to_json()).hexdigest()


def data_sha256(partition: Partition) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(partition.X, dtype="<f4").tobytes())
    h.update(np.ascontiguousarray(partition.y, dtype=np.uint8).tobytes())
    return h.hexdigest()


def _subset(rows: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    if len(rows) <= limit:
        return rows
    return rows[np.sort(rng.choice(len(rows), size=limit, replace=False))]


def coalition_values(
    module: nn.Module,
    explained: np.ndarray,
    reference: np.ndarray,
    explained_index: np.ndarray,
    reference_index: np.ndarray,
) -> np.ndarray:
    """``v[c]`` for every coalition ``c`` of :data:`PLAYERS` (bit ``p`` set: player ``p`` takes
    the explained shot's values): the mean predicted defect probability over the pairs
    ``(explained[explained_index[k]], reference[reference_index[k]])`` of the built shots."""
    n = len(_GROUPS)
    members = (np.arange(2**n)[:, None] >> np.arange(n)) & 1
    take = np.zeros((2**n, N_FEATURES), dtype=bool)
    for p, columns in enumerate(_GROUPS):
        take[:, list(columns)] = members[:, [p]].astype(bool)
    xw = torch.from_numpy(np.ascontiguousarray(explained[explained_index], dtype=np.float32))
    xr = torch.from_numpy(np.ascontiguousarray(reference[reference_index], dtype=np.float32))
    values = np.empty(2**n, dtype=np.float64)
    module.eval()
    with torch.no_grad():
        for start in range(0, 2**n, _CHUNK):
            mask = torch.from_numpy(take[start : start + _CHUNK])[:, None, :]
            built = torch.where(mask, xw[None], xr[None]).reshape(-1, N_FEATURES)
            proba = torch.sigmoid(module(built)).reshape(mask.shape[0], -1)
            values[start : start + mask.shape[0]] = proba.double().mean(dim=1).numpy()
    return values


def shapley(values: np.ndarray) -> np.ndarray:
    """Exact Shapley values of the game ``values`` (indexed by coalition bitmask)."""
    n = len(values).bit_length() - 1
    if 2**n != len(values):
        raise ValueError(f"expected 2^n coalition values, got {len(values)}")
    codes = np.arange(2**n)
    size = np.array([bin(c).count("1") for c in codes])
    weight = np.array(
        [math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n) for s in range(n)]
    )
    phi = np.empty(n, dtype=np.float64)
    for p in range(n):
        without = codes[((codes >> p) & 1) == 0]
        phi[p] = float(
            np.sum(weight[size[without]] * (values[without | (1 << p)] - values[without]))
        )
    return phi


def _pairs(n_explained: int, n_reference: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Every explained shot the same number of times and every reference shot as evenly as the
    count allows, so the full coalition's value is exactly the explained shots' mean and the
    empty one's the reference shots' mean (to one pair's share when the counts do not divide)."""
    repeat = math.ceil(PAIRS / n_explained)
    explained_index = np.repeat(np.arange(n_explained), repeat)
    reference_index = rng.permutation(np.resize(rng.permutation(n_reference), len(explained_index)))
    return explained_index, reference_index


def explain_defects(model: FLModel, partition: Partition, recent: float = 1.0) -> Explanation:
    """Rank the process parameters that drive ``partition``'s defects (see module doc).

    ``recent`` is the fraction of the log (its end: shots are in time order) where the defect
    rate rose: its shots are explained against every shot before it (the line's normal running).
    1.0 explains the defective shots against the good ones.
    """
    if not 0.0 < recent <= 1.0:
        raise ExplainError(f"recent must be in (0, 1], got {recent}")
    y = partition.y.astype(bool)
    start = len(y) - round(len(y) * recent) if recent < 1.0 else 0
    window = np.arange(len(y)) >= start
    defective = int((y & window).sum())
    if start:
        shots, good = partition.X[window], partition.X[~window]
        what, reference = "shots of the spike window", "shots before the spike window"
    else:
        shots, good = partition.X[y], partition.X[~y]
        what, reference = "defective shots", "good shots"
    if defective < MIN_SHOTS or len(good) < MIN_SHOTS:
        raise ExplainError(
            f"{partition.supplier_id}: {defective} defective shots to explain and {len(good)} "
            f"{reference} to compare with; need at least {MIN_SHOTS} of each"
        )
    rng = np.random.default_rng(_SEED)
    explained = _subset(shots, MAX_EXPLAINED, rng)
    base = _subset(good, MAX_REFERENCE, rng)
    explained_index, reference_index = _pairs(len(explained), len(base), rng)
    module = model.module
    values = coalition_values(module, explained, base, explained_index, reference_index)
    phi = shapley(values)
    everyone = 2 ** len(PLAYERS) - 1
    risk_now = float(values[everyone])

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
    positive = float(sum(max(v, 0.0) for v in phi[: len(_NUMERIC)])) or 1.0
    drivers = []
    for p, (feature, i) in enumerate(zip(NUMERIC_FEATURES, _NUMERIC, strict=True)):
        explained_mean = float(np.mean(explained[:, i], dtype=np.float64))
        reference_mean = float(np.mean(base[:, i], dtype=np.float64))
        drivers.append(
            Driver(
                feature=feature.name,
                unit=feature.unit,
                contribution=round(float(phi[p]), 6),
                share=round(max(float(phi[p]), 0.0) / positive, 6),
                explained_mean=round(explained_mean, 6),
                reference_mean=round(reference_mean, 6),
                direction="lower" if explained_mean > reference_mean else "raise",
                risk_now=round(risk_now, 6),
                risk_if_moved=round(float(values[everyone & ~(1 << p)]), 6),
            )
        )
    drivers.sort(key=lambda d: d.contribution, reverse=True)
    return Explanation(
        supplier_id=partition.supplier_id,
        model_hash=model.hash_hex,
        data_sha256=data_sha256(partition),
        shots=len(partition),
        defective=int(y.sum()),
        recent=recent,
        explained_shots=what,
        reference=reference,
        observed_rise=None if observed_rise is None else round(observed_rise, 6),
        predicted_rise=None if predicted_rise is None else round(predicted_rise, 6),
        accounted=None if accounted is None else round(accounted, 6),
        note=note,
        explained=len(explained),
        reference_shots=len(base),
        pairs=len(explained_index),
        predicted_gap=round(risk_now - float(values[0]), 6),
        drivers=drivers,
        other=round(float(phi[-1]), 6),
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
