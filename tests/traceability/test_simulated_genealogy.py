"""The simulator's genealogy for the demo population: four tiers, acceptable to the link rules
in the order given, every record signed by the maker of what it assembles."""

from __future__ import annotations

from ledger.eip712 import record_struct_hash
from ledger.records import SELF_SUBJECT_KINDS, load_signed_record
from ledger.signing import check_signature
from simulator.genealogy import simulate_genealogy
from simulator.population import OEM_ID, simulate_population
from traceability.genealogy import MemoryLinks, check_new_links, links_of_record, walk


def test_four_tier_genealogy_of_the_population() -> None:
    pop = simulate_population(4, months=2, seed=3)
    records = simulate_genealogy(pop, vehicles=6, seed=3)
    assert (
        simulate_genealogy(simulate_population(4, months=2, seed=3), vehicles=6, seed=3)[
            0
        ].record.lotId
        == records[0].record.lotId
    )  # deterministic
    per_record = []
    for signed in records:
        again = load_signed_record(signed.model_dump(mode="json"))  # the service's schema
        assert again.record.kind in SELF_SUBJECT_KINDS
        assert pop.signers[again.record.subject].address == again.record.signer
        check_signature(again)
        per_record.append(links_of_record(again, "0x" + record_struct_hash(again.record).hex()))
    store = MemoryLinks()
    assert check_new_links(store, per_record) == [None] * len(records)
    for links in per_record:
        for row in links:
            store.add(row)
    raw = next(r.child for r in per_record[0])
    w = walk(store, [raw], "where-used")
    assert [d for d, _ in w.levels()] == [1, 2, 3]
    assert all(k.startswith(OEM_ID) for k, d in w.depth.items() if d == 3)
