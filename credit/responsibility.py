"""Responsibility apportionment for a field incident involving several suppliers' parts.

Method ``shapley-noisy-or/1``:

1. **Defect risk per supplier** from its anchored evidence around the incident's lots: for each
   key characteristic, the probability that a unit of the incident lot is out of specification,
   from that lot's measured mean and the within-lot sigma pooled over the supplier's lots of the
   same part within ``around_days`` before the incident (an SQE's normal-tail estimate), and the
   lot's observed defect fraction; the larger of the two counts. Without measurements of the
   incident lot, the nearby lots stand in; without any evidence the supplier carries a prior no
   better than the worst observed supplier's risk (and at least docs/domain.md's poor-line 800 ppm):
   missing evidence never lowers a share. Only evidence anchored by the time the incident was
   reported counts (``evidence_cutoff``, recorded in the matrix). Optionally averaged with a
   federated defect model's risk (``risk_model``).
2. **Game**: the product fails if any part is defective (noisy-OR):
   ``v(S) = 1 - prod_{i in S} (1 - r_i)``.
3. **Weights**: the Shapley values of that game divided by ``v(N)``, so they sum to 1 and reward
   each supplier for the failure probability it adds in every order of arrival. For the noisy-OR
   game the Shapley value has a closed form through elementary symmetric polynomials
   (``shapley_noisy_or``), exact for any number of suppliers in O(n^3).

The matrix is hashed (``matrix_hash``) for anchoring, and each supplier signs an EIP-712
``ResponsibilityDecision`` (accept or dispute) over that hash.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from statistics import NormalDist
from typing import Annotated, Literal

import numpy as np
from eth_hash.auto import keccak
from pydantic import BaseModel, Field, model_validator

from credit.evidence import DAY, EvidenceItem, counts_as_of, evidence_root
from ledger.canonical import canonical_json
from ledger.eip712 import EIP712_DOMAIN_TYPE, domain_separator, hash_struct, typed_data_digest
from ledger.keys import Signer, recover_digest
from ledger.records import HEX32_PATTERN, Domain, Identifier, UnixTime

METHOD_ID = "shapley-noisy-or/1"
AROUND_DAYS = 30  # lots of the same part made within a month before the incident share a process
# docs/domain.md: "a poor line runs 800+" ppm, the prior when nothing is shown
NO_EVIDENCE_RISK = 800e-6
RISK_FLOOR = 1e-9  # one part per billion: below any rate evidence can show, keeps v(N) > 0
WEIGHT_TOL = 1e-9
_NORMAL = NormalDist()

# A defect-risk model (the federated model in the service): probability that the supplier's
# part in the product is defective, or None where it has nothing to go on for that supplier.
RiskModel = Callable[[str, Sequence[EvidenceItem]], float | None]


# Bounds of an incident body (POST /v1/incidents): ids by the one id pattern, times as canonical
# integers no later than 9999-12-31 (the last second a datetime can show), lists and text bounded.
MAX_INCIDENT_TIME = 253_402_300_799
MAX_INCIDENT_LOTS = 100
IncidentTime = Annotated[int, Field(ge=0, le=MAX_INCIDENT_TIME, strict=True)]
Text = Annotated[str, Field(max_length=2000)]


class IncidentLot(BaseModel):
    supplier_id: Identifier
    part_number: Identifier
    lot_id: Identifier
    # Production readings of this lot (the federated model's feature schema, e.g. mold_temp_c,
    # hold_pressure_bar, ...), shared by the supplier for this incident only; the anchored
    # federated model turns them into a defect risk.
    process: list[dict[str, float | str]] = Field(default_factory=list, max_length=200)


class Incident(BaseModel):
    """A field incident on a product built from the listed lots (the body of POST /incidents)."""

    incident_id: Identifier
    product: Annotated[str, Field(min_length=1, max_length=200)]
    occurred_at: IncidentTime
    lots: list[IncidentLot] = Field(min_length=1, max_length=MAX_INCIDENT_LOTS)
    description: Text = ""
    # When the incident was reported (the service sets it from its clock on POST /incidents;
    # default: when it occurred). Only evidence anchored by then counts: filings made once a
    # supplier knows of the incident cannot move its share.
    reported_at: IncidentTime | None = None

    @property
    def evidence_cutoff(self) -> int:
        return self.reported_at if self.reported_at is not None else self.occurred_at


# Which evidence a supplier's risk estimate rests on.
Basis = Literal["incident_lots", "nearby_lots", "no_evidence"]


class SupplierShare(BaseModel):
    supplier_id: str
    weight: float
    risk: float  # estimated probability that this supplier's part in the product is defective
    basis: Basis
    lots: list[str]
    cpk: float | None  # lowest key-characteristic Cpk of the incident lots (pooled sigma)
    defect_fraction: float | None
    model_risk: float | None
    evidence_ids: list[str]


class ResponsibilityMatrix(BaseModel):
    incident_id: str
    product: str
    occurred_at: int
    method: str = METHOD_ID
    version: str  # method + hash of every input: a new estimate is a new version
    evidence_cutoff: int  # only evidence anchored by this instant (the report) was read
    risk_model: str | None = None  # hash of the defect model blended in (anchored FL model)
    joint_risk: float  # v(N): probability the product fails from any of its parts
    evidence_root: str
    rows: list[SupplierShare]

    @model_validator(mode="after")
    def _sums_to_one(self) -> ResponsibilityMatrix:
        total = math.fsum(r.weight for r in self.rows)
        if abs(total - 1.0) > WEIGHT_TOL:
            raise ValueError(f"responsibility weights sum to {total}, not 1")
        return self


def _stats(values: Sequence[float]) -> tuple[int, float, float]:
    n = len(values)
    mean = math.fsum(values) / n
    return n, mean, math.fsum((v - mean) ** 2 for v in values)


def _key_chars(item: EvidenceItem) -> Iterable[dict]:
    return (
        c
        for c in item.payload.get("sensorReport", ())
        if c.get("key") and len(c.get("values", ())) >= 2
    )


def _supplier_risk(
    lots: list[IncidentLot], items: Sequence[EvidenceItem], occurred_at: int, around_days: int
) -> tuple[float, Basis, float | None, float | None, list[str]]:
    wanted = {(lot.part_number, lot.lot_id) for lot in lots}
    parts = {lot.part_number for lot in lots}
    inspections = [it for it in items if it.kind == "inspection" and it.part_number in parts]
    exact = [it for it in inspections if (it.part_number, it.lot_id) in wanted]
    nearby = [
        it for it in inspections if occurred_at - around_days * DAY <= it.event_time <= occurred_at
    ]
    # Pooled within-lot sums of squares per (part, characteristic).
    pooled: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for it in {id(i): i for i in (*exact, *nearby)}.values():
        for c in _key_chars(it):
            n, _, ss = _stats(c["values"])
            acc = pooled[(it.part_number, c["type"])]
            acc[0] += ss
            acc[1] += n - 1
    measured = [it for it in exact if any(True for _ in _key_chars(it))]
    basis: Basis
    if measured or exact:
        basis, chosen = "incident_lots", exact
    elif nearby:
        basis, chosen = "nearby_lots", nearby
    else:
        return NO_EVIDENCE_RISK, "no_evidence", None, None, []
    risks, cpks = [], []
    sampled = sum(it.quantity for it in chosen)
    defects = sum(it.defects for it in chosen)
    for it in chosen:
        p_ok = 1.0
        for c in _key_chars(it):
            _, mean, _ = _stats(c["values"])
            ss, df = pooled[(it.part_number, c["type"])]
            sigma = math.sqrt(ss / df) if df > 0 and ss > 0 else 0.0
            lsl, usl = c.get("lsl"), c.get("usl")
            if sigma == 0:
                inside = (lsl is None or mean >= lsl) and (usl is None or mean <= usl)
                p_out = 0.0 if inside else 1.0
            else:
                p_out = (_NORMAL.cdf((lsl - mean) / sigma) if lsl is not None else 0.0) + (
                    _NORMAL.cdf((mean - usl) / sigma) if usl is not None else 0.0
                )
                sides = [
                    s
                    for s in (
                        (usl - mean) if usl is not None else None,
                        (mean - lsl) if lsl is not None else None,
                    )
                    if s is not None
                ]
                cpks.append(min(sides) / (3 * sigma))
            p_ok *= 1.0 - min(1.0, p_out)
        observed = it.defects / it.quantity if it.quantity else 0.0
        risks.append(max(1.0 - p_ok, observed))
    risk = max(RISK_FLOOR, math.fsum(risks) / len(risks))
    return (
        risk,
        basis,
        min(cpks) if cpks else None,
        defects / sampled if sampled else None,
        [it.struct_hash for it in chosen],
    )


def shapley_noisy_or(risks: Sequence[float]) -> np.ndarray:
    """Exact Shapley values of v(S) = 1 - prod_{i in S}(1 - r_i).

    i's marginal contribution to S is r_i * prod_{j in S} q_j (q = 1 - r). Averaging over the
    Shapley distribution (size k uniform in 0..n-1, then S uniform among the C(n-1, k) sets):
    phi_i = r_i / n * sum_k e_k(q without i) / C(n-1, k), with e_k the elementary symmetric
    polynomials: the coefficients of prod_j (1 + q_j x).
    """
    r = np.asarray(risks, dtype=np.float64)
    n = len(r)
    q = 1.0 - r
    phi = np.empty(n)
    binom = np.array([math.comb(n - 1, k) for k in range(n)], dtype=np.float64)
    for i in range(n):
        coeffs = np.array([1.0])
        for j in range(n):
            if j != i:
                coeffs = np.convolve(coeffs, [1.0, q[j]])
        phi[i] = r[i] / n * float(np.sum(coeffs / binom))
    return phi


def responsibility_matrix(
    incident: Incident,
    items: Iterable[EvidenceItem],
    *,
    as_of: int | None = None,
    around_days: int = AROUND_DAYS,
    risk_model: RiskModel | None = None,
    risk_model_id: str | None = None,
) -> ResponsibilityMatrix:
    """Apportion ``incident`` among its suppliers from their anchored evidence.

    ``as_of`` (default: no cut-off) limits the evidence to what was anchored by then, so a matrix
    can be recomputed for the instant it was published.
    """
    cutoff = min(incident.evidence_cutoff, as_of if as_of is not None else 2**63)
    by_supplier: dict[str, list[IncidentLot]] = defaultdict(list)
    for lot in incident.lots:
        by_supplier[lot.supplier_id].append(lot)
    usable: dict[str, list[EvidenceItem]] = defaultdict(list)
    for it in items:
        if it.subject in by_supplier and counts_as_of(it, cutoff):
            usable[it.subject].append(it)
    suppliers = sorted(by_supplier)
    rows = []
    for sid in suppliers:
        risk, basis, cpk, fraction, ids = _supplier_risk(
            by_supplier[sid], usable[sid], incident.occurred_at, around_days
        )
        model_risk = None
        predicted = risk_model(sid, usable[sid]) if risk_model is not None else None
        if predicted is not None:
            model_risk = float(min(1.0, max(0.0, predicted)))
            risk = max(RISK_FLOOR, (risk + model_risk) / 2)
        rows.append((sid, risk, basis, cpk, fraction, model_risk, ids))
    # A supplier that showed no evidence carries a prior no better than the worst supplier that
    # did: staying silent must never buy a smaller share than showing bad evidence.
    observed = [r[1] for r in rows if r[2] != "no_evidence"]
    prior = max([NO_EVIDENCE_RISK, *observed])
    rows = [(r[0], prior, *r[2:]) if r[2] == "no_evidence" else r for r in rows]
    phi = shapley_noisy_or([r[1] for r in rows])
    joint = float(phi.sum())  # Shapley efficiency: the values sum to v(N)
    weights = phi / joint
    all_ids = sorted({h for r in rows for h in r[6]})
    inputs = canonical_json(
        {
            "method": METHOD_ID,
            "incident": incident.model_dump(mode="json"),
            "around_days": around_days,
            "cutoff": cutoff,
            "risk_model": risk_model_id,
            "risks": [[r[0], repr(r[1]), r[2]] for r in rows],
            "evidence": all_ids,
        }
    )
    return ResponsibilityMatrix(
        incident_id=incident.incident_id,
        product=incident.product,
        occurred_at=incident.occurred_at,
        version=f"{METHOD_ID}:{hashlib.sha256(inputs).hexdigest()[:16]}",
        evidence_cutoff=cutoff,
        joint_risk=joint,
        risk_model=risk_model_id,
        evidence_root=evidence_root(all_ids),
        rows=[
            SupplierShare(
                supplier_id=sid,
                weight=float(w),
                risk=risk,
                basis=basis,
                cpk=cpk,
                defect_fraction=fraction,
                model_risk=model_risk,
                lots=[lot.lot_id for lot in by_supplier[sid]],
                evidence_ids=ids,
            )
            for (sid, risk, basis, cpk, fraction, model_risk, ids), w in zip(
                rows, weights, strict=True
            )
        ],
    )


def matrix_hash(matrix: ResponsibilityMatrix) -> str:
    """keccak256 of the matrix's canonical JSON: what is anchored and what suppliers sign."""
    return "0x" + keccak(canonical_json(matrix.model_dump(mode="json"))).hex()


# ---------------------------------------------------------------------------------------------
# Acceptance / dispute, signed by each supplier with EIP-712 under the ledger's domain.
# ---------------------------------------------------------------------------------------------

DECISION_TYPES: dict[str, list[dict[str, str]]] = {
    "EIP712Domain": EIP712_DOMAIN_TYPE,
    "ResponsibilityDecision": [
        {"name": "matrixHash", "type": "bytes32"},
        {"name": "incidentId", "type": "string"},
        {"name": "supplier", "type": "string"},
        {"name": "decision", "type": "string"},
        {"name": "comment", "type": "string"},
        {"name": "signedAt", "type": "uint64"},
    ],
}


class ResponsibilityDecision(BaseModel):
    matrixHash: Annotated[str, Field(pattern=HEX32_PATTERN)]
    incidentId: Identifier
    supplier: Identifier
    decision: Literal["accept", "dispute"]
    comment: Text = ""
    signedAt: UnixTime
    signer: Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{40}$")]
    signature: Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{130}$")]

    def message(self) -> dict[str, object]:
        return self.model_dump(exclude={"signer", "signature"})


def _decision_digest(domain: Domain, message: dict[str, object]) -> bytes:
    return typed_data_digest(
        domain_separator(domain), hash_struct("ResponsibilityDecision", message, DECISION_TYPES)
    )


def sign_decision(
    signer: Signer,
    domain: Domain,
    matrix: ResponsibilityMatrix,
    supplier_id: str,
    decision: Literal["accept", "dispute"],
    signed_at: int,
    comment: str = "",
) -> ResponsibilityDecision:
    if supplier_id not in {r.supplier_id for r in matrix.rows}:
        raise ValueError(f"{supplier_id} has no share in incident {matrix.incident_id}")
    message: dict[str, object] = {
        "matrixHash": matrix_hash(matrix),
        "incidentId": matrix.incident_id,
        "supplier": supplier_id,
        "decision": decision,
        "comment": comment,
        "signedAt": signed_at,
    }
    signature = signer.sign_digest(_decision_digest(domain, message))
    # Validated from the very dict that was signed, so the object and the signature cannot differ.
    return ResponsibilityDecision.model_validate(
        {**message, "signer": signer.address, "signature": signature}
    )


def verify_decision(
    domain: Domain, decision: ResponsibilityDecision, matrix: ResponsibilityMatrix
) -> str:
    """Check the decision is about ``matrix`` and signed by ``decision.signer``; return it.

    Whether that address holds the supplier's on-chain role is the caller's (the API's) check.
    """
    if decision.matrixHash != matrix_hash(matrix):
        raise ValueError("decision signs another version of the matrix")
    recovered = recover_digest(_decision_digest(domain, decision.message()), decision.signature)
    if recovered != decision.signer:
        raise ValueError(f"decision signed by {recovered}, not {decision.signer}")
    return recovered
