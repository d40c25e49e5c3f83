"""The JSON API: keys, minting links by customer or email, stats, and the OpenAPI document."""

import secrets
from datetime import datetime, timezone

import httpx
import jsonschema_rs
import pytest
import schemathesis
from freezegun import freeze_time
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings

from schemathesis.specs.openapi.checks import positive_data_acceptance

from cancel_flow.store.api_keys import ApiKeyStore
from cancel_flow.store.stats import DateRange, StatsQueries


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


@pytest.mark.parametrize("body, says", [
    ("[" * 2000 + "]" * 2000, "nested too deeply"),
    ('{"customer": ' + "[" * 1000 + "]" * 1000 + "}", "nested too deeply"),
    ('{"customer": {"a": {"b": {"c": 1}}}}', "'customer' must be a customer (a Stripe id starting with cus_)"),
    ('{"customer": "cus_\u0661\u0662"}', "'customer' must be a customer"),
    (r'{"customer": "cus_\u0661\u0662"}', "'customer' must be a customer"),
    ('{"customer": null}', "'customer' must be"),
    (r'{"email": "a@b.c\u0000"}', "'email' must be an email address"),
    (r'{"customer": "cus_\ud800"}', "not valid JSON"),
    ('{"customer": "cus_a", "' + "x" * 3000 + '": 1}', "Unknown field '" + "x" * 40 + "'; allowed"),
    ('{"customer": "cus_a", "email": "a@b.c"}', "exactly one of 'customer' or 'email'"),
    ('{"customer": "cus_a"}' + " " * 5000, "at most 4096 bytes"),
])
def test_hostile_bodies_get_a_clear_422_not_a_500(api, body, says):
    response = api.post("/api/links", content=body.encode(), headers={"Content-Type": "application/json"})
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_body"
    assert says in response.json()["error"]["message"]
    assert "x" * 41 not in response.text


def test_the_document_refuses_exactly_the_bodies_the_route_refuses(api):
    """One description: for each body, the served schema and the route's validation agree."""
    document = api.get("/api/openapi.json").json()
    schema = {"$ref": "#/components/schemas/LinkRequest", "components": document["components"]}
    validator = jsonschema_rs.validator_for(schema)
    bodies = [{"customer": "cus_a"}, {"email": "a@b.c"}, {"customer": "cus_a", "subscription": "sub_b"},
              {"customer": 5}, {"customer": "cus_a", "email": "a@b.c"}, {}, {"customer": "cus_a", "coupon": "x"},
              {"email": "not-an-email"}, {"customer": "sub_wrong"}, {"customer": None}, {"subscription": "sub_b"},
              {"customer": "cus_a", "subscription": "cus_b"}, {"email": "a@b.c", "subscription": None}, [1], "cus_a"]
    for body in bodies:
        refused = api.post("/api/links", json=body).json().get("error", {}).get("code") == "invalid_body"
        assert validator.is_valid(body) is not refused, body


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


@freeze_time("2026-11-24 12:00:00")
@pytest.mark.parametrize("query, says", [
    ("from=2026-11-31", "not a day of the calendar"),
    ("from=9999-01-01&to=9999-12-31", "between 2000-01-01 and 2100-12-31"),
    ("to=9999-12-31", "between 2000-01-01 and 2100-12-31"),
    ("from=0001-01-01", "between 2000-01-01 and 2100-12-31"),
    ("from=1999-12-31&to=2000-01-10", "between 2000-01-01 and 2100-12-31"),
    ("from=2026-11-10&to=2026-11-01", "start date is after the end date"),
    ("from=2026-12-01", "start date is after the end date"),
    ("from=2000-01-01&to=2026-11-01", "at most ten years"),
    ("from=20261101", "like 2026-11-24"),
    ("from=2026-W47-1", "like 2026-11-24"),
    ("from=\uff12\uff10\uff12\uff16-11-01", "like 2026-11-24"),
    ("from=%00", "like 2026-11-24"),
])
def test_stats_refuse_dates_outside_a_sane_range(api, query, says):
    response = api.get("/api/stats?" + query.encode().decode("unicode_escape"))
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_query"
    assert says in response.json()["error"]["message"]


@freeze_time("2026-11-24 12:00:00")
def test_stats_default_to_the_30_days_ending_today_or_at_to(api):
    assert (api.get("/api/stats").json()["from"], api.get("/api/stats").json()["to"]) == ("2026-10-26", "2026-11-24")
    body = api.get("/api/stats?to=2025-03-01").json()
    assert (body["from"], body["to"]) == ("2025-01-31", "2025-03-01")
    body = api.get("/api/stats?from=2000-01-01&to=2009-12-31").json()
    assert body["from"] == "2000-01-01" and len(body["weekly"]) == 523


def test_unknown_api_paths_answer_json(api):
    response = api.get("/api/nothing")
    assert response.status_code == 404 and "error" in response.json()


def test_api_matches_its_openapi_document(live_server, store, catalogue):
    """schemathesis: generated requests to every operation; no 5xx, and every answer fits the document."""
    api_key = "cfk_" + secrets.token_urlsafe(32)
    ApiKeyStore(store.engine).add("everything", api_key, ("links", "stats", "hooks", "config"))
    catalogue.subscription()
    server = live_server()
    document = httpx.get(f"{server.url}/api/openapi.json", headers={"Authorization": f"Bearer {api_key}"}).json()
    schema = schemathesis.openapi.from_dict(document)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} == {"/api/links", "/api/stats", "/api/attention", "/api/openapi.json",
                                              "/api/hooks", "/api/hooks/{hook_id}", "/api/hooks/sample",
                                              "/api/config", "/api/config/versions",
                                              "/api/config/versions/{number}/restore"}
    for operation in operations:
        @given(case=operation.as_strategy())
        @hypothesis_settings(max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def conforms(case):
            # A document cannot say "from <= to" or "that customer exists", so schema-valid requests
            # may rightly get 422/404; every other check (no 5xx, answers fit the document) applies.
            case.call_and_validate(base_url=server.url, headers={"Authorization": f"Bearer {api_key}"},
                                   excluded_checks=[positive_data_acceptance])

        conforms()


def test_a_link_by_email_finds_the_customer_whatever_the_case(api, catalogue):
    """Stripe's email filter is case-sensitive; the subscriber types their address as they like."""
    sub = catalogue.subscription(catalogue.customer(email="sam@example.com"))
    response = api.post("/api/links", json={"email": "Sam@Example.COM"})
    assert response.status_code == 201, response.text
    assert response.json()["customer"] == sub.customer
