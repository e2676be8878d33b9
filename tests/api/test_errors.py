"""Every error is an RFC 9457 problem with a stable code, and its status is the error's own:
a chain that is gone answers 503 with Retry-After (never 400), a record for another domain
answers WrongDomain's code, a broken database row answers a 500 without internals, and the
dashboard keeps HTML error pages with the right statuses."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import event, text, update

from api.anchorer import Anchorer
from api.context import ServiceContext
from api.errors import PROBLEM_MEDIA_TYPE, from_typed
from api.main import create_app
from api.store.models import Batch
from api.ui.routes import COOKIE
from client.service import error_of
from credit.score import AdditivityError
from ledger.chain import ChainClient
from ledger.chain.local import dev_private_keys, start_anvil
from ledger.errors import ChainError, ChainUnavailable, TransactionReverted, WrongDomain
from ledger.records import Domain, Role
from ledger.signing import sign_record
from tests.api.conftest import Service, make_service
from tests.helpers import error_code, inspection_payload

PROBLEM_MEMBERS = {"type", "title", "status", "detail", "code"}


def assert_problem(response: Any, status: int, code: str) -> dict[str, Any]:
    """The response is a problem+json of this status and code, with every RFC 9457 member."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == PROBLEM_MEDIA_TYPE
    body = response.json()
    assert body.keys() >= PROBLEM_MEMBERS, body
    assert body["status"] == status and body["code"] == code == error_code(response)
    assert body["type"] == f"https://qledger.dev/problems/{code}"
    assert isinstance(body["title"], str) and body["title"]
    return body


@pytest.fixture
def sqlite_service(tmp_path: Path) -> Iterator[Service]:
    svc = make_service(tmp_path, "sqlite")
    with svc.client:
        yield svc
    svc.ctx.engine.dispose()


@pytest.fixture
def chain_gone(sqlite_service: Service, tmp_path: Path) -> Iterator[tuple[Service, TestClient]]:
    """A service like ``sqlite_service`` (its own data dir: a data dir serves one deployment,
    whose log key names it) on a real anvil node that then goes away."""
    try:
        node = start_anvil(tmp_path / "anvil")
    except ChainError as exc:
        pytest.skip(f"anvil is not available: {exc}")
    try:
        chain = ChainClient.connect(node.rpc_url, private_key=dev_private_keys()[0], timeout=2)
        chain.deploy()
        for name, role in (("supplier", Role.SUPPLIER), ("oem", Role.OEM)):
            party = sqlite_service.parties[name]
            chain.register_participant(party.address, role, party.org)
        old = sqlite_service.ctx.settings
        settings = old.model_copy(
            update={
                "data_dir": tmp_path / "gone",
                "database_url": f"sqlite:///{tmp_path / 'gone.db'}",
                # tokens signed in on sqlite_service stay valid here
                "token_secret": SecretStr(old.token_secret_value),
            }
        )
        ctx = ServiceContext.create(settings, chain=chain)  # its role mirror catches up now
    finally:
        node.stop()  # the node is gone: every later call is refused
    with TestClient(create_app(ctx=ctx)) as client:
        yield sqlite_service, client
    ctx.engine.dispose()


# -- the client's mistakes ---------------------------------------------------------------------


def test_a_rejected_record_is_a_problem_with_expected_and_got(sqlite_service: Service) -> None:
    supplier = sqlite_service.parties["supplier"]
    data = sqlite_service.inspection(supplier).model_dump(mode="json")
    data["record"]["lotId"] = "LOT-OTHER"  # changed after signing
    body = assert_problem(
        sqlite_service.client.post("/v1/records", json=data), 401, "invalid_signature"
    )
    assert body["expected"] == supplier.address and body["got"] != supplier.address


def test_a_record_for_another_domain_answers_wrong_domains_code(sqlite_service: Service) -> None:
    supplier = sqlite_service.parties["supplier"]
    here = sqlite_service.ctx.domain
    # A look-alike deployment: the same contract address on another chain.
    elsewhere = Domain(chainId=here.chainId + 1, verifyingContract=here.verifyingContract)
    signed = sign_record(
        supplier.signer,
        elsewhere,
        subject=supplier.org,
        kind="inspection",
        part_number="P-100",
        lot_id="LOT-1",
        event_time=1_700_000_000,
        quantity=50,
        defects=1,
        nonce=supplier.next_nonce(),
        payload=inspection_payload(),
    )
    answer = sqlite_service.client.post("/v1/records", json=signed.model_dump(mode="json"))
    body = assert_problem(answer, WrongDomain.http_status, WrongDomain.code)
    assert body["expected"]["chainId"] == here.chainId
    assert body["got"]["chainId"] == here.chainId + 1


def test_unknown_route_wrong_method_and_invalid_bodies_are_problems(
    sqlite_service: Service,
) -> None:
    client = sqlite_service.client
    assert_problem(client.get("/v1/no-such-thing"), 404, "not_found")
    wrong_method = assert_problem(client.get("/v1/records:batch"), 405, "method_not_allowed")
    assert wrong_method["detail"]
    assert "POST" in client.get("/v1/records:batch").headers["allow"]
    invalid = assert_problem(
        client.post("/v1/auth/challenge", json={"address": 12}), 422, "invalid_request"
    )
    assert invalid["errors"] and invalid["errors"][0]["loc"] == ["body", "address"]
    malformed = client.post(
        "/v1/auth/challenge", content=b'{"address": ', headers={"content-type": "application/json"}
    )
    assert_problem(malformed, 400, "malformed_json")
    assert_problem(client.get("/v1/records"), 401, "not_authenticated")


# -- the service's own failures ----------------------------------------------------------------


@pytest.mark.anvil
def test_chain_gone_answers_503_with_retry_after_never_400(
    chain_gone: tuple[Service, TestClient],
) -> None:
    _, client = chain_gone
    started = time.monotonic()
    answer = client.get("/v1/checkpoint")
    assert time.monotonic() - started < 5
    body = assert_problem(answer, 503, "chain_unavailable")
    assert answer.headers["retry-after"] == str(ChainUnavailable.retry_after_seconds)
    # The endpoint's URL (which can carry a provider's API key) is not shown.
    assert "127.0.0.1" not in answer.text and "expected" not in body


@pytest.mark.anvil
def test_chain_gone_the_dashboard_still_serves_from_the_store(
    chain_gone: tuple[Service, TestClient],
) -> None:
    # Roles come from the store's mirror of the chain's events (api/roles.py), so signing in and
    # reading pages do not wait on, or fail with, a node that is gone.
    service, client = chain_gone
    oem = service.parties["oem"]
    token = service.login(oem)["Authorization"].removeprefix("Bearer ")
    client.cookies.set(COOKIE, token, path="/ui")
    started = time.monotonic()
    page = client.get("/ui/suppliers", follow_redirects=False)
    assert time.monotonic() - started < 5
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")


def test_a_corrupt_row_answers_a_500_problem_without_internals(sqlite_service: Service) -> None:
    supplier = sqlite_service.parties["supplier"]
    signed = sqlite_service.inspection(supplier)
    struct_hash = sqlite_service.client.post(
        "/v1/records", json=signed.model_dump(mode="json")
    ).json()["structHash"]
    Anchorer(sqlite_service.ctx).run_once(force=True)
    # The fault: the stored batch lost its on-chain id (a damaged database, a bad restore).
    with sqlite_service.ctx.sessions() as s, s.begin():
        s.execute(update(Batch).values(chain_batch_id=None))
    raw = TestClient(sqlite_service.client.app, raise_server_exceptions=False)
    answer = raw.get(f"/v1/records/{struct_hash}/receipt", headers=sqlite_service.login(supplier))
    body = assert_problem(answer, 500, "internal_error")
    assert set(body) == PROBLEM_MEMBERS
    for internal in ("Assertion", "Traceback", ".py", "chain_batch_id"):
        assert internal not in answer.text


def test_a_full_database_answers_503_database_full(sqlite_service: Service) -> None:
    """SQLite's SQLITE_FULL for real: the database may not grow past its current pages."""
    engine = sqlite_service.ctx.engine
    with engine.connect() as conn:
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar()

    @event.listens_for(engine, "connect")
    def _no_room(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_conn.execute(f"PRAGMA max_page_count = {pages}")

    engine.dispose()  # every connection from now on has no room to grow
    supplier = sqlite_service.parties["supplier"]
    answers = []
    for _ in range(40):  # each record's payload takes most of a page; a few fill any slack
        signed = sqlite_service.inspection(supplier)
        answers.append(
            sqlite_service.client.post("/v1/records", json=signed.model_dump(mode="json"))
        )
        if answers[-1].status_code != 202:
            break
    full = answers[-1]
    assert_problem(full, 503, "database_full")
    assert int(full.headers["retry-after"]) > 0
    assert "sqlite" not in full.text.lower() and "INSERT" not in full.text
    event.remove(engine, "connect", _no_room)
    engine.dispose()
    with engine.connect() as conn:  # the refused record was not half-stored
        count = conn.execute(text("SELECT count(*) FROM records")).scalar()
    assert count == sum(a.status_code == 202 for a in answers)


# -- each error class carries its status -------------------------------------------------------


def test_typed_errors_map_by_their_own_class_attributes() -> None:
    unavailable = from_typed(ChainUnavailable("rpc http://user:key@node.example/v3/SECRET down"))
    assert (unavailable.status, unavailable.code) == (503, "chain_unavailable")
    assert unavailable.headers["Retry-After"] == "5"
    assert "SECRET" not in unavailable.message
    failed = from_typed(ChainError("node refused: http://node.example/v3/SECRET"))
    assert (failed.status, failed.code) == (502, "chain_error")
    assert "SECRET" not in failed.message and "Retry-After" not in failed.headers
    reverted = from_typed(TransactionReverted("registerParticipant reverted: OrgMismatch()"))
    assert reverted.status == 502 and "OrgMismatch" in reverted.message
    false_explanation = from_typed(AdditivityError("additivity violated: 1 != 2"))
    assert (false_explanation.status, false_explanation.code) == (500, "additivity_violated")
    problem = false_explanation.problem()
    assert problem["type"].endswith("/additivity_violated") and problem["status"] == 500


# -- the OpenAPI document ----------------------------------------------------------------------


def test_openapi_lists_problem_responses_for_every_route(sqlite_service: Service) -> None:
    spec = sqlite_service.client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    assert "Problem" in schemas and "HTTPValidationError" not in schemas
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            errors = {s: r for s, r in operation["responses"].items() if s[0] in "45"}
            assert "500" in errors and "503" in errors, (method, path)
            for status, response in errors.items():
                content = response["content"]
                assert list(content) == [PROBLEM_MEDIA_TYPE], (method, path, status)
                assert content[PROBLEM_MEDIA_TYPE]["schema"]["$ref"].endswith("/Problem")
            # A route a client can get wrong (parameters, a body, a token) lists its 4xx; a
            # public route with nothing to send (the checkpoint, the log's key) has none.
            takes_input = (
                operation.get("parameters")
                or "requestBody" in operation
                or operation.get("security")
            )
            if path.startswith("/v1/") and takes_input:
                assert any(s.startswith("4") for s in errors), (method, path)
    submit = spec["paths"]["/v1/records"]["post"]["responses"]
    assert {"400", "401", "403", "409", "413", "422"} <= submit.keys()
    receipt = spec["paths"]["/v1/records/{struct_hash}/receipt"]["get"]["responses"]
    assert {"401", "403", "404"} <= receipt.keys()


def test_openapi_names_the_schema_of_every_answer(sqlite_service: Service) -> None:
    """Issue 18 item 3: no 2xx answer is published as a bare object. JSON (and JSON-LD)
    answers name a documented model; text and images say which; only 204 has no content."""
    spec = sqlite_service.client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if not status.startswith("2"):
                    continue
                content = response.get("content", {})
                assert content or status == "204", (method, path, status)
                for media_type, body in content.items():
                    schema = body.get("schema", {})
                    where = (method, path, status, media_type)
                    if media_type.endswith("json"):
                        name = schema.get("$ref", "").removeprefix("#/components/schemas/")
                        assert schemas.get(name, {}).get("properties"), where
                    else:
                        assert schema.get("type") == "string", where
    waterfall = spec["paths"]["/v1/suppliers/{supplier_id}/credit/waterfall.png"]["get"]
    assert list(waterfall["responses"]["200"]["content"]) == ["image/png"]
    for path in ("/v1/records/{struct_hash}/epcis", "/v1/epcis/events"):
        answer = spec["paths"][path]["get"]["responses"]["200"]["content"]
        assert list(answer) == ["application/ld+json"], path
        assert answer["application/ld+json"]["schema"]["$ref"].endswith("/EpcisDocument")


# -- consumers ---------------------------------------------------------------------------------


def test_the_client_reads_problems_into_service_errors(sqlite_service: Service) -> None:
    supplier = sqlite_service.parties["supplier"]
    data = sqlite_service.inspection(supplier).model_dump(mode="json")
    data["record"]["lotId"] = "LOT-OTHER"
    error = error_of(sqlite_service.client.post("/v1/records", json=data))
    assert (error.status, error.code) == (401, "invalid_signature")
    assert error.expected == supplier.address
    assert str(error).startswith("401 invalid_signature: signature does not match")
    assert error.retry_after is None
    missing = error_of(sqlite_service.client.get("/v1/no-such-thing"))
    assert (missing.status, missing.code) == (404, "not_found")


@pytest.mark.anvil
def test_the_client_keeps_retry_after(chain_gone: tuple[Service, TestClient]) -> None:
    _, client = chain_gone
    error = error_of(client.get("/v1/checkpoint"))
    assert (error.status, error.code, error.retry_after) == (503, "chain_unavailable", 5.0)
