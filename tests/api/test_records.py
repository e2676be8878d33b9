from __future__ import annotations

import json

from api.anchorer import Anchorer
from ledger.keys import Signer
from ledger.records import Domain, Role
from ledger.signing import sign_record
from ledger.verify import verify_receipt
from tests.api.conftest import Party, Service
from tests.helpers import error_code, inspection_payload


def _post(svc: Service, signed) -> object:  # type: ignore[no-untyped-def]
    return svc.client.post("/v1/records", json=signed.model_dump(mode="json"))


def test_submit_anchor_receipt_verify(service: Service) -> None:
    supplier = service.parties["supplier"]
    signed = service.inspection(supplier)
    answer = _post(service, signed)
    assert answer.status_code == 202, answer.text
    struct_hash = answer.json()["structHash"]
    auth = service.login(supplier)
    pending = service.client.get(f"/v1/records/{struct_hash}/receipt", headers=auth)
    assert pending.status_code == 202 and pending.json()["status"] == "pending"

    outcomes = Anchorer(service.ctx).run_once(force=True)
    assert [o.leaf_count for o in outcomes] == [1]
    receipt = service.client.get(f"/v1/records/{struct_hash}/receipt", headers=auth)
    assert receipt.status_code == 200, receipt.text
    report = verify_receipt(signed, receipt.json(), service.chain)
    assert report.ok, report.to_json()
    via_api = service.client.post(
        "/v1/verify", json={"receipt": receipt.json(), "record": signed.model_dump(mode="json")}
    )
    assert via_api.json()["ok"] is True
    cp = service.client.get("/v1/checkpoint").json()
    assert (cp["batchCount"], cp["leafTotal"]) == (1, 1)


def test_same_record_twice_is_idempotent(service: Service) -> None:
    signed = service.inspection(service.parties["supplier"])
    first, second = _post(service, signed), _post(service, signed)
    assert first.status_code == second.status_code == 202
    assert first.json()["structHash"] == second.json()["structHash"]
    assert second.json()["duplicate"] is True
    assert Anchorer(service.ctx).pending_count() == 1


def _error(response) -> str:  # type: ignore[no-untyped-def]
    return error_code(response)


def test_rejections_have_codes(service: Service) -> None:
    supplier, oem = service.parties["supplier"], service.parties["oem"]
    # Bad signature: a record field changed after signing.
    data = service.inspection(supplier).model_dump(mode="json")
    data["record"]["lotId"] = "LOT-OTHER"
    assert _error(service.client.post("/v1/records", json=data)) == "invalid_signature"
    # Wrong role: an OEM key signing an inspection.
    response = _post(service, service.inspection(oem, subject="SUP-01"))
    assert response.status_code == 403 and _error(response) == "kind_not_allowed"
    # A supplier filing about another supplier.
    response = _post(service, service.inspection(supplier, subject="SUP-02"))
    assert response.status_code == 403 and _error(response) == "subject_mismatch"
    # An unknown key.
    stranger = Party(Signer.generate(), "SUP-01", Role.SUPPLIER)
    assert _error(_post(service, service.inspection(stranger))) == "signer_not_registered"
    # Replayed nonce with different content.
    _post(service, service.inspection(supplier, nonce=42))
    response = _post(service, service.inspection(supplier, nonce=42, defects=3))
    assert response.status_code == 409 and _error(response) == "nonce_replayed"
    # Wrong chain id / contract in the domain.
    for domain in (
        Domain(chainId=1, verifyingContract=service.ctx.deployment.ledger),
        Domain(chainId=service.ctx.deployment.chain_id, verifyingContract="0x" + "11" * 20),
    ):
        signed = sign_record(
            supplier.signer,
            domain,
            subject="SUP-01",
            kind="inspection",
            part_number="P",
            lot_id="L",
            event_time=1,
            quantity=50,
            defects=1,
            nonce=supplier.next_nonce(),
            payload=inspection_payload(),
        )
        response = _post(service, signed)
        assert response.status_code == 422 and _error(response) == "wrong_domain"
    # Stale signature (signedAt an hour ago).
    import time

    old = service.inspection(supplier, signed_at=int(time.time()) - 3600)
    assert _error(_post(service, old)) == "stale_signature"
    future = service.inspection(supplier)
    future = sign_record(
        supplier.signer,
        service.ctx.domain,
        subject="SUP-01",
        kind="inspection",
        part_number="P",
        lot_id="L-future",
        event_time=int(time.time()) + 86_400,
        quantity=50,
        defects=1,
        nonce=supplier.next_nonce(),
        payload=inspection_payload(),
    )
    assert _error(_post(service, future)) == "event_in_future"
    # Malformed JSON, not an object, schema errors, oversized payload.
    response = service.client.post(
        "/v1/records", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400 and _error(response) == "malformed_json"
    assert _error(service.client.post("/v1/records", json=[1, 2])) == "invalid_record"
    assert _error(service.client.post("/v1/records", json={"record": {}})) == "invalid_record"
    big = service.inspection(supplier).model_dump(mode="json")
    big["payload"]["sensorReport"][0]["values"] = [10.0] * 2000
    big["payload"]["attachments"] = [{"name": "x" * 200, "sha256": "0" * 64}] * 32
    big["payload"]["defectList"] = [{"code": f"C{i}", "count": 0} for i in range(200)]
    big["payload"]["readPoint"] = "plant-1"
    big["payload"]["sensorReport"] = big["payload"]["sensorReport"] * 50
    response = service.client.post(
        "/v1/records", content=json.dumps(big), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413 and _error(response) in (
        "record_too_large",
        "request_too_large",
    )
    assert Anchorer(service.ctx).pending_count() == 1  # only the nonce-42 record


def test_revoked_key_is_rejected(service: Service) -> None:
    supplier = service.parties["supplier"]
    assert _post(service, service.inspection(supplier)).status_code == 202
    admin = service.login(service.admin)
    response = service.client.delete(f"/v1/participants/{supplier.address}", headers=admin)
    assert response.status_code == 200, response.text
    response = _post(service, service.inspection(supplier))
    assert response.status_code == 403 and _error(response) == "signer_not_registered"


def test_batch_submission_mixes_accepts_and_rejects(service: Service) -> None:
    supplier, oem = service.parties["supplier"], service.parties["oem"]
    good = [service.inspection(supplier).model_dump(mode="json") for _ in range(5)]
    bad = service.inspection(oem, subject="SUP-01").model_dump(mode="json")
    body = {"records": [*good, bad, good[0], {"junk": True}]}
    response = service.client.post("/v1/records:batch", json=body)
    assert response.status_code == 207, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["accepted"] * 5 + [
        "rejected",
        "duplicate",
        "rejected",
    ]
    assert results[5]["error"]["code"] == "kind_not_allowed"
    assert results[7]["error"]["code"] == "invalid_record"
    assert Anchorer(service.ctx).pending_count() == 5
    assert service.client.post("/v1/records:batch", json={"records": []}).status_code == 422
    too_many = {"records": [good[0]] * 1001}
    assert _error(service.client.post("/v1/records:batch", json=too_many)) == "batch_size"


def test_reads_are_authenticated_and_scoped(service: Service) -> None:
    supplier, other = service.parties["supplier"], service.parties["supplier2"]
    mine = _post(service, service.inspection(supplier)).json()["structHash"]
    theirs = _post(service, service.inspection(other)).json()["structHash"]
    assert service.client.get(f"/v1/records/{mine}").status_code == 401
    assert (
        error_code(service.client.get("/v1/records", headers={"Authorization": "Bearer x"}))
        == "invalid_token"
    )
    auth = service.login(supplier)
    assert service.client.get(f"/v1/records/{mine}", headers=auth).status_code == 200
    assert service.client.get(f"/v1/records/{theirs}", headers=auth).status_code == 404
    listed = service.client.get("/v1/records", headers=auth).json()["records"]
    assert [r["structHash"] for r in listed] == [mine]
    auditor = service.login(service.parties["auditor"])
    assert len(service.client.get("/v1/records", headers=auditor).json()["records"]) == 2
    oem = service.login(service.parties["oem"])
    assert service.client.get(f"/v1/records/{mine}/receipt", headers=oem).status_code == 403
    # Participants: admin-only writes.
    response = service.client.post(
        "/v1/participants",
        headers=auth,
        json={"address": Signer.generate().address, "role": "SUPPLIER", "orgId": "SUP-09"},
    )
    assert response.status_code == 403 and _error(response) == "forbidden_role"


def test_logout_revokes_the_token_before_it_expires(service: Service) -> None:
    auditor = service.parties["auditor"]
    first, second = service.login(auditor), service.login(auditor)
    assert service.client.get("/v1/records", headers=first).status_code == 200
    assert service.client.post("/v1/auth/logout").status_code == 401  # needs the token
    assert service.client.post("/v1/auth/logout", headers=first).status_code == 204
    gone = service.client.get("/v1/records", headers=first)
    assert gone.status_code == 401 and _error(gone) == "token_revoked"
    again = service.client.post("/v1/auth/logout", headers=first)
    assert again.status_code == 401 and _error(again) == "token_revoked"
    # Only that token: the same participant's other session goes on.
    assert service.client.get("/v1/records", headers=second).status_code == 200


def test_two_sign_outs_of_one_token_racing_are_harmless(service: Service) -> None:
    # What two concurrent logouts with the same token do once both passed the revocation check:
    # the second insert collides on the token id and is not an error.
    from api.auth import Principal, revoke_token, token_revoked

    user = Principal(
        service.admin.address, Role.ADMIN, None, token_id="a" * 32, token_expires=2_000_000_000
    )
    revoke_token(service.ctx.sessions, user)
    revoke_token(service.ctx.sessions, user)
    assert token_revoked(service.ctx.sessions, user)


def test_tokens_without_an_id_are_refused(service: Service) -> None:
    # Revocation is by token id, so a token without one (as issued before revocation existed)
    # could never be signed out: it is refused and its holder signs in again.
    import time

    import jwt

    auditor = service.parties["auditor"]
    legacy = jwt.encode(
        {"sub": auditor.address, "role": "AUDITOR", "org": None, "exp": int(time.time()) + 600},
        service.ctx.settings.token_secret_value,
        algorithm="HS256",
    )
    response = service.client.get("/v1/records", headers={"Authorization": f"Bearer {legacy}"})
    assert response.status_code == 401 and _error(response) == "invalid_token"


def test_participant_administration(service: Service) -> None:
    admin = service.login(service.admin)
    newcomer = Party(Signer.generate(), "SUP-07", Role.SUPPLIER)
    response = service.client.post(
        "/v1/participants",
        headers=admin,
        json={"address": newcomer.address, "role": "SUPPLIER", "orgId": "SUP-07", "name": "Acme"},
    )
    assert response.status_code == 201, response.text
    assert service.chain.role_of(newcomer.address) is Role.SUPPLIER
    again = service.client.post(
        "/v1/participants",
        headers=admin,
        json={"address": newcomer.address, "role": "SUPPLIER", "orgId": "SUP-07"},
    )
    assert again.status_code == 409
    assert _post(service, service.inspection(newcomer)).status_code == 202
    listed = service.client.get("/v1/participants", headers=admin).json()["participants"]
    assert [p["orgId"] for p in listed] == ["SUP-07"]
    bad_role = service.client.post(
        "/v1/participants",
        headers=admin,
        json={"address": Signer.generate().address, "role": "ANCHORER", "orgId": "X-1"},
    )
    assert bad_role.status_code == 422 and _error(bad_role) == "invalid_role"


def test_auth_challenge_is_single_use(service: Service) -> None:
    party = service.parties["auditor"]
    body = service.client.post("/v1/auth/challenge", json={"address": party.address}).json()
    from api.auth import personal_sign_digest

    signature = party.signer.sign_digest(personal_sign_digest(body["message"]))
    req = {"address": party.address, "nonce": body["nonce"], "signature": signature}
    assert service.client.post("/v1/auth/token", json=req).status_code == 200
    again = service.client.post("/v1/auth/token", json=req)
    assert again.status_code == 401 and _error(again) == "challenge_expired"
    wrong = Signer.generate().sign_digest(personal_sign_digest(body["message"]))
    body = service.client.post("/v1/auth/challenge", json={"address": party.address}).json()
    bad = service.client.post(
        "/v1/auth/token", json={**req, "nonce": body["nonce"], "signature": wrong}
    )
    assert bad.status_code == 401 and _error(bad) == "invalid_signature"
