"""/dashboard/integrations: the shared link for every role, a client's links for editors, API keys and outgoing
webhooks for owners, each change audited."""

import csv
import io
import re

import pytest
import sqlalchemy as sa
from standardwebhooks.webhooks import Webhook

from cancel_flow.models import AuditEntry, OutboxDelivery
from cancel_flow.outbox import Dispatcher
from cancel_flow.passwords import hash_password
from cancel_flow.store.coaches import CoachStore
from tests.helpers import csrf_of
from tests.test_outbox import receivers  # noqa: F401  (fixture)

PASSWORD = "correct horse battery"


def sign_in(client, email):
    page = client.get("/dashboard/login")
    assert client.post("/dashboard/login", data={"csrf_token": csrf_of(page.text), "email": email,
                                                 "password": PASSWORD}).status_code == 303
    return client


@pytest.fixture
def browsers(store, make_client):
    coaches = CoachStore(store.engine)
    made = {}
    for role in ("owner", "editor", "viewer"):
        coaches.add(f"{role}@example.com", hash_password(PASSWORD), role)
        made[role] = sign_in(make_client(allow_private_urls=True, client_address="198.51.100.20"), f"{role}@example.com")
    return made


def post(browser, path, data=None, **kwargs):
    page = browser.get("/dashboard/integrations")
    return browser.post(path, data={"csrf_token": csrf_of(page.text), **(data or {})}, **kwargs)


def audit(engine) -> list[tuple[str, str, str]]:
    table = AuditEntry.__table__
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(
            sa.select(table.c.actor, table.c.action, table.c.detail).order_by(table.c.id))]


def test_every_role_sees_the_shared_link_and_only_owners_see_keys_and_webhooks(browsers):
    for role, browser in browsers.items():
        page = browser.get("/dashboard/integrations")
        assert page.status_code == 200
        assert 'value="http://testserver/"' in page.text and 'data-copy="shared-link"' in page.text
        assert "Coach Catalyst" in page.text and "Kajabi" in page.text and "/api/links" in page.text
        assert ("Make a key" in page.text) == (role == "owner")
        assert ("Add a webhook" in page.text) == (role == "owner")
        assert ("Find their links" in page.text) == (role in ("owner", "editor"))
        assert 'href="/dashboard/integrations"' in page.text  # in the navigation


def test_an_owner_makes_a_key_shown_once_with_its_scopes_and_revokes_it(browsers, store):
    owner = browsers["owner"]
    made = post(owner, "/dashboard/integrations/keys", data={"name": "My app", "scope": ["links"]})
    assert made.status_code == 200 and "shown only this once" in made.text
    key = re.search(r'id="new-key" class="copy-source" type="text" readonly value="(cfk_[^"]+)"', made.text).group(1)
    listing = owner.get("/dashboard/integrations").text
    assert key not in listing and "My app" in listing and key[:10] in listing and ">never<" in listing
    auth = {"Authorization": f"Bearer {key}"}
    assert owner.post("/api/links", headers=auth, json={"customer": "cus_missing"}).status_code == 404
    assert owner.get("/api/stats", headers=auth).status_code == 403  # not among its scopes
    assert ">never<" not in owner.get("/dashboard/integrations").text
    assert post(owner, "/dashboard/integrations/keys", data={"name": "My app", "scope": ["stats"]}).status_code == 409
    assert post(owner, "/dashboard/integrations/keys", data={"name": "", "scope": ["stats"]}).status_code == 400
    assert post(owner, "/dashboard/integrations/keys", data={"name": "none"}).status_code == 400
    assert post(owner, "/dashboard/integrations/keys", data={"name": "x", "scope": ["admin"]}).status_code == 400
    revoked = post(owner, "/dashboard/integrations/keys/revoke", data={"name": "My app"})
    assert revoked.status_code == 303
    assert owner.post("/api/links", headers=auth, json={"customer": "cus_missing"}).status_code == 401
    assert post(owner, "/dashboard/integrations/keys/revoke", data={"name": "My app"}).status_code == 404
    assert audit(store.engine) == [("owner@example.com", "api_key.created", "'My app' with scopes links"),
                                   ("owner@example.com", "api_key.revoked", "'My app'")]


def deliver(client) -> int:
    dispatcher = Dispatcher(client.app.state.store.engine, client.app.state.settings)
    try:
        return dispatcher.run_due()
    finally:
        dispatcher.close()


def test_an_owner_adds_a_webhook_sends_a_test_event_sees_it_delivered_resends_and_removes_it(browsers, receivers, store):
    owner = browsers["owner"]
    receiver = receivers()
    added = post(owner, "/dashboard/integrations/webhooks", data={"url": receiver.url + "/in", "event": ["session.canceled"]})
    assert added.status_code == 200 and "shown only this once" in added.text
    secret = re.search(r'id="new-hook-secret" class="copy-source" type="text" readonly value="(whsec_[^"]+)"', added.text).group(1)
    endpoint_id = re.search(r"Webhook (ep_\w+) added", added.text).group(1)
    assert secret not in owner.get("/dashboard/integrations").text

    assert post(owner, f"/dashboard/integrations/webhooks/{endpoint_id}/test").headers["location"].endswith("done=tested#webhooks")
    assert deliver(owner) == 1
    [request] = receiver.requests
    payload = Webhook(secret).verify(request["body"], request["headers"])
    assert payload["type"] == "session.canceled" and payload["data"]["test"] is True
    page = owner.get("/dashboard/integrations").text
    assert "Delivered" in page and ">200" in page

    with store.engine.connect() as connection:
        delivery_id = connection.execute(sa.select(OutboxDelivery.__table__.c.id)).scalar()
    assert post(owner, f"/dashboard/deliveries/{delivery_id}/resend").status_code == 303
    deliver(owner)
    assert len(receiver.requests) == 2 and receiver.ids()[0] == receiver.ids()[1]

    assert post(owner, f"/dashboard/integrations/webhooks/{endpoint_id}/remove").status_code == 303
    assert "No webhooks yet." in owner.get("/dashboard/integrations").text
    every = post(owner, "/dashboard/integrations/webhooks", data={"url": receiver.url + "/all"})  # no event ticked: all
    every_id = re.search(r"Webhook (ep_\w+) added", every.text).group(1)
    assert "every event" in owner.get("/dashboard/integrations").text
    assert post(owner, f"/dashboard/integrations/webhooks/{every_id}/test").status_code == 303
    deliver(owner)
    assert receiver.requests[-1]["path"] == "/all"
    assert post(owner, f"/dashboard/integrations/webhooks/{every_id}/remove").status_code == 303
    assert post(owner, f"/dashboard/integrations/webhooks/{endpoint_id}/test").status_code == 404
    assert [action for _, action, _ in audit(store.engine)] == [
        "webhook_endpoint.added", "webhook_endpoint.test_sent", "webhook_delivery.resent", "webhook_endpoint.removed",
        "webhook_endpoint.added", "webhook_endpoint.test_sent", "webhook_endpoint.removed"]


def test_bad_webhooks_are_refused_with_a_reason_and_rest_hooks_are_listed(browsers, make_client, store, receivers):
    owner = browsers["owner"]
    refused = post(owner, "/dashboard/integrations/webhooks", data={"url": "ftp://example.com/x"})
    assert refused.status_code == 400 and "https://" in refused.text
    refused = post(owner, "/dashboard/integrations/webhooks", data={"url": "https://example.com/x", "event": ["nope"]})
    assert refused.status_code == 400 and "Unknown event" in refused.text
    public = make_client()  # private addresses refused
    sign_in(public, "owner@example.com")
    refused = post(public, "/dashboard/integrations/webhooks", data={"url": "http://127.0.0.1:9/x"})
    assert refused.status_code == 400
    made = post(owner, "/dashboard/integrations/keys", data={"name": "zapier", "scope": ["hooks"]})
    key = re.search(r'value="(cfk_[^"]+)"', made.text).group(1)
    owner.post("/api/hooks", headers={"Authorization": f"Bearer {key}"},
               json={"target_url": receivers().url + "/catch/1", "event": "session.saved"})
    assert "REST hook (Zapier or Make)" in owner.get("/dashboard/integrations").text


def test_an_editor_finds_a_clients_links_and_downloads_everybodys(browsers, catalogue, store):
    sub = catalogue.subscription(catalogue.customer(email="casey@example.com", name="Casey"))
    editor = browsers["editor"]
    found = post(editor, "/dashboard/integrations/links", data={"email": "casey@example.com"})
    assert found.status_code == 200 and sub.id in found.text
    cancel = re.search(r'value="http://testserver(/cancel/[^"]+)"', found.text).group(1)
    billing = re.search(r'value="http://testserver(/billing/[^"]+)"', found.text).group(1)
    assert editor.get(cancel).status_code == 200 and editor.get(billing).status_code == 303
    missing = post(editor, "/dashboard/integrations/links", data={"email": "nobody@example.com"})
    assert missing.status_code == 200 and "No customer with nobody@example.com has an active subscription" in missing.text
    assert post(editor, "/dashboard/integrations/links", data={"email": "not an email"}).status_code == 400

    exported = editor.get("/dashboard/integrations/links.csv?days=30")
    assert exported.status_code == 200 and "attachment" in exported.headers["content-disposition"]
    lines = list(csv.reader(io.StringIO(exported.text.lstrip("\ufeff"))))
    assert lines[0][:4] == ["email", "name", "billing_link", "cancel_link"]
    assert [line[0] for line in lines[1:]] == ["casey@example.com"] and lines[1][6] == sub.id
    assert editor.get(lines[1][3].removeprefix("http://testserver")).status_code == 200
    assert editor.get("/dashboard/integrations/links.csv?days=365").status_code == 400
    assert audit(store.engine) == []  # looking links up changes nothing
