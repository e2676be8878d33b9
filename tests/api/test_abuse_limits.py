"""Abuse limits (issue 18 item 5), played as the abuser: a sign-in flood from one address and
against one account, a key flooding intake, a forger trying to spend someone else's allowance,
a flood of challenges for made-up addresses, a cross-site page posting to /ui, and every kind
of /ui response checked for its security headers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, select

from api.auth import personal_sign_digest
from api.main import create_app
from api.ratelimit import AbuseLimits, TokenBuckets
from api.store.models import AuthChallenge
from api.ui import SECURITY_HEADERS
from api.ui.routes import COOKIE
from ledger.keys import Signer
from tests.api.conftest import Party, Service, make_service
from tests.helpers import error_code

SAME_ORIGIN = "http://testserver"  # TestClient's base URL


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = make_service(tmp_path_factory.mktemp("abuse"), "sqlite")
    with svc.client:
        yield svc
    svc.ctx.engine.dispose()


def limits(service: Service, **overrides: float) -> AbuseLimits:
    """Fresh limiters for this test (the defaults are generous; tests set small ones)."""
    fresh = AbuseLimits(service.ctx.settings.model_copy(update=overrides))
    service.ctx.limits = fresh  # type: ignore[misc]  # replaces the cached_property's value
    return fresh


def client_from(service: Service, address: str) -> TestClient:
    return TestClient(service.client.app, client=(address, 40000))


def assert_rate_limited(response: object) -> int:
    assert response.status_code == 429, response.text  # type: ignore[attr-defined]
    assert error_code(response) == "rate_limited"
    retry_after = int(response.headers["Retry-After"])  # type: ignore[attr-defined]
    assert retry_after >= 1
    return retry_after


# -- token bucket ------------------------------------------------------------------------------


def test_token_bucket_refills_at_its_rate_and_forgets_least_recent_keys() -> None:
    now = [1000.0]
    buckets = TokenBuckets(per_second=2.0, burst=3, max_keys=2, clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == pytest.approx(0.5)  # one token comes back in 1/2 s
    now[0] += 0.5
    assert buckets.take("a") == 0.0 and buckets.take("a") > 0
    buckets.charge("a", 4)  # debt: the next token is 2.5 s away
    assert buckets.wait_for("a") == pytest.approx(2.5)
    buckets.take("b"), buckets.take("c")  # "a" is forgotten: at most 2 keys are remembered
    assert len(buckets._buckets) == 2 and "a" not in buckets._buckets
    assert TokenBuckets(per_second=0, burst=1).take("x", cost=10**9) == 0.0  # 0 disables


# -- sign-in ---------------------------------------------------------------------------------


def test_sign_in_flood_from_one_client_address_gets_429(service: Service) -> None:
    limits(service, auth_requests_per_minute_per_client=4, auth_requests_per_minute_per_account=0)
    attacker = client_from(service, "203.0.113.7")
    parties = list(service.parties.values())
    answers = [
        attacker.post("/v1/auth/challenge", json={"address": parties[i % 4].address})
        for i in range(6)
    ]
    assert [a.status_code for a in answers[:4]] == [200] * 4
    assert_rate_limited(answers[4])
    # token requests (signature guessing) spend the same allowance
    token = attacker.post(
        "/v1/auth/token",
        json={
            "address": parties[0].address,
            "nonce": answers[0].json()["nonce"],
            "signature": "0x" + "11" * 65,
        },
    )
    assert_rate_limited(token)
    # another client address is not affected, and the legitimate sign-in still works
    assert service.login(service.parties["oem"])["Authorization"].startswith("Bearer ")


def test_sign_in_flood_against_one_account_from_many_addresses_gets_429(service: Service) -> None:
    limits(service, auth_requests_per_minute_per_client=0, auth_requests_per_minute_per_account=3)
    victim = service.parties["auditor"]
    answers = [
        client_from(service, f"198.51.100.{i}").post(
            "/v1/auth/challenge", json={"address": victim.address.lower()}
        )
        for i in range(5)
    ]
    assert [a.status_code for a in answers[:3]] == [200] * 3
    retry_after = assert_rate_limited(answers[3])
    assert retry_after <= 60  # 3 a minute: one comes back within 20 s
    # other accounts still sign in
    assert service.login(service.parties["supplier2"])


def test_challenges_are_not_stored_for_unregistered_addresses(service: Service) -> None:
    limits(service, auth_requests_per_minute_per_client=0, auth_requests_per_minute_per_account=0)
    before = _challenge_rows(service)
    for _ in range(12):  # each made-up address costs a role lookup on chain
        answer = service.client.post(
            "/v1/auth/challenge", json={"address": Signer.generate().address}
        )
        assert answer.status_code == 403 and error_code(answer) == "signer_not_registered"
    assert _challenge_rows(service) <= before


def test_challenges_expire_are_purged_and_capped_per_account(service: Service) -> None:
    limits(service, auth_requests_per_minute_per_client=0, auth_requests_per_minute_per_account=0)
    party = service.parties["supplier"]
    with service.ctx.sessions() as s, s.begin():
        # Only this test's challenges for the party: an open one left by an earlier sign-in
        # can tie on expiry second with the ones issued below, and which tie stays is arbitrary.
        s.execute(delete(AuthChallenge).where(AuthChallenge.address == party.address))
        s.add_all(
            AuthChallenge(nonce=f"stale{i:04d}", address=party.address, message="m", expires_at=1)
            for i in range(200)
        )
    issued = [service.client.post("/v1/auth/challenge", json={"address": party.address}).json()]
    assert _challenge_rows(service, expired_only=True) == 0  # the stale ones are gone
    cap = service.ctx.settings.max_open_challenges_per_account
    for _ in range(3 * cap):
        answer = service.client.post("/v1/auth/challenge", json={"address": party.address})
        issued.append(answer.json())
    assert _challenge_rows(service, address=party.address) == cap
    # challenges dropped to keep the cap (the oldest by expiry) cannot be used any more
    with service.ctx.sessions() as s:
        kept = set(s.execute(select(AuthChallenge.nonce)).scalars())
    dropped = [c for c in issued if c["nonce"] not in kept]
    assert len(dropped) == len(issued) - cap
    signature = party.signer.sign_digest(personal_sign_digest(dropped[0]["message"]))
    late = service.client.post(
        "/v1/auth/token",
        json={"address": party.address, "nonce": dropped[0]["nonce"], "signature": signature},
    )
    assert late.status_code == 401 and error_code(late) == "unknown_challenge"
    assert service.login(party)  # a fresh one works


def _challenge_rows(
    service: Service, *, address: str | None = None, expired_only: bool = False
) -> int:
    query = select(func.count()).select_from(AuthChallenge)
    if address is not None:
        query = query.where(AuthChallenge.address == address)
    if expired_only:
        query = query.where(AuthChallenge.expires_at < 1_000_000)
    with service.ctx.sessions() as s:
        return int(s.execute(query).scalar_one())


# -- intake ----------------------------------------------------------------------------------


def _submit(service: Service, record: object) -> object:
    return service.client.post("/v1/records", json=record.model_dump(mode="json"))  # type: ignore[attr-defined]


def test_intake_flood_from_one_key_gets_429_and_others_go_on(service: Service) -> None:
    limits(service, intake_records_per_second_per_key=0.01, intake_burst_per_key=3)
    supplier, other = service.parties["supplier"], service.parties["supplier2"]
    accepted = [service.inspection(supplier) for _ in range(3)]
    assert [_submit(service, r).status_code for r in accepted] == [202] * 3  # type: ignore[attr-defined]
    assert_rate_limited(_submit(service, service.inspection(supplier)))
    batch = service.client.post(
        "/v1/records:batch",
        json={"records": [service.inspection(supplier).model_dump(mode="json")]},
    )
    assert_rate_limited(batch)
    assert _submit(service, service.inspection(other)).status_code == 202  # type: ignore[attr-defined]


def test_forgers_and_replays_do_not_spend_a_keys_allowance(service: Service) -> None:
    limits(service, intake_records_per_second_per_key=0.01, intake_burst_per_key=3)
    victim, forger = (
        service.parties["oem"],
        Party(Signer.generate(), "OEM-01", service.parties["oem"].role),
    )
    genuine = service.inspection(service.parties["supplier2"])
    # forged records naming the victim as signer (signed by another key): all refused, free
    for _ in range(10):
        forged = service.inspection(forger).model_dump(mode="json")
        forged["record"]["signer"] = victim.address
        answer = service.client.post("/v1/records", json=forged)
        assert 400 <= answer.status_code < 500 and answer.status_code != 429, answer.text
    # a replayed record is a duplicate: free as well
    assert _submit(service, genuine).status_code == 202  # type: ignore[attr-defined]
    for _ in range(10):
        again = _submit(service, genuine)
        assert again.status_code == 202 and again.json()["duplicate"] is True  # type: ignore[attr-defined]
    supplier2 = service.parties["supplier2"]
    assert [_submit(service, service.inspection(supplier2)).status_code for _ in range(2)] == [
        202,
        202,
    ]  # type: ignore[attr-defined]
    assert_rate_limited(_submit(service, service.inspection(supplier2)))


# -- /ui: CSRF and security headers --------------------------------------------------------------


def _browser(service: Service, party: Party, origin: str = SAME_ORIGIN) -> TestClient:
    """A browser signed in to the dashboard (cookie set through /ui/session)."""
    client = TestClient(service.client.app, follow_redirects=False, headers={"Origin": origin})
    token = service.login(party)["Authorization"].split()[1]
    assert client.post("/ui/session", json={"accessToken": token}).status_code == 200
    return client


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "http://testserver.evil.example"},
        {"Origin": "null"},
        {"Referer": "https://evil.example/page"},
        {},  # neither Origin nor Referer
    ],
    ids=["foreign-origin", "look-alike-origin", "null-origin", "foreign-referer", "none"],
)
def test_cross_site_logout_is_refused_and_the_session_survives(
    service: Service, headers: dict[str, str]
) -> None:
    limits(service)
    browser = _browser(service, service.parties["oem"])
    cookie = browser.cookies.get(COOKIE)
    assert cookie
    attacker_page = TestClient(service.client.app, follow_redirects=False, cookies={COOKIE: cookie})
    attacker_page.headers.pop("Origin", None)
    refused = attacker_page.post("/ui/logout", headers=headers)
    assert refused.status_code == 403 and error_code(refused) == "cross_site_request"
    for name, value in SECURITY_HEADERS.items():
        assert refused.headers[name] == value
    assert browser.get("/ui/suppliers").status_code == 200  # still signed in
    token_session = attacker_page.post("/ui/session", json={"accessToken": cookie}, headers=headers)
    assert token_session.status_code == 403


def test_same_origin_logout_and_referer_fallback_work(service: Service) -> None:
    limits(service)
    browser = _browser(service, service.parties["oem"])
    browser.headers.pop("Origin")
    out = browser.post("/ui/logout", headers={"Referer": SAME_ORIGIN + "/ui/suppliers"})
    assert out.status_code == 303 and out.headers["location"] == "/ui/login?reason=signed_out"
    assert browser.get("/ui/suppliers").status_code == 303  # signed out


def test_public_url_is_the_origin_behind_a_proxy(service: Service) -> None:
    limits(service)
    proxied = service.ctx.settings.model_copy(update={"public_url": "https://ledger.example.com/"})
    app = create_app(settings=proxied, ctx=service.ctx)
    as_proxied = TestClient(app, follow_redirects=False)
    direct = as_proxied.post("/ui/logout", headers={"Origin": SAME_ORIGIN})
    assert direct.status_code == 403
    ok = as_proxied.post("/ui/logout", headers={"Origin": "https://ledger.example.com"})
    assert ok.status_code == 303


def test_every_ui_response_has_the_security_headers(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    limits(service)
    browser = _browser(service, service.parties["oem"])
    anonymous = TestClient(
        service.client.app, follow_redirects=False, raise_server_exceptions=False
    )
    responses = {
        "page": browser.get("/ui/suppliers"),
        "login page": anonymous.get("/ui/login"),
        "redirect to login": anonymous.get("/ui/suppliers"),
        "home redirect": browser.get("/ui/"),
        "error page 404": browser.get("/ui/records/0x" + "ab" * 32),
        "error page 422": browser.get("/ui/suppliers?window_days=7"),
        "unknown path": browser.get("/ui/no-such-page"),
        "wrong method": browser.put("/ui/login"),
        "session json": browser.post("/ui/session", json={"accessToken": "x" * 40}),
        "static file": browser.get("/ui/static/ui.css"),
    }
    # a fault inside a page: the 500 must carry the headers too
    import api.ui.routes as pages

    def broken(*_: object, **__: object) -> object:
        raise RuntimeError("injected fault")

    monkeypatch.setattr(pages.data, "ranking", broken)
    crashed = TestClient(service.client.app, follow_redirects=False, raise_server_exceptions=False)
    crashed.cookies.set(COOKIE, browser.cookies.get(COOKIE) or "")
    responses["server error"] = crashed.get("/ui/suppliers")
    for what, response in responses.items():
        for name, value in SECURITY_HEADERS.items():
            if what == "static file" and name == "Cache-Control":
                assert response.headers[name].startswith("public"), what
                continue
            assert response.headers.get(name) == value, (what, response.status_code, name)
    assert responses["server error"].status_code == 500
    assert responses["redirect to login"].status_code == 303
    # the API is not /ui: its JSON keeps its own headers
    assert "Content-Security-Policy" not in service.client.get("/healthz").headers
