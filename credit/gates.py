"""Gates: versioned policy-as-code deciding what a score allows (e.g. new-product trials).

A policy is a TOML file under ``policies/``: an id, a version, a minimum score and a list of
requirements on facts from the evidence (open critical complaints, open major nonconformities) or
on observed feature values. A requirement on a feature whose evidence is missing fails: a gate
never passes on evidence nobody showed.
"""

from __future__ import annotations

import hashlib
import operator
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

from credit.features import FEATURE_NAMES, GateFacts

POLICY_DIR = Path(__file__).resolve().parents[1] / "policies"
DEFAULT_POLICY = "trial_gate.toml"

OPS: dict[str, Callable[[float, float], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
# The same comparisons over a batch's arrays (``evaluate_batch``).
ARRAY_OPS: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    "==": np.equal,
    "!=": np.not_equal,
    "<": np.less,
    "<=": np.less_equal,
    ">": np.greater,
    ">=": np.greater_equal,
}
FACTS = tuple(GateFacts.__dataclass_fields__)


class Blocking(BaseModel):
    """A requirement the supplier does not meet."""

    fact: str
    op: str
    limit: float
    actual: float | None
    reason: str


class GateResult(BaseModel):
    policy: str  # id@version
    policy_sha256: str
    outcome: Literal["pass", "fail"]
    threshold: float
    # score - threshold: negative = points missing, positive = headroom; None without a score
    distance: float | None
    blocking: list[Blocking]
    insufficient_evidence: bool = False  # a thin file: no number, the gate fails for that


def gate_reasons(gate: GateResult) -> list[str]:
    """The gate's own reasons for its outcome, first to last: each unmet requirement's reason
    (the policy file's words, or the thin-file reason), then a score under the policy's
    minimum. Empty when the gate passes. Reports, the dashboard and webhooks show these first
    for a failed gate; the model's reason codes explain the score, not the gate."""
    reasons = [b.reason for b in gate.blocking]
    if gate.distance is not None and gate.distance < 0:
        reasons.append(
            f"score {gate.threshold + gate.distance:.1f} is under the policy's minimum "
            f"{gate.threshold:g}"
        )
    return reasons


@dataclass(frozen=True)
class Requirement:
    fact: str
    op: str
    value: float
    reason: str


@dataclass(frozen=True)
class GatePolicy:
    id: str
    version: str
    description: str
    min_score: float
    requirements: tuple[Requirement, ...]
    sha256: str
    window_days: int = 180  # the published score's window; any other is a what-if
    min_received_lots: int = 0  # OEM goods receipts in the window below which a file is thin
    min_evidence_months: int = 0  # distinct months of the window holding a goods receipt

    def thin_file(self, facts: GateFacts) -> list[Blocking]:
        """Why the OEM-side evidence is too thin to score (empty when it is enough)."""
        return [Blocking.model_validate(b) for b in self.thin_file_json(facts)]

    def thin_file_json(self, facts: GateFacts) -> list[dict[str, Any]]:
        """``thin_file`` as the JSON ``Blocking.model_dump(mode="json")`` gives."""
        out = []
        for fact, limit, what in (
            ("oem_received_lots", self.min_received_lots, "received lots"),
            ("oem_evidence_months", self.min_evidence_months, "months with a goods receipt"),
        ):
            actual = getattr(facts, fact)
            if actual < limit:
                out.append(
                    {
                        "fact": fact,
                        "op": ">=",
                        "limit": float(limit),
                        "actual": float(actual),
                        "reason": f"insufficient evidence: {actual} OEM-signed {what} in the "
                        f"window, the policy needs {limit}",
                    }
                )
        return out

    def thin_mask(self, facts: Sequence[GateFacts]) -> list[bool]:
        """``[bool(self.thin_file(f)) for f in facts]`` without building the reasons."""
        lots, months = self.min_received_lots, self.min_evidence_months
        return [f.oem_received_lots < lots or f.oem_evidence_months < months for f in facts]

    def insufficient_json(self, facts: GateFacts) -> dict[str, Any]:
        """``insufficient(facts).model_dump(mode="json")`` without the objects."""
        return {
            "policy": self.ref,
            "policy_sha256": self.sha256,
            "outcome": "fail",
            "threshold": self.min_score,
            "distance": None,
            "blocking": self.thin_file_json(facts),
            "insufficient_evidence": True,
        }

    def insufficient(self, facts: GateFacts) -> GateResult:
        """The gate of a thin file: failed, with the thin-file reasons, no distance."""
        return GateResult(
            policy=self.ref,
            policy_sha256=self.sha256,
            outcome="fail",
            threshold=self.min_score,
            distance=None,
            blocking=self.thin_file(facts),
            insufficient_evidence=True,
        )

    @property
    def ref(self) -> str:
        return f"{self.id}@{self.version}"

    def evaluate(
        self, score: float, facts: GateFacts, observed: Mapping[str, float | None]
    ) -> GateResult:
        return GateResult.model_validate(self.evaluate_json(score, facts, observed))

    def evaluate_json(
        self, score: float, facts: GateFacts, observed: Mapping[str, float | None]
    ) -> dict[str, Any]:
        """The gate result as the JSON ``GateResult.model_dump(mode="json")`` gives, built
        without model objects (``credit.score.response_dicts``; tests check the equality)."""
        blocking = []
        for req in self.requirements:
            actual = getattr(facts, req.fact) if req.fact in FACTS else observed.get(req.fact)
            if actual is None or not OPS[req.op](float(actual), req.value):
                blocking.append(
                    {
                        "fact": req.fact,
                        "op": req.op,
                        "limit": req.value,
                        "actual": None if actual is None else float(actual),
                        "reason": req.reason,
                    }
                )
        ok = score >= self.min_score and not blocking
        return {
            "policy": self.ref,
            "policy_sha256": self.sha256,
            "outcome": "pass" if ok else "fail",
            "threshold": self.min_score,
            "distance": score - self.min_score,
            "blocking": blocking,
            "insufficient_evidence": False,
        }

    def evaluate_batch(
        self,
        scores: np.ndarray,
        facts: Sequence[GateFacts],
        observed: Sequence[Mapping[str, float | None]],
    ) -> list[dict[str, Any]]:
        """``[self.evaluate_json(s, f, o) for each row]``, each requirement decided for the
        whole batch at once (numpy; a Python float comparison and numpy's agree, NaN included);
        only the rows a requirement blocks get its entry."""
        n = len(facts)
        scores = np.asarray(scores, dtype=np.float64)
        blocking: list[list[dict[str, Any]]] = [[] for _ in range(n)]
        blocked = np.zeros(n, dtype=bool)
        for req in self.requirements:
            if req.fact in FACTS:
                actual = list(map(operator.attrgetter(req.fact), facts))
            else:
                actual = [o.get(req.fact) for o in observed]
            # None (never observed) is NaN here, and blocks whatever the operator says.
            values = np.array(actual, dtype=np.float64).reshape(n)
            fails = ~ARRAY_OPS[req.op](values, req.value)
            if actual.count(None):
                fails |= np.array([a is None for a in actual], dtype=bool)
            blocked |= fails
            for i in np.flatnonzero(fails).tolist():
                a = actual[i]
                blocking[i].append(
                    {
                        "fact": req.fact,
                        "op": req.op,
                        "limit": req.value,
                        "actual": None if a is None else float(a),
                        "reason": req.reason,
                    }
                )
        outcome = np.where((scores >= self.min_score) & ~blocked, "pass", "fail").tolist()
        # Each result a copy of one template with its three varying members set (cheaper than
        # a dict literal per row; the members keep GateResult's order).
        template = {
            "policy": self.ref,
            "policy_sha256": self.sha256,
            "outcome": "fail",
            "threshold": self.min_score,
            "distance": 0.0,
            "blocking": [],
            "insufficient_evidence": False,
        }
        out = []
        for o, d, b in zip(outcome, (scores - self.min_score).tolist(), blocking, strict=True):
            gate = template.copy()
            gate["outcome"] = o
            gate["distance"] = d
            gate["blocking"] = b
            out.append(gate)
        return out


class PolicyError(ValueError):
    """A policy file is malformed."""


def parse_policy(raw: bytes) -> GatePolicy:
    """Parse a policy file's bytes; the sha256 is over exactly these bytes."""
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
        reqs = tuple(
            Requirement(str(r["fact"]), str(r["op"]), float(r["value"]), str(r["reason"]))
            for r in doc.get("require", ())
        )
        policy = GatePolicy(
            id=str(doc["id"]),
            version=str(doc["version"]),
            description=str(doc.get("description", "")),
            min_score=float(doc["score"]["min"]),
            requirements=reqs,
            sha256=hashlib.sha256(raw).hexdigest(),
            window_days=int(doc["score"].get("window_days", 180)),
            min_received_lots=int(doc.get("evidence", {}).get("min_received_lots", 0)),
            min_evidence_months=int(doc.get("evidence", {}).get("min_months", 0)),
        )
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
        raise PolicyError(f"bad gate policy: {exc}") from exc
    for req in reqs:
        if req.op not in OPS:
            raise PolicyError(f"unknown operator {req.op!r}; use one of {sorted(OPS)}")
        if req.fact not in FACTS and req.fact not in FEATURE_NAMES:
            raise PolicyError(f"unknown fact {req.fact!r}; facts: {FACTS}, features too")
    if not 0 <= policy.min_score <= 100:
        raise PolicyError("score.min must be within 0-100")
    return policy


def load_policy(path: Path) -> GatePolicy:
    return parse_policy(path.read_bytes())


@lru_cache(maxsize=8)
def default_policy(name: str = DEFAULT_POLICY) -> GatePolicy:
    return load_policy(POLICY_DIR / name)
