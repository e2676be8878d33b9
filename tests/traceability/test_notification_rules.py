"""The notification record and its state machine, without a service: the shape rules a forger
or a careless integrator would break, every step only to its party in its state, forwarding
rules, the offline replay, and that notification evidence moves no credit score."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from credit.score import score_supplier
from ledger.errors import InvalidRecord
from ledger.evidence import item_from_signed
from ledger.keys import Signer
from ledger.records import (
    MAX_AFFECTED_PARTS,
    NOTIFICATION_TRANSITIONS,
    LotRef,
    NotificationPayload,
    RecordKind,
    Role,
    load_signed_record,
    parse_payload,
)
from ledger.signing import sign_record
from simulator.population import SIM_DOMAIN, Population
from traceability.notifications import (
    MAX_FORWARD_DEPTH,
    NEXT,
    NotificationError,
    Thread,
    affected_parts,
    check_transition,
    draft,
    replay,
)

PART = {"maker": "SUP-01", "partNumber": "ECU-7", "lotId": "L-1"}
T = 1_750_000_000


def _payload(transition: str, nid: str = "QN-1", **kw: Any) -> NotificationPayload:
    body: dict[str, Any] = {
        "notificationId": nid,
        "type": "investigation",
        "transition": transition,
        "sender": "OEM-01",
        "recipient": "SUP-01",
    }
    if transition == "created":
        body |= {"affectedParts": [PART], "severity": "major"}
    return NotificationPayload.model_validate({**body, **kw})


def _thread(state: str, **kw: Any) -> Thread:
    fields: dict[str, Any] = dict(
        notification_id="QN-1",
        type="investigation",
        sender="OEM-01",
        recipient="SUP-01",
        origin_id=None,
        state=state,
    )
    return Thread(**(fields | kw))


def _code(call: Callable[..., object], *args: Any, **kw: Any) -> str:
    with pytest.raises(NotificationError) as info:
        call(*args, **kw)
    return info.value.code


# -- the record -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ({"transition": "declined", "reason": ""}, "gives its reason"),
        ({"transition": "declined", "reason": "   "}, "gives its reason"),
        ({"transition": "created", "severity": "major"}, "at least one affected part"),
        ({"transition": "created", "affectedParts": [PART]}, "severity"),
        ({"transition": "created", "affectedParts": [PART, PART], "severity": "minor"}, "twice"),
        ({"transition": "sent", "affectedParts": [PART]}, "stated once"),
        ({"transition": "accepted", "originId": "QN-0"}, "stated once"),
        ({"transition": "acknowledged", "deadline": 0}, "stated once"),
        ({"transition": "sent", "recipient": "OEM-01"}, "same organisation"),
        ({"transition": "sent", "originId": "QN-1"}, "cannot forward itself"),
        ({"transition": "reopened"}, "transition"),
        ({"transition": "sent", "type": "recall"}, "type"),
        ({"transition": "sent", "notificationId": "../x"}, "pattern"),
        ({"transition": "sent", "colour": "red"}, "colour"),
        ({"transition": "sent", "reason": "x" * 2001}, "2000"),
        (
            {
                "transition": "created",
                "severity": "major",
                "affectedParts": [{**PART, "lotId": f"L-{i}"} for i in range(1001)],
            },
            "1000",
        ),
        (
            {
                "transition": "created",
                "severity": "major",
                "affectedParts": [PART],
                "scope": {"fromTime": 9, "toTime": 1},
            },
            "after toTime",
        ),
        (
            {"transition": "accepted", "links": {"correctiveActions": ["0x12"]}},
            "pattern",
        ),
    ],
)
def test_malformed_notifications_are_refused(body: dict[str, Any], why: str) -> None:
    base = {
        "notificationId": "QN-1",
        "type": "investigation",
        "sender": "OEM-01",
        "recipient": "SUP-01",
    }
    with pytest.raises(InvalidRecord, match=why):
        parse_payload(RecordKind.NOTIFICATION, {**base, **body})


def test_the_struct_names_the_thread_and_the_step() -> None:
    signer = Signer.generate()
    payload = _payload("created", deadline=T + 86_400)
    d = draft(payload, T)
    assert (d["subject"], d["lotId"], d["partNumber"], d["quantity"]) == (
        "OEM-01",
        "QN-1",
        "created",
        1,
    )

    def sign(**over: Any) -> Any:
        fields = {
            "subject": d["subject"],
            "kind": d["kind"],
            "part_number": d["partNumber"],
            "lot_id": d["lotId"],
            "event_time": T,
            "signed_at": T + 60,
            "quantity": d["quantity"],
            "defects": 0,
            "nonce": 1,
            "payload": d["payload"],
        }
        return sign_record(signer, SIM_DOMAIN, **(fields | over))

    signed = sign()
    assert load_signed_record(signed.model_dump(mode="json")) == signed
    # A struct that names another thread, another step or other counts than its payload.
    for over in ({"lot_id": "QN-2"}, {"part_number": "sent"}, {"quantity": 5}, {"defects": 1}):
        with pytest.raises(InvalidRecord, match="lotId = notificationId"):
            sign(**over)


def test_affected_parts_merge_a_file_and_a_scope_hook() -> None:
    other = {**PART, "lotId": "L-2"}
    merged = affected_parts([PART], scope=lambda: [LotRef.model_validate(other), PART])
    assert [p.lotId for p in merged] == ["L-1", "L-2"]  # each node once, in order
    many = [{**PART, "lotId": f"L-{i}"} for i in range(MAX_AFFECTED_PARTS + 1)]
    with pytest.raises(InvalidRecord, match="split it per partner"):
        affected_parts(many)


# -- the state machine ----------------------------------------------------------------------


def test_the_happy_path_and_nothing_after_closed() -> None:
    steps = [
        ("created", "OEM-01", Role.OEM),
        ("sent", "OEM-01", Role.OEM),
        ("received", "SUP-01", Role.SUPPLIER),
        ("acknowledged", "SUP-01", Role.SUPPLIER),
        ("declined", "SUP-01", Role.SUPPLIER),
        ("closed", "OEM-01", Role.OEM),
    ]
    thread = None
    for step, org, role in steps:
        extra = {"reason": "not ours"} if step == "declined" else {}
        thread = check_transition(
            thread,
            _payload(step, **extra),
            org,
            role,
            recipient_roles=frozenset({Role.SUPPLIER}),
        )
        assert thread.state == step
    assert thread is not None
    for step in NOTIFICATION_TRANSITIONS:
        extra = {"reason": "x"} if step == "declined" else {}
        org = "OEM-01" if step in ("created", "sent", "closed") else "SUP-01"
        assert _code(check_transition, thread, _payload(step, **extra), org, Role.OEM) in (
            "notification_wrong_state",
            "notification_exists",
        )


@pytest.mark.parametrize("state", [None, *NOTIFICATION_TRANSITIONS])
def test_every_step_from_every_state_by_every_party(state: str | None) -> None:
    """The whole table: a step is allowed exactly when it is next and its party signs it."""
    thread = None if state is None else _thread(state)
    for step in NOTIFICATION_TRANSITIONS:
        extra = {"reason": "x"} if step == "declined" else {}
        owner = "OEM-01" if step in ("created", "sent", "closed") else "SUP-01"
        for org in ("OEM-01", "SUP-01", "SUP-02"):
            role = Role.OEM if org == "OEM-01" else Role.SUPPLIER
            payload = _payload(step, **extra)
            if step in NEXT[state] and org == owner:
                moved = check_transition(
                    thread, payload, org, role, recipient_roles=frozenset({Role.SUPPLIER})
                )
                assert moved.state == step
                continue
            code = _code(check_transition, thread, payload, org, role)
            if step not in NEXT[state]:
                assert code in (
                    "notification_wrong_state",
                    "notification_exists",
                    "notification_unknown",
                )
            else:
                assert code == "notification_wrong_party"


def test_roles_and_recipients() -> None:
    suppliers = frozenset({Role.SUPPLIER})
    alert = _payload("created", type="alert", sender="SUP-01", recipient="OEM-01")
    assert (
        _code(lambda: check_transition(None, alert, "SUP-01", Role.OEM, recipient_roles=suppliers))
        == "notification_wrong_role"
    )
    ok = check_transition(
        None, alert, "SUP-01", Role.SUPPLIER, recipient_roles=frozenset({Role.OEM})
    )
    assert ok.type == "alert"
    inv = _payload("created")
    for roles, code in (
        (frozenset(), "notification_recipient_unknown"),
        (frozenset({Role.OEM}), "notification_wrong_role"),
        (frozenset({Role.AUDITOR}), "notification_wrong_role"),
    ):
        assert _code(check_transition, None, inv, "OEM-01", Role.OEM, recipient_roles=roles) == code


def test_forwarding_rules() -> None:
    origin = _thread("acknowledged")
    fwd = _payload("created", "QN-1-F", sender="SUP-01", recipient="SUP-02", originId="QN-1")

    def forward(
        payload: NotificationPayload = fwd,
        chain: tuple[Thread, ...] = (origin,),
        org: str = "SUP-01",
    ) -> Thread:
        return check_transition(None, payload, org, Role.SUPPLIER, origin_chain=chain)

    assert forward().depth == 1 and forward().origin_id == "QN-1"
    assert _code(lambda: forward(chain=())) == "notification_origin_unknown"
    other = replace(origin, notification_id="QN-9")
    assert _code(lambda: forward(chain=(other,))) == "notification_origin_unknown"
    for state in ("created", "sent", "declined", "closed"):
        assert _code(forward, chain=(replace(origin, state=state),)) == (
            "notification_origin_state"
        )
    not_mine = _payload("created", "QN-1-X", sender="SUP-02", recipient="SUP-03", originId="QN-1")
    assert _code(lambda: forward(not_mine, org="SUP-02")) == "notification_forward_not_recipient"
    back = _payload("created", "QN-1-B", sender="SUP-01", recipient="OEM-01", originId="QN-1")
    assert _code(lambda: forward(back)) == "notification_forward_loop"
    as_alert = _payload(
        "created", "QN-1-A", type="alert", sender="SUP-01", recipient="SUP-02", originId="QN-1"
    )
    assert _code(lambda: forward(as_alert)) == "notification_mismatch"
    deep = replace(origin, depth=MAX_FORWARD_DEPTH)
    assert _code(lambda: forward(chain=(deep,))) == "notification_forward_depth"


def test_replay_takes_the_only_order_the_rules_allow() -> None:
    steps = [
        (_payload("closed"), "OEM-01", Role.OEM),
        (_payload("created"), "OEM-01", Role.OEM),
        (_payload("accepted"), "SUP-01", Role.SUPPLIER),
        (_payload("received"), "SUP-01", Role.SUPPLIER),
        (_payload("sent"), "OEM-01", Role.OEM),
        (_payload("acknowledged"), "SUP-01", Role.SUPPLIER),
    ]
    assert replay(steps).state == "closed"
    # A history with the supplier's signature on the close does not replay.
    forged = [*steps[1:], (_payload("closed"), "SUP-01", Role.SUPPLIER)]
    assert _code(lambda: replay(forged)) == "notification_wrong_party"
    # Both answers in one history: the second is out of order.
    both = [*steps, (_payload("declined", reason="x"), "SUP-01", Role.SUPPLIER)]
    assert _code(lambda: replay(both)) == "notification_wrong_state"
    assert _code(lambda: replay([])) == "notification_unknown"


# -- credit -----------------------------------------------------------------------------------


def test_notifications_move_no_score(population: Population, fl: Callable[[str], float]) -> None:
    """A notification is a message, not a finding: a whole anchored thread about a supplier,
    even one linking its complaints, leaves its score and evidence root as they were."""
    pop = population
    sid = pop.suppliers[0].supplier_id
    before = score_supplier(pop.items, sid, pop.end, fl_participation=fl(sid))
    complaints = [i.struct_hash for i in pop.items if i.subject == sid and i.kind == "complaint"]
    signer = Signer.generate()
    thread = []
    for n, step in enumerate(("received", "acknowledged", "declined")):
        payload = _payload(
            step,
            recipient=sid,
            reason="not ours" if step == "declined" else "",
            links={"complaints": complaints[:3]},
        )
        signed = sign_record(
            signer,
            SIM_DOMAIN,
            subject=sid,
            kind="notification",
            part_number=step,
            lot_id="QN-1",
            event_time=pop.end - 3 * 86_400,
            signed_at=pop.end - 3 * 86_400,
            quantity=0,
            defects=0,
            nonce=10_000 + n,
            payload=draft(payload, 0)["payload"],
        )
        thread.append(
            item_from_signed(signed, "SUPPLIER", anchored=True, anchored_at=pop.end - 86_400)
        )
    after = score_supplier([*pop.items, *thread], sid, pop.end, fl_participation=fl(sid))
    assert after.model_dump() == before.model_dump()
