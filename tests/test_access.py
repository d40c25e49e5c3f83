"""Who may make each request: every route of the app has a rule in the one table (cancel_flow/web/access.py),
and each role's requests on every coach page and API route are let through or refused as that table says;
a refused request is a 403 (a page, or JSON on the API) and changes nothing."""

import re
import secrets

import pytest
import sqlalchemy as sa
from starlette.routing import Route

from cancel_flow.models import SQLModel
from cancel_flow.passwords import hash_password
from cancel_flow.store.api_keys import SCOPES, ApiKeyStore
from cancel_flow.store.coaches import CoachStore
from cancel_flow.web.access import (EDITOR, OWNER, ROUTES, VIEWER, RouteWithoutRule, allows, guard_routes, methods_of,
                                    rule_for, unlisted)
from tests.helpers import csrf_of

PASSWORD = "correct horse battery"
ROLES = (VIEWER, EDITOR, OWNER)
SAMPLE_PARAMS = {"token": "not-a-real-token", "delivery_id": "1", "experiment_id": "none", "endpoint_id": "ep_00000000",
                 "hook_id": "ep_00000000", "number": "1",
                 "offer_id": "pause", "action": "disable", "kind": "payment_failed"}


def concrete(path: str) -> str:
    """A path template with sample values in place of its parameters."""
    return re.sub(r"{(\w+)(:\w+)?}", lambda found: SAMPLE_PARAMS[found.group(1)], path)


def requests_of(app, kind: str):
    """(method, template, rule) of each route of the app whose rule is of this kind."""
    for route in app.routes:
        for method in methods_of(route):
            rule = rule_for(method, route.path)
            if rule.kind == kind:
                yield method, route.path, rule


def sign_in(client, email: str, password: str = PASSWORD):
    page = client.get("/dashboard/login")
    response = client.post("/dashboard/login", data={"csrf_token": csrf_of(page.text), "email": email, "password": password})
    assert response.status_code == 303, response.text
    return client


def snapshot(engine) -> dict:
    """Every row of every table (an API key's last use aside): what 'nothing changed' is checked against."""
    tables = {}
    with engine.connect() as connection:
        for table in SQLModel.metadata.sorted_tables:
            columns = [column for column in table.c if column.name != "last_used_at"]
            tables[table.name] = sorted(tuple(map(str, row)) for row in connection.execute(sa.select(*columns)))
    return tables


@pytest.fixture
def team(store, make_client):
    """A signed-in browser for each role, and one signed in nowhere."""
    coaches = CoachStore(store.engine)
    browsers = {}
    for role in ROLES:
        coaches.add(f"{role}@example.com", hash_password(PASSWORD), role)
        browsers[role] = sign_in(make_client(raise_server_exceptions=False), f"{role}@example.com")
    browsers[None] = make_client(raise_server_exceptions=False)
    return browsers


def test_every_route_of_the_app_has_a_rule(client):
    assert unlisted(client.app.routes) == []
    for route in client.app.routes:
        for method in methods_of(route):
            assert rule_for(method, route.path) is not None


def test_a_route_added_without_a_rule_stops_the_app_from_being_built(client):
    async def page(request):
        raise AssertionError("never reached")

    routes = [Route("/dashboard/brand-new-page", page, methods=["GET", "POST"]), Route("/api/brand-new", page, methods=["PUT"])]
    with pytest.raises(RouteWithoutRule) as refused:
        guard_routes(routes)
    assert "GET /dashboard/brand-new-page" in str(refused.value) and "POST /dashboard/brand-new-page" in str(refused.value)
    assert "PUT /api/brand-new" in str(refused.value) and "cancel_flow/web/access.py" in str(refused.value)


def test_the_table_gives_each_role_what_the_product_promises():
    assert rule_for("GET", "/dashboard").role == VIEWER and rule_for("GET", "/dashboard/export.csv").role == VIEWER
    assert rule_for("HEAD", "/dashboard").role == VIEWER
    for path in ("/dashboard/team", "/dashboard/stripe", "/dashboard/audit"):
        assert rule_for("GET", path).role == OWNER
    for method, path in (("POST", "/dashboard/team/invite"), ("POST", "/dashboard/stripe/setup"),
                         ("POST", "/dashboard/stripe/check"), ("POST", "/dashboard/integrations/keys"),
                         ("POST", "/dashboard/integrations/webhooks")):
        assert rule_for(method, path).role == OWNER
    # the settings: everyone signed in sees them, editors change them (any page of them); the preview is for everyone
    assert rule_for("POST", "/dashboard/settings/offers").role == EDITOR
    assert rule_for("POST", "/dashboard/settings/some-page-added-later").role == EDITOR
    assert rule_for("GET", "/dashboard/settings/brand").role == VIEWER
    for path in ("/dashboard/settings/winback", "/dashboard/settings/compliance"):
        assert ("GET", path) in ROUTES and ("POST", path) in ROUTES  # listed in the table itself
        assert rule_for("GET", path).role == VIEWER and rule_for("POST", path).role == EDITOR
    assert rule_for("GET", "/dashboard/preview").role == VIEWER
    assert rule_for("POST", "/api/links").scope == "links" and rule_for("GET", "/api/stats").scope == "stats"
    assert not allows(VIEWER, EDITOR) and allows(OWNER, EDITOR) and not allows(None, VIEWER) and not allows("root", VIEWER)


def test_each_role_may_make_exactly_the_requests_the_table_allows_and_a_refusal_changes_nothing(team, store):
    checked = 0
    for method, template, rule in requests_of(team[None].app, "coach"):
        path = concrete(template)
        for role, browser in team.items():
            before = snapshot(store.engine) if method != "GET" and not allows(role, rule.role) else None
            response = browser.request(method, path, data={"email": "new@example.com", "role": "owner",
                                                           "name": "key", "url": "https://example.com/hook"})
            where = f"{role} {method} {path}"
            if role is None:
                assert response.status_code == 303 and response.headers["location"] == "/dashboard/login", where
            elif allows(role, rule.role):
                assert response.status_code != 403, where
                assert not (response.status_code == 303 and response.headers["location"] == "/dashboard/login"), where
                assert response.status_code < 500, (where, response.status_code)
            else:
                assert response.status_code == 403, (where, response.status_code)
                assert "Not for your role" in response.text and f"needs an <strong>{rule.role}" in response.text, where
                assert "Nothing was changed" in response.text
                if before is not None:
                    assert snapshot(store.engine) == before, where
            checked += 1
    assert checked >= 4 * 24


def test_a_signed_in_coach_sees_only_the_pages_their_role_opens_in_the_navigation(team):
    viewer_page = team[VIEWER].get("/dashboard").text
    owner_page = team[OWNER].get("/dashboard").text
    assert 'href="/dashboard/deliveries"' in viewer_page and 'href="/dashboard/deliveries"' in owner_page
    for path in ("/dashboard/team", "/dashboard/stripe", "/dashboard/audit"):
        assert f'href="{path}"' not in viewer_page


@pytest.fixture
def keys(store):
    """A key per scope, holding only it, and one holding every scope."""
    made = {}
    store_ = ApiKeyStore(store.engine)
    for scope in (*SCOPES, "all"):
        key = "cfk_" + secrets.token_urlsafe(32)
        store_.add(f"only-{scope}", key, SCOPES if scope == "all" else (scope,))
        made[scope] = key
    return made


def test_each_api_route_answers_a_key_by_its_scopes_and_a_refusal_is_json_and_changes_nothing(client, keys, store):
    checked = 0
    for method, template, rule in requests_of(client.app, "api"):
        path = concrete(template)
        for holds, key in keys.items():
            before = snapshot(store.engine)
            response = client.request(method, path, headers={"Authorization": f"Bearer {key}"}, json={})
            where = f"{holds} {method} {path}"
            if rule.scope is None or holds in (rule.scope, "all"):
                assert response.status_code not in (401, 403), (where, response.text)
            else:
                assert response.status_code == 403, where
                error = response.json()["error"]
                assert error["code"] == "forbidden" and f"'{rule.scope}' scope" in error["message"], where
                assert snapshot(store.engine) == before, where
            checked += 1
        anonymous = client.request(method, path, json={})
        assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "unauthorized"
    assert checked >= 5 * 5


def test_public_routes_need_no_sign_in(client):
    for method, template, _ in requests_of(client.app, "public"):
        if template == "/static":
            continue
        response = client.request(method, concrete(template))
        assert response.status_code not in (401, 403), (method, template)
        assert response.headers.get("location") != "/dashboard/login" or template == "/dashboard/first-owner"


def test_a_key_made_without_scopes_holds_the_default_set(client, store):
    key = "cfk_" + secrets.token_urlsafe(32)
    ApiKeyStore(store.engine).add("plain", key)
    auth = {"Authorization": f"Bearer {key}"}
    assert client.get("/api/stats", headers=auth).status_code == 200
    assert client.get("/api/hooks/sample?event=session.saved", headers=auth).status_code == 200
    assert ApiKeyStore(store.engine).check(key).scopes == {"links", "stats", "hooks"}


# --- the command line ---------------------------------------------------------------------------------

@pytest.fixture
def cli_env(monkeypatch, database_url):
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("CANCEL_FLOW_ENV", "development")


def test_coach_add_takes_a_role_and_coach_remove_never_removes_the_last_owner(cli_env, monkeypatch, store, capsys):
    from tests.helpers import run_cli

    assert run_cli(["coach", "add", "first@example.com", "--password-stdin"], monkeypatch, PASSWORD + "\n") == 0
    assert run_cli(["coach", "add", "reader@example.com", "--role", "viewer", "--password-stdin"], monkeypatch,
                   PASSWORD + "\n") == 0
    assert "(viewer)" in capsys.readouterr().out
    assert run_cli(["coach", "add", "x@example.com", "--role", "admin", "--password-stdin"], monkeypatch, PASSWORD + "\n") == 2
    roles = {row.email: row.role for row in CoachStore(store.engine).all()}
    assert roles == {"first@example.com": "owner", "reader@example.com": "viewer"}
    capsys.readouterr()
    assert run_cli(["coach", "remove", "first@example.com"], monkeypatch) == 1
    assert "last owner" in capsys.readouterr().err
    assert CoachStore(store.engine).find("first@example.com") is not None
    assert run_cli(["coach", "remove", "reader@example.com"], monkeypatch) == 0
    assert run_cli(["coach", "add", "second@example.com", "--password-stdin"], monkeypatch, PASSWORD + "\n") == 0
    assert run_cli(["coach", "remove", "first@example.com"], monkeypatch) == 0
    assert [row.email for row in CoachStore(store.engine).all()] == ["second@example.com"]


def test_api_key_create_takes_scopes_and_lists_them(cli_env, monkeypatch, client, capsys):
    from tests.helpers import run_cli

    assert run_cli(["api-key", "create", "reader", "--scope", "stats"], monkeypatch) == 0
    key = capsys.readouterr().out.strip()
    assert client.get("/api/stats", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert client.post("/api/links", headers={"Authorization": f"Bearer {key}"}, json={"customer": "cus_x"}).status_code == 403
    assert run_cli(["api-key", "create", "both", "--scope", "links,hooks", "--scope", "config"], monkeypatch) == 0
    assert run_cli(["api-key", "create", "bad", "--scope", "admin"], monkeypatch) == 2
    assert "Unknown scope 'admin'" in capsys.readouterr().err
    assert run_cli(["api-key", "list"], monkeypatch) == 0
    listed = capsys.readouterr().out
    assert "reader\tcfk_" in listed and "\tstats\t" in listed and "\tlinks,hooks,config\t" in listed


def test_logins_made_before_roles_become_owners(tmp_path):
    from alembic import command

    from cancel_flow.store import alembic_config, make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    config = alembic_config(engine)
    command.upgrade(config, "0010")
    with engine.begin() as connection:
        connection.execute(sa.text("INSERT INTO coach (email, password_hash, created_at, session_generation) "
                                   "VALUES ('old@example.com', 'x', '2026-01-01 00:00:00', 7)"))
        connection.execute(sa.text("INSERT INTO api_key (name, key_hash, prefix, created_at) "
                                   "VALUES ('app', 'h', 'cfk_', '2026-01-01 00:00:00')"))
    command.upgrade(config, "head")
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT role FROM coach")).scalar() == "owner"
        assert connection.execute(sa.text("SELECT scopes FROM api_key")).scalar() == "links stats hooks"
    engine.dispose()


def test_a_viewer_reads_the_settings_greyed_out_and_an_editor_saves_them(team):
    viewer_page = team[VIEWER].get("/dashboard/settings/alerts")
    assert viewer_page.status_code == 200 and "<fieldset disabled" in viewer_page.text
    assert "Save alerts" not in viewer_page.text
    editor_page = team[EDITOR].get("/dashboard/settings/alerts")
    assert "Save alerts" in editor_page.text and "<fieldset disabled" not in editor_page.text
    refused = team[VIEWER].post("/dashboard/settings/alerts", data={"csrf_token": csrf_of(editor_page.text)})
    assert refused.status_code == 403 and "needs an <strong>editor" in refused.text
