"""The JSON API: keys, minting links by customer or email, stats, and the OpenAPI document."""

import secrets
from datetime import datetime, timezone

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings

from schemathesis.specs.openapi.checks import positive_data_acceptance

from cancel_flow.store.api_keys import ApiKeyStore
from cancel_flow.store.stats import DateRange, StatsQueries
from cancel_flow.web.openapi import openapi_document


@pytest.fixture
def api_key(store):
    key = "cfk_" + secrets.token_urlsafe(32)
    ApiKeyStore(store.engine).add("app", key)
    return key


@pytest.fixture
def api(client, api_key):
    client.headers["Authorization"] = f"Bearer {api_key}"
    return client


@pytest.mark.parametrize("method, path", [("POST", "/api/links"), ("GET", "/api/stats"), ("GET", "/api/openapi.json")])
@pytest.mark.parametrize("header", [None, "Bearer nope", "Basic abc", "Bearer "])
def test_every_api_route_needs_a_valid_key(client, method, path, header):
    headers = {"Authorization": header} if header else {}
    response = client.request(method, path, headers=headers, json={"customer": "cus_x"})
    assert response.status_code == 401
    assert set(response.json()["error"]) == {"code", "message"}


def test_a_revoked_key_stops_working(api, store):
    assert api.get("/api/stats").status_code == 200
    ApiKeyStore(store.engine).revoke("app")
    assert api.get("/api/stats").status_code == 401


def test_links_by_customer_open_the_flow(api, catalogue, signer):
    sub = catalogue.subscription()
    response = api.post("/api/links", json={"customer": sub.customer})
    assert response.status_code == 201
    body = response.json()
    assert body["customer"] == sub.customer and body["subscription"] == sub.id
    assert datetime.fromisoformat(body["expires_at"]) > datetime.now(timezone.utc)
    assert api.get(body["cancel_url"].removeprefix("http://testserver")).status_code == 200
    assert api.get(body["billing_url"].removeprefix("http://testserver")).status_code == 303


def test_links_by_email_follow_stripes_portal_rule(api, catalogue, stripe_client):
    older_active = catalogue.customer(email="shared@example.com")
    catalogue.subscription(older_active)
    newer_canceled = catalogue.customer(email="shared@example.com")
    stripe_client.v1.subscriptions.cancel(catalogue.subscription(newer_canceled).id)
    newest_active = catalogue.customer(email="shared@example.com")
    newest_sub = catalogue.subscription(newest_active)
    body = api.post("/api/links", json={"email": "shared@example.com"}).json()
    assert body["customer"] == newest_active.id and body["subscription"] == newest_sub.id
    stripe_client.v1.subscriptions.cancel(newest_sub.id)
    assert api.post("/api/links", json={"email": "shared@example.com"}).json()["customer"] == older_active.id


def test_unknown_customer_or_no_active_subscription_is_404(api, catalogue):
    assert api.post("/api/links", json={"customer": "cus_doesnotexist"}).status_code == 404
    lonely = catalogue.customer(email="lonely@example.com")
    assert api.post("/api/links", json={"customer": lonely.id}).status_code == 404
    response = api.post("/api/links", json={"email": "lonely@example.com"})
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("body", [
    "not json", "[1, 2]", '{"customer": 5}', '{"customer": "cus_a", "email": "a@b.c"}', "{}",
    '{"customer": "cus_a", "coupon": "x"}', '{"email": "not-an-email"}', '{"customer": "sub_wrong"}',
])
def test_malformed_bodies_are_422(api, body):
    response = api.post("/api/links", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_body"


def test_several_subscriptions_need_one_named(api, catalogue):
    customer = catalogue.customer()
    first, second = catalogue.subscription(customer), catalogue.subscription(customer)
    response = api.post("/api/links", json={"customer": customer.id})
    assert response.status_code == 422 and first.id in response.json()["error"]["message"]
    assert api.post("/api/links", json={"customer": customer.id, "subscription": second.id}).json()["subscription"] == second.id


def test_stats_are_the_dashboards_numbers(api, store, history):
    day = datetime(2026, 11, 2, 10, tzinfo=timezone.utc)
    history(day, "saved_discount", reason="too_expensive", offers=["half"], chosen="half", percent=50, months=3, decided=day)
    history(day, "canceled", reason="unused", decided=day, canceled=day)
    body = api.get("/api/stats?from=2026-11-01&to=2026-11-30").json()
    expected = StatsQueries(store.engine).stats(DateRange(datetime(2026, 11, 1, tzinfo=timezone.utc), datetime(2026, 12, 1, tzinfo=timezone.utc)))
    assert body["sessions"] == expected.sessions == 2 and body["save_rate"] == 0.5
    assert body["mrr_saved"] == [{"currency": "usd", "amount": 4900}]
    assert body["reasons"] == expected.reasons
    assert api.get("/api/stats?from=2026-11-31").status_code == 422


def test_unknown_api_paths_answer_json(api):
    response = api.get("/api/nothing")
    assert response.status_code == 404 and "error" in response.json()


def test_api_matches_its_openapi_document(live_server, api_key, catalogue):
    """schemathesis: generated requests to every operation; no 5xx, and every answer fits the document."""
    catalogue.subscription()
    server = live_server()
    schema = schemathesis.openapi.from_dict(openapi_document(server.url))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} == {"/api/links", "/api/stats", "/api/openapi.json"}
    for operation in operations:
        @given(case=operation.as_strategy())
        @hypothesis_settings(max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def conforms(case):
            # A document cannot say "from <= to" or "that customer exists", so schema-valid requests
            # may rightly get 422/404; every other check (no 5xx, answers fit the document) applies.
            case.call_and_validate(base_url=server.url, headers={"Authorization": f"Bearer {api_key}"},
                                   excluded_checks=[positive_data_acceptance])

        conforms()
