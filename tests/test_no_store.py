"""Pages with personal data (a subscriber's plan and links, a coach's figures and exports) are never kept by a
browser or a proxy: every one of them answers `Cache-Control: no-store`."""

from starlette.routing import Route

from cancel_flow.emails.tokens import unsubscribe_token
from cancel_flow.passwords import hash_password
from cancel_flow.store.coaches import CoachStore
from tests.helpers import csrf_of

PERSONAL = ("/dashboard", "/cancel/", "/billing/", "/emails/")
PASSWORD = "correct horse battery"


def test_every_page_with_personal_data_answers_no_store(make_client, catalogue, signer, settings, store):
    client = make_client()
    sub = catalogue.subscription()
    cancel, _ = signer.cancel_token(sub.customer, sub.id)
    billing, _ = signer.billing_token(sub.customer)
    unsubscribe = unsubscribe_token(settings.secret_key, sub.customer, "renewal_reminder")
    CoachStore(store.engine).add("coach@example.com", hash_password(PASSWORD))
    # each page as its visitor sees it: (address, status)
    pages = {
        "/cancel/{token}": (f"/cancel/{cancel}", 200),
        "/cancel/{token}/done": (f"/cancel/{cancel}/done", None),
        "/billing/{token}": (f"/billing/{billing}", 303),
        "/billing/{token}/updated": (f"/billing/{billing}/updated", 200),
        "/emails/unsubscribe/{token}": (f"/emails/unsubscribe/{unsubscribe}", 200),
        "/dashboard/login": ("/dashboard/login", 200),
        "/dashboard": ("/dashboard", 200),
        "/dashboard/export.csv": ("/dashboard/export.csv", 200),
        "/dashboard/charts/weekly.svg": ("/dashboard/charts/weekly.svg", 200),
        "/dashboard/charts/reasons.svg": ("/dashboard/charts/reasons.svg", 200),
        "/dashboard/deliveries": ("/dashboard/deliveries", 200),
        "/dashboard/experiments": ("/dashboard/experiments", 200),
        "/dashboard/experiments/{experiment_id}": ("/dashboard/experiments/no-such-experiment", 404),
        "/dashboard/team": ("/dashboard/team", 200),
        "/dashboard/audit": ("/dashboard/audit", 200),
        "/dashboard/audit.csv": ("/dashboard/audit.csv", 200),
        "/dashboard/integrations": ("/dashboard/integrations", 200),
        "/dashboard/integrations/links.csv": ("/dashboard/integrations/links.csv", 200),
        "/dashboard/stripe": ("/dashboard/stripe", 200),
        "/dashboard/password-reset": ("/dashboard/password-reset", 200),
        "/dashboard/password-reset/{token}": ("/dashboard/password-reset/not-a-token", 410),
        "/dashboard/invite/{token}": ("/dashboard/invite/not-a-token", 410),
        "/dashboard/sessions": ("/dashboard/sessions", 200),
        "/dashboard/offers": ("/dashboard/offers", 200),
        "/dashboard/reasons": ("/dashboard/reasons", 200),
        "/dashboard/payments": ("/dashboard/payments", 200),
        "/dashboard/attention": ("/dashboard/attention", 200),
        "/dashboard/settings": ("/dashboard/settings", 200),
        "/dashboard/settings/brand": ("/dashboard/settings/brand", 200),
        "/dashboard/settings/offers": ("/dashboard/settings/offers", 200),
        "/dashboard/settings/offers/new": ("/dashboard/settings/offers/new?kind=pause", 200),
        "/dashboard/settings/offers/edit/{offer_id}": ("/dashboard/settings/offers/edit/pause", 200),
        "/dashboard/settings/experiments": ("/dashboard/settings/experiments", 200),
        "/dashboard/settings/emails": ("/dashboard/settings/emails", 200),
        "/dashboard/settings/emails/preview/{kind}": ("/dashboard/settings/emails/preview/payment_failed", 200),
        "/dashboard/settings/alerts": ("/dashboard/settings/alerts", 200),
        "/dashboard/settings/winback": ("/dashboard/settings/winback", 200),
        "/dashboard/settings/compliance": ("/dashboard/settings/compliance", 200),
        "/dashboard/settings/history": ("/dashboard/settings/history", 200),
        "/dashboard/preview": ("/dashboard/preview", 200),
        "/cancel/{token}/withdraw": (f"/cancel/{cancel}/withdraw", 409),  # a customer with no address in the EU
        "/dashboard/compliance": ("/dashboard/compliance", 200),
        "/dashboard/compliance.csv": ("/dashboard/compliance.csv", 200),
    }
    served = {route.path for route in client.app.routes
              if isinstance(route, Route) and "GET" in (route.methods or ()) and route.path.startswith(PERSONAL)}
    assert served == set(pages), "a page was added or removed: list it here"

    assert client.get("/dashboard").status_code == 303  # not signed in yet: the way to the login page
    assert client.get("/dashboard").headers["cache-control"] == "no-store"
    login = client.get("/dashboard/login")
    assert login.headers["cache-control"] == "no-store"
    assert client.post("/dashboard/login", data={"csrf_token": csrf_of(login.text), "email": "coach@example.com",
                                                 "password": PASSWORD}).status_code == 303
    pages["/dashboard/login"] = ("/dashboard/login", 303)  # signed in: on to the dashboard
    for template, (path, status) in pages.items():
        for method in ("GET", "HEAD"):
            response = client.request(method, path)
            assert status is None or response.status_code == status, (method, template, response.status_code)
            assert response.headers["cache-control"] == "no-store", (method, template)
    # error pages about a link say no-store too; files without personal data keep being cached
    assert client.get("/cancel/not-a-token").headers["cache-control"] == "no-store"
    assert client.get("/billing/not-a-token").headers["cache-control"] == "no-store"
    assert "cache-control" not in client.get("/static/app.css").headers
    assert client.get("/brand.css").headers["cache-control"] == "public, max-age=300"
