"""Credit responses: complete, reproducible, hashed, and committed on chain."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from credit.evidence import evidence_root
from credit.features import FEATURE_NAMES, FEATURE_SCHEMA_VERSION, compute_features
from credit.model import CreditModel, band_of
from credit.score import (
    CREDIT_TOPIC,
    CreditResponse,
    commitment_tree,
    rank,
    response_hash,
    score_supplier,
    score_vectors,
)
from ledger.chain import ChainClient
from simulator.population import Population


@pytest.fixture(scope="module")
def responses(signed_population: Population) -> list[CreditResponse]:
    pop = signed_population
    return [
        score_supplier(
            pop.items,
            t.supplier_id,
            pop.end,
            fl_participation=pop.fl_participation(t.supplier_id, pop.end, 180),
        )
        for t in pop.suppliers
    ]


def test_response_carries_everything_a_decision_needs(
    responses: list[CreditResponse], model: CreditModel
) -> None:
    for r in responses:
        assert 0 <= r.score <= 100 and r.band == band_of(r.score)
        assert [c.feature for c in r.contributions] == list(FEATURE_NAMES)
        assert r.model_version == model.version
        assert r.feature_schema_version == FEATURE_SCHEMA_VERSION
        assert r.evidence_root == evidence_root(r.evidence_ids)
        assert r.evidence_count == len(r.evidence_ids) > 0
        assert r.gate is not None and r.gate.policy == "new-product-trial@2.0.0"
        assert r.gate.distance == pytest.approx(r.score - r.gate.threshold)
        assert 0 < r.incident_probability < 1


def test_batch_and_single_scoring_agree(
    signed_population: Population, responses: list[CreditResponse], fl: Callable[[str], float]
) -> None:
    pop = signed_population
    vectors = [
        compute_features(pop.items, t.supplier_id, pop.end, fl_participation=fl(t.supplier_id))
        for t in pop.suppliers
    ]
    batch = score_vectors(vectors, with_what_if=True)
    assert [response_hash(b) for b in batch] == [response_hash(r) for r in responses]
    ranked = rank(batch)
    assert [r.score for r in ranked] == sorted((r.score for r in batch), reverse=True)


def test_response_hash_is_canonical_and_binding(responses: list[CreditResponse]) -> None:
    r = responses[0]
    again = CreditResponse.model_validate_json(r.model_dump_json())
    assert response_hash(again) == response_hash(r)
    assert response_hash(r.model_copy(update={"as_of": r.as_of + 1})) != response_hash(r)
    assert len({response_hash(x) for x in responses}) == len(responses)


def test_score_commitment_verifies_on_chain(
    inprocess_chain: ChainClient, responses: list[CreditResponse]
) -> None:
    tree = commitment_tree(responses)
    result = inprocess_chain.commit(CREDIT_TOPIC, tree.root, len(responses))
    assert inprocess_chain.committed_at(tree.root)["seq"] == result.seq
    shown = responses[3]
    value = bytes.fromhex(response_hash(shown)[2:])
    assert inprocess_chain.verify_commitment_on_chain(tree.root, tree.proof(value), value)
    # What a purchaser was shown, altered afterwards, no longer verifies.
    altered = shown.model_copy(
        update={"score": shown.score, "band": "A" if shown.band != "A" else "B"}
    )
    forged = bytes.fromhex(response_hash(altered)[2:])
    assert not inprocess_chain.verify_commitment_on_chain(tree.root, tree.proof(value), forged)
