import pytest

from ledger.errors import InvalidRecord, KindNotAllowed, WrongDomain
from ledger.keys import Signer
from ledger.records import (
    KIND_SIGNER_ROLES,
    Domain,
    RecordKind,
    Role,
    load_signed_record,
)
from ledger.signing import check_domain, check_kind_allowed, sign_record
from tests.helpers import inspection_payload

DOMAIN = Domain(chainId=31337, verifyingContract="0x5FbDB2315678afecb367f032d93F642f64180aa3")


def _sign(kind: str = "inspection", quantity: int = 50, defects: int = 1, payload=None):  # type: ignore[no-untyped-def]
    return sign_record(
        Signer.generate(),
        DOMAIN,
        subject="SUP-01",
        kind=kind,
        part_number="P-1",
        lot_id="L-1",
        event_time=1_700_000_000,
        quantity=quantity,
        defects=defects,
        nonce=7,
        payload=payload if payload is not None else inspection_payload(defects),
    )


def test_who_may_sign_what() -> None:
    assert {k for k, r in KIND_SIGNER_ROLES.items() if r == {Role.SUPPLIER}} == {
        RecordKind.INSPECTION,
        RecordKind.DELIVERY,
        RecordKind.CORRECTIVE_ACTION,
    }
    # No kind an auditor may sign can be signed by anyone else. Two roles share genealogy (the
    # party that assembled: a supplier or an OEM) and notifications (an OEM or a supplier
    # investigates its supplier; a supplier alerts its customer).
    shared = {k for k, r in KIND_SIGNER_ROLES.items() if len(r) > 1}
    assert shared == {
        RecordKind.AGGREGATION,
        RecordKind.TRANSFORMATION,
        RecordKind.NOTIFICATION,
    }
    assert KIND_SIGNER_ROLES[RecordKind.NOTIFICATION] == {Role.OEM, Role.SUPPLIER}
    check_kind_allowed(RecordKind.AGGREGATION, Role.OEM)
    check_kind_allowed(RecordKind.TRANSFORMATION, Role.SUPPLIER)
    with pytest.raises(KindNotAllowed, match="OEM or SUPPLIER"):
        check_kind_allowed(RecordKind.AGGREGATION, Role.AUDITOR)
    with pytest.raises(KindNotAllowed, match="SUPPLIER may not sign audit"):
        check_kind_allowed(RecordKind.AUDIT, Role.SUPPLIER)
    with pytest.raises(KindNotAllowed):
        check_kind_allowed(RecordKind.COMPLAINT, Role.AUDITOR)
    check_kind_allowed(RecordKind.COMPLAINT, Role.OEM)


def test_round_trip_through_json() -> None:
    signed = _sign()
    again = load_signed_record(signed.model_dump(mode="json"))
    assert again == signed


def test_payload_hash_must_match() -> None:
    data = _sign().model_dump(mode="json")
    data["payload"]["lotSize"] = 999
    with pytest.raises(InvalidRecord, match="payloadHash does not match"):
        load_signed_record(data)


def test_counts_must_agree_with_detail() -> None:
    with pytest.raises(InvalidRecord, match="sum of defectList"):
        _sign(defects=2, payload=inspection_payload(1))
    with pytest.raises(InvalidRecord, match="sample size"):
        _sign(quantity=40, payload=inspection_payload(1, sample=50))


def test_unknown_payload_fields_and_bad_limits_are_refused() -> None:
    payload = inspection_payload()
    payload["colour"] = "red"
    with pytest.raises(InvalidRecord, match="colour"):
        _sign(payload=payload)
    payload = inspection_payload()
    payload["sensorReport"][0]["lsl"] = 11.0
    with pytest.raises(InvalidRecord, match="lsl"):
        _sign(payload=payload)


def test_eight_d_rules() -> None:
    base = {
        "complaintId": "C-1",
        "status": "closed",
        "eightD": {"D0": 1, "D1": 2, "D3": 5, "D8": 20},
    }
    _sign("corrective_action", 0, 0, base)
    with pytest.raises(InvalidRecord, match="D8"):
        _sign("corrective_action", 0, 0, {**base, "eightD": {"D0": 1, "D3": 5}})
    with pytest.raises(InvalidRecord, match="backwards"):
        _sign("corrective_action", 0, 0, {**base, "eightD": {"D0": 9, "D3": 5, "D8": 20}})


def test_address_checksum_is_enforced() -> None:
    data = _sign().model_dump(mode="json")
    addr = data["record"]["signer"]
    swapped = addr[:2] + "".join(c.lower() if c.isupper() else c.upper() for c in addr[2:])
    if swapped != addr:
        data["record"]["signer"] = swapped
        with pytest.raises(InvalidRecord, match="checksum"):
            load_signed_record(data)


def test_a_record_signed_for_another_deployment_raises_wrong_domain() -> None:
    signed = _sign()
    check_domain(signed, DOMAIN)  # this deployment's own records pass
    # Look-alikes: the same contract on another chain, another contract on the same chain.
    other_chain = Domain(chainId=1, verifyingContract=DOMAIN.verifyingContract)
    other_contract = Domain(chainId=DOMAIN.chainId, verifyingContract="0x" + "11" * 20)
    for deployment in (other_chain, other_contract):
        with pytest.raises(WrongDomain) as caught:
            check_domain(signed, deployment)
        assert caught.value.code == "wrong_domain" and caught.value.http_status == 422
        assert caught.value.expected == deployment.model_dump()
        assert caught.value.got == DOMAIN.model_dump()
