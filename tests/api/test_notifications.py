"""Quality notifications through the live app (issue 19): every transition only to the right
party in the right state, forwarding links, and every transition anchored and verifiable
offline. The adversaries: a supplier closing its customer's investigation, a recipient signing
the sender's step, a third party answering, a replayed or out-of-order step, someone forwarding
a notification it never received, a forged origin link, a decline without a reason."""

from __future__ import annotations

import threading
import time
from typing import Any

from api.anchorer import Anchorer
from api.intake import submit_many
from ledger.records import NotificationPayload, RecordKind, Role, SignedRecord
from ledger.signing import sign_record
from ledger.tlog import Verifier
from ledger.tlog.verify import verify_receipt_offline
from ledger.verify import verify_receipt
from tests.api.conftest import Party, Service
from tests.helpers import error_code
from traceability.notifications import replay

PART = {"maker": "SUP-01", "partNumber": "ECU-7", "lotId": "L-4711"}
SUB_PART = {"maker": "SUP-02", "partNumber": "PCB-3", "lotId": "R-88"}


def _sign(
    svc: Service,
    party: Party,
    transition: str,
    nid: str,
    *,
    sender: str,
    recipient: str,
    type: str = "investigation",
    subject: str | None = None,
    **terms: Any,
) -> SignedRecord:
    body: dict[str, Any] = {
        "notificationId": nid,
        "type": type,
        "transition": transition,
        "sender": sender,
        "recipient": recipient,
        **terms,
    }
    if transition == "created":
        body.setdefault("affectedParts", [PART])
        body.setdefault("severity", "major")
    payload = NotificationPayload.model_validate(body).model_dump(mode="json", exclude_none=True)
    return sign_record(
        party.signer,
        svc.ctx.domain,
        subject=subject or party.org,
        kind=RecordKind.NOTIFICATION.value,
        part_number=transition,
        lot_id=nid,
        event_time=int(time.time()) - 3600,
        quantity=len(body.get("affectedParts", [])),
        defects=0,
        nonce=party.next_nonce(),
        payload=payload,
    )


def _post(svc: Service, signed: SignedRecord) -> Any:
    return svc.client.post("/v1/records", json=signed.model_dump(mode="json"))


def _ok(svc: Service, signed: SignedRecord) -> str:
    answer = _post(svc, signed)
    assert answer.status_code == 202, answer.text
    return str(answer.json()["structHash"])


def _refused(svc: Service, signed: SignedRecord, status: int, code: str) -> dict[str, Any]:
    answer = _post(svc, signed)
    assert answer.status_code == status, answer.text
    assert error_code(answer) == code, answer.text
    body: dict[str, Any] = answer.json()
    return body


def _parties(svc: Service) -> tuple[Party, Party, Party, Party]:
    p = svc.parties
    return p["oem"], p["supplier"], p["supplier2"], p["auditor"]


def _open(svc: Service, nid: str, **terms: Any) -> None:
    """OEM-01 opens and sends an investigation to SUP-01, which receives and acknowledges it."""
    oem, sup, _, _ = _parties(svc)
    names = {"sender": oem.org, "recipient": sup.org}
    _ok(svc, _sign(svc, oem, "created", nid, **names, **terms))
    _ok(svc, _sign(svc, oem, "sent", nid, **names))
    _ok(svc, _sign(svc, sup, "received", nid, **names))
    _ok(svc, _sign(svc, sup, "acknowledged", nid, **names))


def test_oem_to_tier1_forward_to_tier2_answers_and_oem_closes(service: Service) -> None:
    oem, sup, sub, auditor = _parties(service)
    top = {"sender": oem.org, "recipient": sup.org}
    fwd = {"sender": sup.org, "recipient": sub.org}
    deadline = int(time.time()) + 7 * 86_400
    _open(
        service,
        "QN-1",
        deadline=deadline,
        scope={"site": "plant-2", "shift": "night"},
        links={"incidentId": "INC-9"},
        description="bore diameter out of tolerance at end of line",
    )
    # SUP-01 traces the cause to its tier-2's board and forwards, linking back to QN-1.
    _ok(
        service,
        _sign(service, sup, "created", "QN-1-F1", originId="QN-1", affectedParts=[SUB_PART], **fwd),
    )
    _ok(service, _sign(service, sup, "sent", "QN-1-F1", **fwd))
    _ok(service, _sign(service, sub, "received", "QN-1-F1", **fwd))
    _ok(service, _sign(service, sub, "acknowledged", "QN-1-F1", **fwd))
    eight_d = "0x" + "8d" * 32
    _ok(
        service,
        _sign(service, sub, "accepted", "QN-1-F1", links={"correctiveActions": [eight_d]}, **fwd),
    )
    _ok(service, _sign(service, sup, "closed", "QN-1-F1", **fwd))
    _ok(service, _sign(service, sup, "accepted", "QN-1", **top))
    _ok(service, _sign(service, oem, "closed", "QN-1", **top))
    Anchorer(service.ctx).run_once(force=True)

    # The OEM's thread carries the tier-2's answer, through the forward.
    thread = service.client.get("/v1/notifications/QN-1", headers=service.login(oem))
    assert thread.status_code == 200, thread.text
    body = thread.json()
    assert (body["state"], body["overdue"], body["links"]["incidentId"]) == (
        "closed",
        False,
        "INC-9",
    )
    assert [h["transition"] for h in body["history"]] == [
        "created", "sent", "received", "acknowledged", "accepted", "closed"
    ]  # fmt: skip
    assert body["scope"] == {"site": "plant-2", "shift": "night"}
    [forward] = body["forwards"]
    assert (forward["notificationId"], forward["originId"], forward["depth"]) == (
        "QN-1-F1",
        "QN-1",
        1,
    )
    assert forward["state"] == "closed"
    assert forward["links"]["correctiveActions"] == [eight_d]
    assert [{k: p[k] for k in SUB_PART} for p in forward["affectedParts"]] == [SUB_PART]

    # Every transition is anchored, timed on chain time, and verifies with its receipt: against
    # the chain, and offline against the log key; the thread replays under the rules.
    log_key = Verifier.parse(service.client.get("/v1/log/key").json()["vkey"])
    replayed: dict[str, Any] = {}
    for item in (body, forward):
        steps = []
        for h in item["history"]:
            assert h["status"] == "anchored" and h["receipt"] is not None
            assert h["anchoredAt"] == h["receipt"]["blockTimestamp"]
            assert h["anchoredAt"] != h["signed"]["record"]["eventTime"]
            assert verify_receipt(h["signed"], h["receipt"], service.chain).ok
            offline = verify_receipt_offline(h["signed"], h["receipt"], log_key=log_key)
            assert offline.ok, offline.to_json()
            signed = SignedRecord.model_validate(h["signed"])
            role = Role.OEM if signed.record.subject == oem.org else Role.SUPPLIER
            steps.append(
                (NotificationPayload.model_validate(signed.payload), signed.record.subject, role)
            )
        origin = [replayed[item["originId"]]] if item["originId"] else []
        replayed[item["notificationId"]] = replay(reversed(steps), origin_chain=origin)
        assert replayed[item["notificationId"]].state == "closed"
    assert body["acknowledgementSeconds"] is not None and body["acknowledgementSeconds"] >= 0

    # Inboxes per party: the OEM sent QN-1, SUP-01 received QN-1 and sent QN-1-F1, SUP-02
    # received QN-1-F1 only and cannot read its origin; an auditor reads every thread.
    def box(party: Party, which: str = "all") -> list[tuple[str, str]]:
        got = service.client.get(
            "/v1/notifications", params={"box": which}, headers=service.login(party)
        )
        assert got.status_code == 200, got.text
        return [(n["notificationId"], n["direction"]) for n in got.json()["notifications"]]

    assert box(oem) == [("QN-1", "sent")]
    assert sorted(box(sup)) == [("QN-1", "received"), ("QN-1-F1", "sent")]
    assert box(sup, "received") == [("QN-1", "received")]
    assert box(sub) == [("QN-1-F1", "received")]
    sub_auth = service.login(sub)
    hidden = service.client.get("/v1/notifications/QN-1", headers=sub_auth)
    assert hidden.status_code == 404 and error_code(hidden) == "notification_not_found"
    own = service.client.get("/v1/notifications/QN-1-F1", headers=sub_auth).json()
    assert own["origin"] is None  # the OEM's terms stay with the OEM and its tier 1
    assert (
        service.client.get("/v1/notifications/QN-1-F1", headers=service.login(sup)).json()[
            "origin"
        ]["notificationId"]
        == "QN-1"
    )
    assert (
        service.client.get("/v1/notifications/QN-1", headers=service.login(auditor)).status_code
        == 200
    )
    assert service.client.get("/v1/notifications").status_code == 401


def test_each_step_only_by_its_party(service: Service) -> None:
    oem, sup, sub, _ = _parties(service)
    names = {"sender": oem.org, "recipient": sup.org}
    _ok(service, _sign(service, oem, "created", "QN-2", **names))
    # The recipient signs the sender's "sent".
    _refused(service, _sign(service, sup, "sent", "QN-2", **names), 409, "notification_wrong_party")
    _ok(service, _sign(service, oem, "sent", "QN-2", **names))
    # The sender signs the recipient's "received"; a third party receives it.
    _refused(
        service, _sign(service, oem, "received", "QN-2", **names), 409, "notification_wrong_party"
    )
    _refused(
        service, _sign(service, sub, "received", "QN-2", **names), 409, "notification_wrong_party"
    )
    _ok(service, _sign(service, sup, "received", "QN-2", **names))
    # A third party acknowledges in the recipient's place.
    problem = _refused(
        service,
        _sign(service, sub, "acknowledged", "QN-2", **names),
        409,
        "notification_wrong_party",
    )
    assert (problem["expected"], problem["got"]) == (sup.org, sub.org)
    # A key of one organisation signing with another organisation as its subject.
    _refused(
        service,
        _sign(service, sub, "acknowledged", "QN-2", subject=sup.org, **names),
        403,
        "subject_mismatch",
    )
    _ok(service, _sign(service, sup, "acknowledged", "QN-2", **names))
    # The supplier closes its customer's investigation (in the state where closing is next).
    _ok(service, _sign(service, sup, "accepted", "QN-2", **names))
    _refused(
        service, _sign(service, sup, "closed", "QN-2", **names), 409, "notification_wrong_party"
    )
    _ok(service, _sign(service, oem, "closed", "QN-2", **names))
    # Nothing follows closed: accepting or declining after it.
    problem = _refused(
        service, _sign(service, sup, "accepted", "QN-2", **names), 409, "notification_wrong_state"
    )
    assert problem["expected"] == [] and problem["got"] == "accepted"
    _refused(
        service,
        _sign(service, sup, "declined", "QN-2", reason="late", **names),
        409,
        "notification_wrong_state",
    )
    Anchorer(service.ctx).run_once(force=True)
    history = service.client.get("/v1/notifications/QN-2", headers=service.login(oem)).json()[
        "history"
    ]
    # Only the rightful steps were stored, each once.
    assert [(h["transition"], h["signerOrg"]) for h in history] == [
        ("created", oem.org), ("sent", oem.org), ("received", sup.org),
        ("acknowledged", sup.org), ("accepted", sup.org), ("closed", oem.org),
    ]  # fmt: skip


def test_out_of_order_replayed_and_mismatched_steps(service: Service) -> None:
    oem, sup, _, _ = _parties(service)
    names = {"sender": oem.org, "recipient": sup.org}
    # A step of a notification that was never created.
    _refused(service, _sign(service, oem, "sent", "QN-GHOST", **names), 409, "notification_unknown")
    created = _sign(service, oem, "created", "QN-3", **names)
    _ok(service, created)
    # Skipping ahead: accepted before sent/received/acknowledged.
    problem = _refused(
        service, _sign(service, sup, "accepted", "QN-3", **names), 409, "notification_wrong_state"
    )
    assert problem["expected"] == ["sent"]
    # The same signed record again is the same record (idempotent), not a second step.
    again = _post(service, created)
    assert again.status_code == 202 and again.json()["duplicate"] is True
    # A fresh signature of "created" for an existing id (a second thread under one name).
    _refused(service, _sign(service, oem, "created", "QN-3", **names), 409, "notification_exists")
    _ok(service, _sign(service, oem, "sent", "QN-3", **names))
    # A re-signed step already taken (a replay with a new nonce).
    _refused(service, _sign(service, oem, "sent", "QN-3", **names), 409, "notification_wrong_state")
    # The right party, but naming another recipient or another type than the thread's.
    _refused(
        service,
        _sign(service, sup, "received", "QN-3", sender=oem.org, recipient="SUP-09"),
        409,
        "notification_mismatch",
    )
    _refused(
        service,
        _sign(service, sup, "received", "QN-3", type="alert", **names),
        409,
        "notification_mismatch",
    )
    # A decline without its reason is no valid record at all.
    _ok(service, _sign(service, sup, "received", "QN-3", **names))
    _ok(service, _sign(service, sup, "acknowledged", "QN-3", **names))
    bare = _sign(service, sup, "declined", "QN-3", reason="x", **names).model_dump(mode="json")
    bare["payload"]["reason"] = "   "
    answer = service.client.post("/v1/records", json=bare)
    assert answer.status_code == 422 and error_code(answer) == "invalid_record"
    decline = _sign(
        service,
        sup,
        "declined",
        "QN-3",
        reason="not our lot: date code predates the change",
        **names,
    )
    _ok(service, decline)
    Anchorer(service.ctx).run_once(force=True)
    thread = service.client.get("/v1/notifications/QN-3", headers=service.login(sup)).json()
    assert thread["state"] == "declined" and thread["history"][-1]["reason"].startswith(
        "not our lot"
    )


def test_forwarding_only_what_one_received(service: Service) -> None:
    oem, sup, sub, _ = _parties(service)
    fwd = {"sender": sup.org, "recipient": sub.org}
    oem_names = {"sender": oem.org, "recipient": sup.org}
    _ok(service, _sign(service, oem, "created", "QN-4", **oem_names))
    _ok(service, _sign(service, oem, "sent", "QN-4", **oem_names))
    # Forwarding before it was received.
    _refused(
        service,
        _sign(service, sup, "created", "QN-4-F", originId="QN-4", **fwd),
        409,
        "notification_origin_state",
    )
    _ok(service, _sign(service, sup, "received", "QN-4", **oem_names))
    # A forged origin link: a notification that does not exist.
    _refused(
        service,
        _sign(service, sup, "created", "QN-4-F", originId="QN-NOWHERE", **fwd),
        409,
        "notification_origin_unknown",
    )
    # Someone else's notification: SUP-02 never received QN-4.
    problem = _refused(
        service,
        _sign(
            service, sub, "created", "QN-4-X", originId="QN-4", sender=sub.org, recipient=sup.org
        ),
        409,
        "notification_forward_not_recipient",
    )
    assert (problem["expected"], problem["got"]) == (sup.org, sub.org)
    # Back to the origin's sender (a loop), or under another type than its origin.
    _refused(
        service,
        _sign(
            service, sup, "created", "QN-4-L", originId="QN-4", sender=sup.org, recipient=oem.org
        ),
        409,
        "notification_wrong_role",  # an investigation goes to a supplier; the OEM is none
    )
    _refused(
        service,
        _sign(service, sup, "created", "QN-4-T", originId="QN-4", type="alert", **fwd),
        409,
        "notification_mismatch",
    )
    _ok(service, _sign(service, sup, "created", "QN-4-F", originId="QN-4", **fwd))
    _ok(service, _sign(service, sup, "sent", "QN-4-F", **fwd))
    _ok(service, _sign(service, sub, "received", "QN-4-F", **fwd))
    # Tier 2 forwarding back up to tier 1: already in the chain.
    _refused(
        service,
        _sign(
            service,
            sub,
            "created",
            "QN-4-F-F",
            originId="QN-4-F",
            sender=sub.org,
            recipient=sup.org,
        ),
        409,
        "notification_forward_loop",
    )


def test_roles_recipients_and_one_batch_in_order(service: Service) -> None:
    oem, sup, sub, auditor = _parties(service)
    # An OEM raising an alert; an investigation to an OEM; to an organisation nobody registered.
    _refused(
        service,
        _sign(service, oem, "created", "QA-1", type="alert", sender=oem.org, recipient=sup.org),
        409,
        "notification_wrong_role",
    )
    _refused(
        service,
        _sign(service, sup, "created", "QN-5", sender=sup.org, recipient=oem.org),
        409,
        "notification_wrong_role",
    )
    _refused(
        service,
        _sign(service, oem, "created", "QN-5", sender=oem.org, recipient="SUP-404"),
        409,
        "notification_recipient_unknown",
    )
    # An auditor's key signs no notification at all.
    _refused(
        service,
        _sign(service, auditor, "created", "QN-5", sender=auditor.org, recipient=sup.org),
        403,
        "kind_not_allowed",
    )
    # An alert goes up: SUP-02 warns its customer SUP-01. In one batch, steps are checked in
    # order, and the second of two conflicting answers is refused.
    up = {"type": "alert", "sender": sub.org, "recipient": sup.org}
    records = [
        _sign(service, sub, "created", "QA-2", **up),
        _sign(service, sub, "sent", "QA-2", **up),
        _sign(service, sup, "received", "QA-2", **up),
        _sign(service, sup, "acknowledged", "QA-2", **up),
        _sign(service, sup, "accepted", "QA-2", **up),
        _sign(service, sup, "declined", "QA-2", reason="changed my mind", **up),
    ]
    answer = service.client.post(
        "/v1/records:batch", json={"records": [r.model_dump(mode="json") for r in records]}
    )
    assert answer.status_code == 207, answer.text
    results = answer.json()["results"]
    assert [r["status"] for r in results] == ["accepted"] * 5 + ["rejected"]
    assert results[5]["error"]["code"] == "notification_wrong_state"
    Anchorer(service.ctx).run_once(force=True)
    state = service.client.get("/v1/notifications/QA-2", headers=service.login(sub)).json()["state"]
    assert state == "accepted"


def test_deadlines_are_judged_on_chain_time(service: Service) -> None:
    oem, sup, _, _ = _parties(service)
    now = int(time.time())
    _open(service, "QN-LATE", deadline=now - 60)
    _open(service, "QN-SOON", deadline=now + 86_400)
    Anchorer(service.ctx).run_once(force=True)
    inbox = service.client.get(
        "/v1/notifications", params={"box": "received"}, headers=service.login(sup)
    ).json()["notifications"]
    overdue = {n["notificationId"]: n["overdue"] for n in inbox}
    assert overdue == {"QN-LATE": True, "QN-SOON": False}
    # Answering after the deadline leaves it flagged: the answer's anchoring time is late.
    names = {"sender": oem.org, "recipient": sup.org}
    _ok(service, _sign(service, sup, "accepted", "QN-LATE", **names))
    Anchorer(service.ctx).run_once(force=True)
    late = service.client.get("/v1/notifications/QN-LATE", headers=service.login(oem)).json()
    assert late["answered"] and late["overdue"]
    assert late["answerSeconds"] is not None and late["answerSeconds"] >= 0
    bad = service.client.get("/v1/notifications", params={"limit": 0}, headers=service.login(oem))
    assert bad.status_code == 422
    bad_id = service.client.get("/v1/notifications/..%2Fetc", headers=service.login(oem))
    assert bad_id.status_code in (404, 422)


def _race(svc: Service, records: list[dict[str, Any]]) -> list[Any]:
    """Each record submitted by its own thread, all released at once, each its own transaction."""
    outcomes: list[Any] = [None] * len(records)
    start = threading.Barrier(len(records))

    def submit(i: int) -> None:
        start.wait()
        outcomes[i] = submit_many(svc.ctx, [records[i]])[0]

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(len(records))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return outcomes


def test_racing_answers_cannot_both_pass(service: Service) -> None:
    """Accept and decline signed at once and stored by two transactions in parallel: the
    thread's (notification, seq) key makes the later one re-check against the earlier one."""
    oem, sup, _, _ = _parties(service)
    names = {"sender": oem.org, "recipient": sup.org}
    for round_ in range(3):
        nid = f"QN-RACE-{round_}"
        _open(service, nid)
        answers = [
            _sign(service, sup, "accepted", nid, **names).model_dump(mode="json"),
            _sign(service, sup, "declined", nid, reason="not ours", **names).model_dump(
                mode="json"
            ),
        ]
        outcomes = _race(service, answers)
        statuses = sorted(o.status for o in outcomes)
        assert statuses == ["accepted", "rejected"], [o.to_json() for o in outcomes]
        loser = next(o for o in outcomes if o.status == "rejected")
        assert loser.error.code == "notification_wrong_state"
